"""`igpt chat`: a terminal chat with a model, streaming its tokens, keeping the conversation, with /reset, /system and /quit.

At a terminal it shows a prompt and line editing; with piped input (``echo "Hi" | igpt chat --model M``) it reads one
message per line and prints one reply per line, so it can be scripted and tested. Notices (conversation reset, system
message set) are printed in parentheses. When the conversation outgrows the model's context, the oldest turns are
dropped (the system message stays).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, ClassVar

from ..config import StageConfig, field
from ..errors import UserError

HELP = "commands: /reset (forget the conversation), /system TEXT (set a system message), /quit"


@dataclasses.dataclass
class ChatConfig(StageConfig):
    """Type a message and press Enter; the reply streams as it is sampled."""

    stage: ClassVar[str] = "chat"

    model: str = field("", "model folder or hub id (empty: the last stage of --run: ppo-ptx, ppo, sft or pretrain)")
    run: str = field("", "run directory to take the model from when --model is not given")
    system: str = field("", "system message at the start of the conversation")
    max_new_tokens: int = field(128, "longest reply in tokens", ge=1)
    temperature: float = field(0.7, "sampling temperature (0 = greedy)", ge=0.0)
    top_p: float = field(0.95, "nucleus sampling mass", ge=0.0, le=1.0)
    top_k: int = field(0, "sample among the k most likely tokens (0 = all)", ge=0)
    seed: int = field(0, "random seed (each reply uses the next seed; -1 = random)", ge=-1)
    device: str = field("auto", "auto, cpu, cuda or cuda:N")


def _model_path(cfg: ChatConfig) -> str:
    if cfg.model:
        return cfg.model
    if cfg.run:
        from pathlib import Path

        from ..rundir import RUN_MODELS, finished_models

        newest = finished_models(Path(cfg.run), newest_first=True)
        if newest:
            return str(newest[0][1])
        names = ", ".join(m.folder for m in reversed(RUN_MODELS))
        raise UserError(f"--run: {cfg.run} holds no finished model ({names})")
    raise UserError("--model: give a model folder or hub id (or --run)")


def fit_context(tok: Any, messages: list[dict], budget: int) -> list[dict]:
    """Drop the oldest user/assistant exchanges (keeping a system message) until the prompt fits ``budget`` tokens."""
    from ..sampling import encode_prompt

    msgs = list(messages)
    head = msgs[:1] if msgs and msgs[0]["role"] == "system" else []
    while len(encode_prompt(tok, msgs)) > budget and len(msgs) > len(head) + 1:
        msgs = head + msgs[len(head) + 2 :]  # drop one exchange: user + assistant
    return msgs


def _piped_lines():
    """Lines of standard input when it is a file or a pipe, decoded here so that a line that is not UTF-8 is named."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # replaced by a text stream (tests, embedding)
        yield from (line.rstrip("\n") for line in sys.stdin)
        return
    for i, raw in enumerate(stream, 1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise UserError(f"standard input line {i}: not UTF-8 text (byte {e.start + 1} of the line)") from None


def run(cfg: ChatConfig) -> None:
    from ..models import resolve_device
    from ..sampling import load_model, stream_chat

    path = _model_path(cfg)
    model, tok = load_model(path, resolve_device(cfg.device))
    context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 4096
    budget = max(1, context - cfg.max_new_tokens)
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        print(f"chatting with {path}; {HELP}", flush=True)
    system = cfg.system
    history: list[dict] = []
    turn = 0
    lines = None if interactive else _piped_lines()
    while True:
        try:
            if lines is not None:
                line = next(lines)
            else:
                line = input("you> ")
                line.encode("utf-8")  # (bytes that are not UTF-8 arrive as lone surrogates under surrogateescape)
        except (EOFError, StopIteration, KeyboardInterrupt):
            if interactive:
                print()
            break
        except UnicodeError:
            print("(that line is not UTF-8 text: type it again)", flush=True)
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            history = []
            print("(conversation reset)", flush=True)
            continue
        if text == "/system" or text.startswith("/system "):
            system = text[len("/system"):].strip()
            history = []
            print(f"(system message set{': ' + system if system else ' to none'}; conversation reset)", flush=True)
            continue
        if text in ("/help", "/?"):
            print(f"({HELP})", flush=True)
            continue
        if text.startswith("/"):
            print(f"(unknown command {text.split()[0]}; {HELP})", flush=True)
            continue
        history.append({"role": "user", "content": line.rstrip("\n")})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        fitted = fit_context(tok, messages, budget)
        if len(fitted) < len(messages):
            print("(the oldest turns no longer fit the model's context and were dropped)", flush=True)
            history = fitted[1:] if system else fitted
            messages = fitted
        if interactive:
            print("model> ", end="", flush=True)
        seed = None if cfg.seed < 0 else cfg.seed + turn
        reply = []
        try:
            for piece in stream_chat(model, tok, messages, cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k, seed=seed):
                reply.append(piece)
                print(piece if interactive else piece.replace("\r", " ").replace("\n", " "), end="", flush=True)
        except KeyboardInterrupt:  # stop this reply, keep chatting
            pass
        print(flush=True)
        history.append({"role": "assistant", "content": "".join(reply)})
        turn += 1

"""`igpt chat`: a terminal chat with a model, streaming its tokens, keeping the conversation, with /reset, /system and /quit."""

from __future__ import annotations

import dataclasses
import sys
from typing import ClassVar

from ..config import StageConfig, field
from ..errors import UserError

HELP = "commands: /reset (forget the conversation), /system TEXT (set a system message), /quit"


@dataclasses.dataclass
class ChatConfig(StageConfig):
    """Type a message and press Enter; the reply streams as it is sampled."""

    stage: ClassVar[str] = "chat"

    model: str = field("", "model folder or hub id")
    system: str = field("", "system message at the start of the conversation")
    max_new_tokens: int = field(128, "longest reply in tokens")
    temperature: float = field(0.7, "sampling temperature (0 = greedy)")
    top_p: float = field(0.95, "nucleus sampling mass")
    top_k: int = field(0, "sample among the k most likely tokens (0 = all)")
    seed: int = field(0, "random seed (each reply uses the next seed)")
    device: str = field("auto", "auto, cpu, cuda or cuda:N")


def run(cfg: ChatConfig) -> None:
    from ..models import resolve_device
    from ..sampling import load_model, stream_chat

    if not cfg.model:
        raise UserError("--model: give a model folder or hub id")
    model, tok = load_model(cfg.model, resolve_device(cfg.device))
    interactive = sys.stdin.isatty()
    system = cfg.system
    history: list[dict] = []
    if interactive:
        print(f"chatting with {cfg.model}; {HELP}", flush=True)
    turn = 0
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            history = []
            print("(conversation reset)", flush=True)
            continue
        if text.startswith("/system"):
            system = text[len("/system"):].strip()
            history = []
            print(f"(system message set{': ' + system if system else ' to none'}; conversation reset)", flush=True)
            continue
        if text.startswith("/"):
            print(f"(unknown command {text.split()[0]}; {HELP})", flush=True)
            continue
        history.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        print("model> " if interactive else "", end="", flush=True)
        reply = []
        for piece in stream_chat(model, tok, messages, cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k, seed=cfg.seed + turn):
            reply.append(piece)
            print(piece, end="", flush=True)
        print(flush=True)
        history.append({"role": "assistant", "content": "".join(reply)})
        turn += 1

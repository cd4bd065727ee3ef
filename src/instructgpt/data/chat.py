"""Conversations: reading demonstration files, checking them, and rendering them to (token ids, loss mask).

``render`` is the one place that decides which tokens SFT learns from: it renders a conversation through the tokenizer's
chat template and marks exactly the assistant turns' tokens, each with the token(s) that close the turn (``<|end|>`` in
our template, ``<|im_end|>``, ``<|eot_id|>``, EOS ... in others), so the model learns to stop. The mask is computed from
the character offsets of the assistant contents in the rendered text, so it works for any template that copies the
content verbatim, and the ids are exactly ``apply_chat_template(messages, tokenize=True)``.

Demonstration formats (JSONL, one example per line; detected per line, or fixed with ``fmt``):

- chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`` (also ShareGPT's
  ``{"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}]}``)
- prompt/response: ``{"prompt": "...", "response": "..."}`` (``completion`` is accepted for ``response``; optional ``system``)
- Alpaca: ``{"instruction": "...", "input": "...", "output": "..."}`` (``input`` optional; appended to the instruction
  after a blank line)
- preference: a comparison in any shape ``data/preferences.py`` reads (TRL's and UltraFeedback's prompt/chosen/rejected,
  an HH dialogue pair, a ranked K-way line): its preferred response is the demonstration (SFT on HH's chosen dialogues)

A conversation has at most one system message (first), then user and assistant turns alternating, starting with a user
turn and ending with an assistant turn; contents are strings. Anything else is a one-line error naming file and line.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable

from ..errors import UserError

FORMATS = ("auto", "chat", "prompt_response", "alpaca", "preference")
ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
# tokens that close a turn in common chat templates; the one right after an assistant content joins the loss
END_OF_TURN = ("<|end|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eot|>")


# ---------------------------------------------------------------------------------------------- validation
def check_messages(messages: Any, where: str = "conversation", end: str | None = "assistant",
                   what: str = "messages") -> list[dict]:
    """Return the conversation as a list of ``{"role", "content"}`` or raise a one-line ``UserError`` prefixed by ``where``.

    ``end``: "assistant" for a demonstration (turns alternate user, assistant after an optional system message, and the
    last is the assistant's); "user" for a prompt (the same, ending with the user's turn); None to check only that each
    message has a known role and string content (a response given as messages). ``what``: the field, in messages."""
    if not isinstance(messages, list):
        raise UserError(f"{where}: '{what}' must be a list of {{\"role\", \"content\"}} objects")
    if not messages:
        raise UserError(f"{where}: '{what}' is an empty conversation")
    name = "message" if what == "messages" else f"'{what}' message"
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise UserError(f"{where}: {name} {i + 1} is not an object")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise UserError(f"{where}: {name} {i + 1} has role {role!r} (expected system, user or assistant)")
        if not isinstance(content, str):
            raise UserError(f"{where}: {name} {i + 1} ({role}) needs a string 'content'")
        out.append({"role": role, "content": content})
    if end is None:
        return out
    turns = out[1:] if out[0]["role"] == "system" else out
    if not turns:
        raise UserError(f"{where}: a system message alone is not a conversation")
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            n = i + 1 + (len(out) - len(turns))
            kind = "a second system message" if m["role"] == "system" else f"a {m['role']} message"
            raise UserError(f"{where}: {name} {n} is {kind} where a {want} message belongs (turns alternate user, assistant)")
    if turns[-1]["role"] != end:
        if end == "assistant":
            raise UserError(f"{where}: the conversation must end with an assistant message (nothing to learn after the last user turn)")
        raise UserError(f"{where}: '{what}' must end with a user message (the turn the model answers)")
    return out


def record_to_messages(obj: Any, fmt: str = "auto", where: str = "record") -> list[dict]:
    """One demonstration record (any supported format) as a checked list of chat messages."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object")
    if fmt == "auto":
        fmt = detect_format(obj, where)
    if fmt == "chat":
        if "messages" in obj:
            return check_messages(obj["messages"], where)
        if "conversations" in obj:
            conv = obj["conversations"]
            if not isinstance(conv, list):
                raise UserError(f"{where}: 'conversations' must be a list")
            msgs = []
            for i, m in enumerate(conv):
                if not isinstance(m, dict) or m.get("from") not in _SHAREGPT_ROLES:
                    frm = m.get("from") if isinstance(m, dict) else None
                    raise UserError(f"{where}: conversation turn {i + 1} has 'from' {frm!r} (expected human, gpt or system)")
                msgs.append({"role": _SHAREGPT_ROLES[m["from"]], "content": m.get("value")})
            return check_messages(msgs, where)
        raise UserError(f"{where}: chat format needs a 'messages' list")
    if fmt == "prompt_response":
        prompt = obj.get("prompt")
        response = obj.get("response", obj.get("completion"))
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise UserError(f"{where}: prompt/response format needs string fields 'prompt' and 'response'")
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        if isinstance(obj.get("system"), str) and obj["system"]:
            msgs.insert(0, {"role": "system", "content": obj["system"]})
        return check_messages(msgs, where)
    if fmt == "preference":
        msgs = preferred_conversation(obj, where)
        if msgs is None:
            raise UserError(f"{where}: this comparison gives no demonstration (no usable preferred response)")
        return msgs
    if fmt == "alpaca":
        ins, inp, outp = obj.get("instruction"), obj.get("input", ""), obj.get("output")
        if not isinstance(ins, str) or not isinstance(outp, str) or not isinstance(inp, (str, type(None))):
            raise UserError(f"{where}: Alpaca format needs string fields 'instruction' and 'output' (and optional 'input')")
        user = ins + (f"\n\n{inp}" if inp else "")
        return check_messages([{"role": "user", "content": user}, {"role": "assistant", "content": outp}], where)
    raise UserError(f"--format: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")


def detect_format(obj: dict, where: str = "record") -> str:
    if "messages" in obj or "conversations" in obj:
        return "chat"
    if "chosen" in obj or ("responses" in obj and "ranking" in obj):
        return "preference"
    if "prompt" in obj and ("response" in obj or "completion" in obj):
        return "prompt_response"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    keys = ", ".join(sorted(obj)[:6]) or "none"
    raise UserError(f"{where}: unknown record format (keys: {keys}); expected 'messages', 'prompt'+'response', "
                    "'instruction'+'output' or a comparison ('chosen'+'rejected')")


def preferred_conversation(obj: dict, where: str, skips: Any = None) -> list[dict] | None:
    """A comparison record's prompt followed by its best-ranked response, or None when the comparison reader skips the
    record (an empty preferred response, HH dialogues that differ before the last turn...; counted in ``skips``)."""
    from .preferences import SkipReport, as_messages, parse_line

    c = parse_line(obj, where, skips if skips is not None else SkipReport(), "skip")
    if c is None or not c.ranking or c.explicit_pairs is not None:
        return None
    best = c.responses[c.ranking[0][0]]
    return check_messages(as_messages(c.prompt) + [{"role": "assistant", "content": best}], where)


# ---------------------------------------------------------------------------------------------- reading
def read_demonstrations(path: str | Path, fmt: str = "auto", columns: dict | None = None) -> list[dict]:
    """Demonstrations from any ``sources`` source (a JSONL, JSON, parquet or arrow file, a folder of them, a saved
    dataset or a dataset id) as records ``{"id", "messages", "source"}`` (source: where the record was, ``file:line``).
    Comparisons whose preferred response is unusable are skipped, and the count printed."""
    import sys

    from .preferences import SkipReport
    from .sources import records

    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    rows, skips = [], SkipReport()
    for where, obj in records(path, "demonstrations file", columns):
        if isinstance(obj, dict) and (fmt if fmt != "auto" else detect_format(obj, where)) == "preference":
            msgs = preferred_conversation(obj, where, skips)
            if msgs is None:
                continue
        else:
            msgs = record_to_messages(obj, fmt, where=where)
        rid = obj.get("id") if isinstance(obj.get("id"), (str, int)) else where.rsplit("/", 1)[-1]
        rows.append({"id": str(rid), "messages": msgs, "source": where})
    if skips.total:
        print(f"{path}: {skips.total} comparison record(s) gave no demonstration ({skips.summary()})", file=sys.stderr)
    if not rows:
        raise UserError(f"{path}: holds no demonstrations")
    return rows


def read_prompts(path: str, columns: dict | None = None) -> list[dict]:
    """Prompts from any ``sources`` source, as ``{"prompt": text}`` or ``{"messages": [...]}`` ending with the user's
    turn (with the record's other fields). Records of the other kinds give their prompt: a demonstration in any format
    (its conversation before the last answer) or a comparison (TRL, UltraFeedback, HH, ranked), so the data of one
    stage can be another's prompts. Comparisons the comparison reader skips are left out, and the count printed."""
    import sys

    from .preferences import SkipReport
    from .sources import records

    rows, skips = [], SkipReport()
    for where, obj in records(path, "prompts file", columns):
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a JSON object")
        row = _prompt_record(obj, where, skips)
        if row is not None:
            rows.append(row)
    if skips.total:
        print(f"{path}: {skips.total} comparison record(s) gave no prompt ({skips.summary()})", file=sys.stderr)
    if not rows:
        raise UserError(f"{path}: holds no prompts")
    return rows


def heldout_prompts(rows: list[dict], share: float, heldout: bool) -> list[dict]:
    """The prompts (``read_prompts`` rows) of the held-out share (``heldout=True``) or of the rest: a prompt is held
    out when its hash falls below ``share``, so igpt ppo --heldout-share trains on exactly the prompts igpt eval
    --heldout-share does not evaluate on."""
    from .preferences import prompt_key
    from .sources import hash_share

    return [r for r in rows if (hash_share(prompt_key(r.get("messages") or r["prompt"]), "heldout-prompts") < share) == heldout]


def _prompt_record(obj: dict, where: str, skips: Any) -> dict | None:
    from .preferences import parse_line

    ident = {"id": obj["id"]} if isinstance(obj.get("id"), (str, int)) else {}
    if "chosen" in obj or ("responses" in obj and "ranking" in obj):
        c = parse_line(obj, where, skips, "keep")
        if c is None:
            return None
        return {**ident, "prompt": c.prompt} if isinstance(c.prompt, str) else {**ident, "messages": list(c.prompt)}
    if isinstance(obj.get("messages"), list):
        msgs = obj["messages"]
        if msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":  # a demonstration: what it answers
            msgs = msgs[:-1]
        return {**obj, "messages": check_messages(msgs, where, end="user")}
    if isinstance(obj.get("prompt"), list):  # a conversational prompt (TRL)
        return {**{k: v for k, v in obj.items() if k != "prompt"}, "messages": check_messages(obj["prompt"], where, end="user")}
    if isinstance(obj.get("prompt"), str):
        return obj
    if "conversations" in obj or ("instruction" in obj and "output" in obj):
        return {**ident, "messages": record_to_messages(obj, "auto", where)[:-1]}
    raise UserError(f"{where}: expected {{\"prompt\": text}} or {{\"messages\": [...]}} (or a demonstration or comparison "
                    "record, whose prompt is taken)")


def load_demonstrations(source: str | Path, fmt: str = "auto", world_split: str = "sft", columns: dict | None = None) -> list[dict]:
    """Demonstrations from a built-in world folder (its ``world_split`` split) or any other source
    (``read_demonstrations``)."""
    p = Path(str(source))
    if p.is_dir() and (p / "world.json").is_file():
        from ..world import World

        recs = World.load(p).demonstrations(world_split)
        out = [{"id": str(r["id"]), "messages": check_messages(r["messages"], f"{p} demonstration {r['id']}"), "source": f"{p}#{r['id']}"}
               for r in recs]
        if not out:
            raise UserError(f"{p}: the world holds no '{world_split}' demonstrations")
        return out
    return read_demonstrations(source, fmt, columns)


def prompt_key(messages: list[dict]) -> str:
    """A stable key of everything before the last assistant turn (so one prompt's examples land in the same split)."""
    body = json.dumps(messages[:-1], sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(body.encode("utf-8"), digest_size=8).hexdigest()


def is_validation(messages: list[dict], fraction: float) -> bool:
    """Deterministic held-out choice by a hash of the prompt."""
    return int(prompt_key(messages), 16) % 1_000_000 < fraction * 1_000_000


# ---------------------------------------------------------------------------------------------- rendering
def render(tok: Any, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the conversation through the chat template, and a 0/1 loss mask marking the assistant tokens.

    A token is in the loss when its characters overlap an assistant turn's content or the end-of-turn token right after
    it (whitespace the template puts between them included). Raises ``UserError`` when the template does not copy an
    assistant content verbatim.
    """
    text = tok.apply_chat_template(messages, tokenize=False)
    spans = assistant_spans(text, messages, tok)
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        mask = [0] * len(ids)
        j = 0
        for i, (a, b) in enumerate(offsets):
            while j < len(spans) and spans[j][1] <= a:
                j += 1
            if j < len(spans) and b > spans[j][0] and a < spans[j][1] and b > a:
                mask[i] = 1
        return ids, mask
    # slow tokenizers have no offsets: tokenise the pieces between span boundaries separately
    ids, mask, at = [], [], 0
    for s, e in spans:
        for piece, m in ((text[at:s], 0), (text[s:e], 1)):
            if piece:
                t = tok(piece, add_special_tokens=False)["input_ids"]
                ids += t
                mask += [m] * len(t)
        at = e
    if text[at:]:
        t = tok(text[at:], add_special_tokens=False)["input_ids"]
        ids += t
        mask += [0] * len(t)
    return ids, mask


def assistant_spans(text: str, messages: list[dict], tok: Any = None) -> list[tuple[int, int]]:
    """Character spans [start, end) of each assistant content in the rendered ``text``, extended over the closing token."""
    enders = list(END_OF_TURN)
    if tok is not None and getattr(tok, "eos_token", None) and tok.eos_token not in enders:
        enders.append(tok.eos_token)
    closing = re.compile(r"\s*(?:" + "|".join(re.escape(t) for t in enders) + ")")
    spans, at = [], 0
    for i, m in enumerate(messages):
        content = m["content"]
        if m["role"] == "assistant" and tok is not None:  # start after the assistant header the template puts before the reply
            try:
                head = tok.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=False)
            except Exception:  # a template that cannot render this prefix: fall back to searching
                head = ""
            if head and text.startswith(head):
                at = max(at, len(head))
        found = text.find(content, at) if content else at
        if found < 0 and content.strip():
            content = content.strip()
            found = text.find(content, at)
        if found < 0:
            if m["role"] == "assistant":
                raise UserError("the tokenizer's chat template changes assistant messages; cannot tell which tokens to learn from")
            continue  # a template may rewrite system/user text; only assistant spans matter
        end = found + len(content)
        if m["role"] == "assistant":
            if not content:  # an empty reply: the closing token right after the assistant header
                end = found
            close = closing.match(text, end)
            if close:
                end = close.end()
            spans.append((found, end))
        at = end
    return spans


def render_prompt(tok: Any, messages: list[dict]) -> list[int]:
    """Token ids of a conversation so far, followed by the assistant header: what the model continues when sampling."""
    return list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) its last assistant turn."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return messages[:i]
    return list(messages)


def render_all(tok: Any, records: Iterable[dict], max_len: int) -> tuple[list[dict], list[dict]]:
    """Render records; returns (kept, dropped). Each kept record gains ``ids`` and ``mask``; a record is dropped when its
    rendering is longer than ``max_len`` tokens (so no example is ever cut in the middle of a response)."""
    kept, dropped = [], []
    for r in records:
        ids, mask = render(tok, r["messages"])
        if len(ids) > max_len:
            dropped.append({**r, "length": len(ids)})
            continue
        if sum(mask) == 0:
            raise UserError(f"{r.get('source', r.get('id'))}: rendering left no assistant tokens to learn from")
        kept.append({**r, "ids": ids, "mask": mask})
    return kept, dropped

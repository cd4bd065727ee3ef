"""Validation of the world's files on read. Every problem becomes a one-line ``UserError`` naming ``file:line``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

from ..errors import data_error
from .kb import ENTITY_TYPES
from .tasks import CATEGORIES, FAMILIES

SPLITS = ["sft", "rm", "ppo", "eval"]
EVAL_SETS = ["winrate", "closed_domain", "false_premise", "toxicity", "harmful", "novel"]
CORPUS_SPLITS = ["train", "heldout"]

# type -> {attribute: kind}; kinds: str, int, id, id?, ids, strs
ENTITY_ATTRS: dict[str, dict[str, str]] = {
    "continent": {},
    "sea": {},
    "country": {"continent": "id", "capital": "id", "language": "str", "founded": "int"},
    "city": {"country": "id", "population": "str", "features": "strs", "founded": "int", "river": "id?"},
    "river": {"countries": "ids", "length_km": "int", "mouth": "id"},
    "person": {"first": "str", "last": "str", "profession": "str", "field": "str", "born": "int", "birthplace": "id",
               "known_for": "str"},
    "organisation": {"field": "str", "founded": "int", "founder": "id", "city": "id"},
    "conference": {"field": "str", "city": "id", "first_held": "int", "organiser": "id", "frequency": "str"},
}


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-empty line; malformed JSON or a non-object is a file:line error."""
    from ..textio import jsonl_objects

    yield from jsonl_objects(path)


def read_json(path: Path) -> dict:
    from ..textio import read_text

    try:
        obj = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise data_error(path, e.lineno, f"not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise data_error(path, 1, "expected a JSON object")
    return obj


def _need(obj: dict, key: str, kind, path: Path, line: int, what: str = ""):
    if key not in obj:
        raise data_error(path, line, f"missing field {key!r}{what}")
    val = obj[key]
    ok = isinstance(val, kind) and not (kind is int and isinstance(val, bool))
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise data_error(path, line, f"field {key!r}{what} must be {names}, got {type(val).__name__}")
    return val


def validate_entities(path: Path, rows: list[tuple[int, dict]]) -> None:
    ids: dict[str, int] = {}
    for line, e in rows:
        eid = _need(e, "id", str, path, line)
        if eid in ids:
            raise data_error(path, line, f"duplicate id {eid!r} (first on line {ids[eid]})")
        ids[eid] = line
        typ = _need(e, "type", str, path, line)
        if typ not in ENTITY_TYPES:
            raise data_error(path, line, f"unknown entity type {typ!r} (expected one of {', '.join(ENTITY_TYPES)})")
        if not _need(e, "name", str, path, line).strip():
            raise data_error(path, line, "field 'name' is empty")
    for line, e in rows:
        for attr, kind in ENTITY_ATTRS[e["type"]].items():
            what = f" of {e['type']} {e['id']}"
            if kind == "str":
                _need(e, attr, str, path, line, what)
            elif kind == "int":
                _need(e, attr, int, path, line, what)
            elif kind == "strs":
                v = _need(e, attr, list, path, line, what)
                if not v or not all(isinstance(x, str) for x in v):
                    raise data_error(path, line, f"field {attr!r}{what} must be a non-empty list of strings")
            elif kind in ("id", "id?", "ids"):
                if kind == "id?" and e.get(attr, "missing") is None:
                    continue
                v = _need(e, attr, list if kind == "ids" else str, path, line, what)
                for ref in (v if kind == "ids" else [v]):
                    if ref not in ids:
                        raise data_error(path, line, f"field {attr!r}{what} refers to unknown entity {ref!r}")


def validate_corpus(path: Path, rows: list[tuple[int, dict]]) -> None:
    for line, d in rows:
        _need(d, "id", str, path, line)
        split = _need(d, "split", str, path, line)
        if split not in CORPUS_SPLITS:
            raise data_error(path, line, f"split must be 'train' or 'heldout', got {split!r}")
        _need(d, "genre", str, path, line)
        if not _need(d, "text", str, path, line).strip():
            raise data_error(path, line, "field 'text' is empty")


def validate_prompts(path: Path, rows: list[tuple[int, dict]], entity_ids: set[str]) -> None:
    seen: dict[str, int] = {}
    texts: dict[str, tuple[str, int]] = {}
    for line, r in rows:
        pid = _need(r, "id", str, path, line)
        if pid in seen:
            raise data_error(path, line, f"duplicate prompt id {pid!r} (first on line {seen[pid]})")
        seen[pid] = line
        split = _need(r, "split", str, path, line)
        if split not in SPLITS:
            raise data_error(path, line, f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        fam = _need(r, "family", str, path, line)
        if fam not in FAMILIES:
            raise data_error(path, line, f"unknown task family {fam!r}")
        cat = _need(r, "category", str, path, line)
        if cat not in CATEGORIES:
            raise data_error(path, line, f"unknown category {cat!r} (expected one of {', '.join(CATEGORIES)})")
        if cat != FAMILIES[fam].category:
            raise data_error(path, line, f"family {fam!r} belongs to category {FAMILIES[fam].category!r}, not {cat!r}")
        prompt = _need(r, "prompt", str, path, line)
        if not prompt.strip():
            raise data_error(path, line, "field 'prompt' is empty")
        meta = _need(r, "meta", dict, path, line)
        ents = meta.get("entities", [])
        if not isinstance(ents, list) or not all(isinstance(x, str) for x in ents):
            raise data_error(path, line, "meta.entities must be a list of entity ids")
        for x in ents:
            if x not in entity_ids:
                raise data_error(path, line, f"meta.entities refers to unknown entity {x!r}")
        if not isinstance(meta.get("constraints", {}), dict):
            raise data_error(path, line, "meta.constraints must be an object")
        if split == "eval" and meta.get("eval_set") not in EVAL_SETS:
            raise data_error(path, line, f"eval prompt needs meta.eval_set in {', '.join(EVAL_SETS)}")
        key = " ".join(prompt.lower().split())
        if key in texts and texts[key][0] != split:
            raise data_error(path, line, f"prompt text repeats line {texts[key][1]} of split {texts[key][0]!r}: splits must be disjoint")
        texts.setdefault(key, (split, line))


def validate_demos(path: Path, rows: list[tuple[int, dict]], prompts: dict[str, dict]) -> None:
    seen: set[str] = set()
    for line, d in rows:
        pid = _need(d, "id", str, path, line)
        if pid not in prompts:
            raise data_error(path, line, f"demonstration for unknown prompt id {pid!r}")
        if pid in seen:
            raise data_error(path, line, f"second demonstration for prompt {pid!r}")
        seen.add(pid)
        msgs = _need(d, "messages", list, path, line)
        if len(msgs) < 2:
            raise data_error(path, line, "messages must hold a user turn and an assistant turn")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise data_error(path, line, f"messages[{j}] must be an object with string 'role' and 'content'")
            if m["role"] not in ("system", "user", "assistant"):
                raise data_error(path, line, f"messages[{j}].role must be system, user or assistant, got {m['role']!r}")
        if msgs[-1]["role"] != "assistant":
            raise data_error(path, line, "the last message must be the assistant's")
        if "writer" in d or "flaws" in d:
            _need(d, "writer", str, path, line)
            flaws = _need(d, "flaws", list, path, line)
            if not all(isinstance(f, str) for f in flaws):
                raise data_error(path, line, "flaws must be a list of strings")


def validate_probes(path: Path, rows: list[tuple[int, dict]]) -> None:
    for line, p in rows:
        _need(p, "id", str, path, line)
        _need(p, "prefix", str, path, line)
        ch = _need(p, "choices", list, path, line)
        if len(ch) < 2 or not all(isinstance(c, str) for c in ch):
            raise data_error(path, line, "choices must be a list of at least two strings")
        ans = _need(p, "answer", int, path, line)
        if not 0 <= ans < len(ch):
            raise data_error(path, line, f"answer {ans} is not an index into the {len(ch)} choices")


def validate_labelers(path: Path, obj: dict) -> list[dict]:
    labs = obj.get("labelers")
    if not isinstance(labs, list) or not labs:
        raise data_error(path, 1, "expected {\"labelers\": [...]} with at least one labeler")
    names = set()
    for i, lab in enumerate(labs):
        where = f" of labeler {i}"
        if not isinstance(lab, dict):
            raise data_error(path, None, f"labeler {i} must be an object")
        name = _need(lab, "name", str, path, None, where)
        if name in names:
            raise data_error(path, None, f"duplicate labeler name {name!r}")
        names.add(name)
        if lab.get("group") not in ("train", "heldout"):
            raise data_error(path, None, f"labeler {name!r}: group must be 'train' or 'heldout'")
        for k in ("noise", "length_pref"):
            v = lab.get(k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or (k == "noise" and v < 0):
                raise data_error(path, None, f"labeler {name!r}: {k} must be a number{' >= 0' if k == 'noise' else ''}")
        fw = lab.get("flag_weights", {})
        if not isinstance(fw, dict) or not all(isinstance(v, (int, float)) for v in fw.values()):
            raise data_error(path, None, f"labeler {name!r}: flag_weights must map flag names to numbers")
    return labs


def load_rows(path: Path, validate: Callable[[Path, list[tuple[int, dict]]], None] | None = None) -> list[tuple[int, dict]]:
    rows = list(read_jsonl(path))
    if validate:
        validate(path, rows)
    return rows

"""The gold judge's shared answer checks: what the task families' ``check`` (their part of the judge, see ``judge.py``)
are built from, and the markers and negations the judge's analysis of a response reads."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from . import text as T
from . import vocab

if TYPE_CHECKING:  # pragma: no cover
    from .judge import Analysis

NEG_RE = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in vocab.NEGATIONS) + r")\b|n't\b", re.IGNORECASE)

UNKNOWN_MARKERS = ["does not say", "doesn't say", "not mentioned", "does not mention", "doesn't mention", "no information",
                   "not in the text", "not stated", "does not tell", "doesn't tell", "cannot tell from", "can't tell from"]


def entity_answer(a: "Analysis", expected: str, typ: str) -> tuple[float, dict, dict]:
    """The first entity of type ``typ`` named in the response must be ``expected``."""
    first = a.first_of_type(typ)
    if first == expected:
        return 1.0, {}, {}
    if first is None:
        return 0.0, {}, {"missing_answer": a.kb.get(expected)["name"]}
    return 0.0, {}, {"wrong_answer": a.kb.get(first)["name"], "false_claims": [f"answer {a.kb.get(first)['name']}"]}


def year_answer(a: "Analysis", expected: int) -> tuple[float, dict, dict]:
    ys = a.years
    if not ys:
        return 0.0, {}, {"missing_answer": str(expected)}
    if ys[0] == expected:
        return 1.0, {}, {}
    if expected in ys:
        return 0.4, {}, {"false_claims": [f"year {ys[0]}"]}
    return 0.0, {}, {"wrong_answer": str(ys[0]), "false_claims": [f"year {ys[0]}"]}


def phrase_in(phrase: str, normed: str) -> bool:
    p = T.norm(phrase)
    return bool(p) and (" " + p + " ") in (" " + normed + " ")


def item_matches(items: list[str], valid: dict[str, str]) -> tuple[int, list[str]]:
    """Count distinct items that name one of ``valid`` (normalised phrase -> key); return (hits, unmatched items)."""
    hit: set[str] = set()
    bad: list[str] = []
    for it in items:
        n = T.norm(it)
        found = None
        for ph, key in valid.items():
            if phrase_in(ph, n):
                found = key
                break
        if found is None:
            bad.append(it)
        else:
            hit.add(found)
    return len(hit), bad



"""Instruction task families: prompt generation, the ideal demonstration, and the family-specific part of the gold check.

Each family belongs to one of InstructGPT's use-case categories and carries its checkable facts and constraints in the prompt
record's ``meta``. ``Family.demo`` writes the response a careful labeler would write (short, one consistent pattern per
family, grounded in the knowledge base); ``Family.check`` is the family's part of the gold judge (see ``judge.py``), returning
the answer quality ``q`` in [0, 1] plus any family-specific flags and details.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING

from .. import text as T
from .. import vocab
from ..kb import KnowledgeBase

if TYPE_CHECKING:  # pragma: no cover
    from ..judge import Analysis

CATEGORIES = ["generation", "open_qa", "closed_qa", "brainstorming", "chat", "rewrite", "summarization", "classification",
              "extraction", "arithmetic", "harmful", "false_premise", "toxicity"]

NEG_RE = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in vocab.NEGATIONS) + r")\b|n't\b", re.IGNORECASE)

UNKNOWN_MARKERS = ["does not say", "doesn't say", "not mentioned", "does not mention", "doesn't mention", "no information",
                   "not in the text", "not stated", "does not tell", "doesn't tell", "cannot tell from", "can't tell from"]


class TaskGen:
    """What a family's ``generate`` gets: the knowledge base and a random stream."""

    def __init__(self, kb: KnowledgeBase, rng: random.Random):
        self.kb = kb
        self.rng = rng

    def pick(self, typ: str, pred=None) -> dict | None:
        pool = self.kb.by_type[typ] if pred is None else [e for e in self.kb.by_type[typ] if pred(e)]
        return self.rng.choice(pool) if pool else None

    def qa_constraints(self, short_ok: bool = True, p_start: float = 0.2, p_short: float = 0.15) -> tuple[str, dict]:
        """Optional explicit constraint appended to a question: start word or word limit."""
        r = self.rng.random()
        if r < p_start:
            w = self.rng.choice(vocab.START_WORDS)
            return f" Start your answer with the word '{w}'.", {"must_start_with": w}
        if short_ok and r < p_start + p_short:
            k = self.rng.choice([3, 4, 5])
            return f" Answer in at most {k} words.", {"max_words": k}
        return "", {}


def finish(rec: dict, full: str, short: str | None = None) -> str:
    """Apply a record's explicit constraints to a demonstration."""
    c = rec["meta"].get("constraints", {})
    out = full
    if "max_words" in c and short is not None and len(T.words(full)) > c["max_words"]:
        out = short
    if "must_start_with" in c:
        out = f"{c['must_start_with']}, {T.lower_first(out)}"
    return out


def _the(kb: KnowledgeBase, eid: str) -> str:
    return kb.display(eid)


class Family:
    name = ""
    category = ""
    closed_domain = False
    check_claims = True  # run the knowledge-base fact check on the response's sentences
    budget_words = 30

    def generate(self, g: TaskGen) -> list[tuple[str, dict]] | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def demo(self, kb: KnowledgeBase, rec: dict) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, a: "Analysis") -> tuple[float, dict, dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def budget(self, rec: dict) -> int:
        return self.budget_words

    def instruction(self, rec: dict) -> str:
        """The prompt without any passage it quotes: what a response must not simply repeat."""
        p = rec["prompt"]
        passage = rec["meta"].get("passage")
        if passage:
            p = p.replace(passage, " ")
        return p

    def render_plain(self, rec: dict) -> str:
        return rec["prompt"] + "\n"


# ----------------------------------------------------------------------------------------------------------------- helpers

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



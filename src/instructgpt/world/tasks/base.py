"""Instruction task families: prompt generation, the ideal demonstration, and the family-specific part of the gold check.

Each family belongs to one of InstructGPT's use-case categories and carries its checkable facts and constraints in the prompt
record's ``meta``. ``Family.demo`` writes the response a careful labeler would write (short, one consistent pattern per
family, grounded in the knowledge base); ``Family.check`` is the family's part of the gold judge (see ``judge.py``), built from the judge's
shared answer checks in ``checks.py``, returning the answer quality ``q`` in [0, 1] plus any family-specific flags and
details.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from .. import text as T
from .. import vocab
from ..kb import KnowledgeBase

if TYPE_CHECKING:  # pragma: no cover
    from ..judge import Analysis

CATEGORIES = ["generation", "open_qa", "closed_qa", "brainstorming", "chat", "rewrite", "summarization", "classification",
              "extraction", "arithmetic", "harmful", "false_premise", "toxicity"]


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

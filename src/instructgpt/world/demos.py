"""Who wrote the demonstrations, and how carefully.

InstructGPT's demonstrations were written by labelers, and labelers vary: some follow every instruction to the letter,
others are hasty. A model fine-tuned on their demonstrations learns the mixture, flaws included; the rankings that train
the reward model carry the information the demonstrations lack (that the careful answer is the better one), which is
what reinforcement learning from those rankings can add on top of supervised fine-tuning.

Each demonstration of the training splits (``sft``, ``rm``, ``ppo``) is written by one of the training labelers. A writer
is careless on a share of their demonstrations (their own rate, drawn around the world's ``careless_share``); a careless
demonstration starts from the ideal response and gets one or two flaws of the kinds a hasty person makes:

- any task: ``sloppy`` (no final period, a lower-case first word), ``filler`` ("Good question. ..."), ``break_constraint`` (ignores an
  explicit constraint of the prompt), ``curt`` (a condescending remark: "Look it up next time.");
- a harmful request: ``comply`` (answered helpfully instead of declined, about two in three careless ones);
- a false-premise question: ``accept_premise`` (goes along with the premise, about half);
- a plain (not "respectful") toxic sentence start: ``toxic_completion`` (completed with an insult, about two in three).

The gold judge scores every flaw below the ideal response. The evaluation prompts keep ideal reference answers.
``careless_share=0`` gives perfect demonstrations (the ablation: then reinforcement learning has nothing to fix that
supervised fine-tuning did not already learn).
"""

from __future__ import annotations

import random

from . import text as T
from . import vocab
from .kb import KnowledgeBase
from .perturb import CURT_REMARKS, PERTURBATIONS, _Ctx

GENERIC_FLAWS = ["sloppy", "filler", "break_constraint", "curt"]
FLAW_KINDS = GENERIC_FLAWS + ["comply", "accept_premise", "toxic_completion"]
TRAINING_SPLITS = ("sft", "rm", "ppo")


def _curt(c: _Ctx, t: str) -> str | None:
    if c.rng.random() < 0.4:
        return "Obviously, " + T.lower_first(t)
    return t + " " + c.rng.choice(CURT_REMARKS)


COMMON_STARTS = {"The", "I", "It", "There", "Here", "Yes", "No", "Please", "You", "Join", "A", "An", "This", "Sure",
                 "Because", "Thank", "Dear", "My", "We", "She", "He", "They", "Only", "Good", "Let"}


def _sloppy(c: _Ctx, t: str) -> str | None:
    """No final period, and a lower-case first word when it is a common word (names keep their capitals)."""
    out = t.rstrip().rstrip(".!")
    first = out.split(" ", 1)[0]
    if first in COMMON_STARTS:
        out = first.lower() + out[len(first):]
    return out if out != t else None


def _toxic_completion(c: _Ctx, t: str) -> str | None:
    prefix = c.meta.get("prefix")
    if not prefix or c.meta.get("respectful"):
        return None
    return f"{prefix} {c.rng.choice(vocab.INSULT_PHRASES)}."


def _apply(kind: str, c: _Ctx, t: str) -> str | None:
    if kind == "curt":
        return _curt(c, t)
    if kind == "sloppy":
        return _sloppy(c, t)
    if kind == "toxic_completion":
        return _toxic_completion(c, t)
    return PERTURBATIONS[kind][0](c, t)


def writer_rates(seed: int, writers: list[str], careless_share: float) -> dict[str, float]:
    """Each writer's share of careless demonstrations: ``careless_share`` times a factor in [0.4, 1.6], at most 1."""
    rng = random.Random(f"igpt-world:{seed}:writers")
    return {w: round(min(1.0, careless_share * rng.uniform(0.4, 1.6)), 4) for w in writers}


def careless_version(kb: KnowledgeBase, rec: dict, ideal: str, rng: random.Random) -> tuple[str, list[str]]:
    """A careless writer's demonstration for ``rec``: the ideal response with one or two flaws (names returned)."""
    c = _Ctx(kb, rec, ideal, rng)
    cat = rec["category"]
    first: list[str] = []
    if cat == "harmful" and rng.random() < 0.67:
        first = ["comply"]
    elif cat == "false_premise" and rng.random() < 0.5:
        first = ["accept_premise"]
    elif cat == "toxicity" and not rec["meta"].get("respectful") and rng.random() < 0.7:
        first = ["toxic_completion"]
    for kind in first:
        out = _apply(kind, c, ideal)
        if out and out != ideal:
            return out, [kind]
    want = 1 if rng.random() < 0.7 else 2
    t, used = ideal, []
    for kind in rng.sample(GENERIC_FLAWS, len(GENERIC_FLAWS)):
        if len(used) >= want:
            break
        if kind == "filler" and "curt" in used or kind == "curt" and "filler" in used:
            continue
        out = _apply(kind, c, t)
        if out and out.strip() and out != t:
            t = out
            used.append(kind)
    return (t, used) if t != ideal else (ideal, [])


def write_demonstrations(kb: KnowledgeBase, seed: int, prompts: list[dict], ideal: dict[str, str], writers: list[str],
                         careless_share: float) -> tuple[dict[str, str], dict[str, dict], dict[str, float]]:
    """Demonstration texts, their authorship ``{"writer", "flaws"}`` per prompt id, and each writer's careless rate."""
    rates = writer_rates(seed, writers, careless_share)
    rng = random.Random(f"igpt-world:{seed}:demonstrations")
    texts: dict[str, str] = {}
    info: dict[str, dict] = {}
    for p in prompts:
        pid = p["id"]
        if p["split"] not in TRAINING_SPLITS or not writers:
            texts[pid] = ideal[pid]
            continue
        w = writers[rng.randrange(len(writers))]
        flaws: list[str] = []
        text = ideal[pid]
        if rng.random() < rates[w]:
            out, used = careless_version(kb, p, ideal[pid], rng)
            if used and out.strip() and out != ideal:
                text, flaws = out, used
        texts[pid] = text
        info[pid] = {"writer": w, "flaws": flaws}
    return texts, info, rates

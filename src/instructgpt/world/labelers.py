"""Simulated labelers: rank, compare and rate responses from the gold judge's verdict plus individual noise and biases.

A labeler's utility for a response is

    u = gold score + length_pref * min(words / budget, 1.5) - sum(flag_weights[f] for flags raised) + Normal(0, noise)

with a fresh noise draw per judgement (from the ``rng`` the caller passes, so runs are reproducible). ``noise`` is calibrated
so that two training labelers agree on about 73% of pairs of imperfect responses, as InstructGPT's labelers did
(72.6 +- 1.5%).

Every simulated labeler is built on the gold judge: its utility is the gold score plus a bias and noise. A win rate by
simulated labelers therefore re-reads the gold judge through other biases; it is not an independent confirmation, and
what the judge cannot see no labeler sees either. To make that reading as informative as it can be, the held-out pool
differs from the training pool in kind, as other people do (``HELDOUT_KINDS``): one likes long answers, one short
ones, one punishes hedging and non-answers, one is careless (twice the noise). The training pool's eight labelers have
small biases of the same form around the gold judge.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

# Calibrated on pairs of imperfect responses (perturb.imperfect_responses) of the default world (see tests/test_world.py).
BASE_NOISE = 0.11
BIAS_FLAGS = ["hallucination", "violates_constraint", "rambling", "toxic", "unfinished", "continues_with_question",
              "repetition", "fails_instruction"]


@dataclass
class SimLabeler:
    name: str
    group: str
    noise: float
    length_pref: float
    flag_weights: dict[str, float] = field(default_factory=dict)
    tie_margin: float = 0.01
    kind: str = ""
    judge: object | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("judge")
        if not d["kind"]:
            d.pop("kind")
        return d

    @classmethod
    def from_dict(cls, d: dict, judge=None) -> "SimLabeler":
        return cls(name=d["name"], group=d["group"], noise=float(d["noise"]), length_pref=float(d["length_pref"]),
                   flag_weights={k: float(v) for k, v in d.get("flag_weights", {}).items()},
                   tie_margin=float(d.get("tie_margin", 0.01)), kind=str(d.get("kind", "")), judge=judge)

    # ------------------------------------------------------------------ judgements
    def _base(self, prompt, response: str) -> float:
        r = self.judge.score(prompt, response)
        budget = r.details.get("budget", 30) or 30
        words = r.details.get("words", 0)
        u = r.score + self.length_pref * min(words / budget, 1.5)
        for f, w in self.flag_weights.items():
            if r.flags.get(f):
                u -= w
        return u

    def utility(self, prompt, response: str, rng: random.Random) -> float:
        return self._base(prompt, response) + rng.gauss(0.0, self.noise)

    def rank(self, prompt, responses: list[str], rng: random.Random) -> list[int]:
        """Indices of ``responses`` from best to worst."""
        us = [self.utility(prompt, r, rng) for r in responses]
        return sorted(range(len(responses)), key=lambda i: (-us[i], i))

    def prefer(self, prompt, a: str, b: str, rng: random.Random) -> float:
        """1.0 if ``a`` is better, 0.0 if ``b`` is, 0.5 for a tie."""
        if a == b:
            return 0.5
        ua, ub = self.utility(prompt, a, rng), self.utility(prompt, b, rng)
        return self._outcome(ua, ub)

    def _outcome(self, ua: float, ub: float) -> float:
        if abs(ua - ub) < self.tie_margin:
            return 0.5
        return 1.0 if ua > ub else 0.0

    def prefer_both_orders(self, prompt, a: str, b: str, rng: random.Random) -> float:
        """The comparison judged with ``a`` shown first and with ``b`` shown first, under the same two noise draws (the
        first for whichever answer is shown first), averaged: swapping ``a`` and ``b`` gives exactly 1 - p, and no
        draw can favour a position."""
        if a == b:
            return 0.5
        e1, e2 = rng.gauss(0.0, self.noise), rng.gauss(0.0, self.noise)
        ba, bb = self._base(prompt, a), self._base(prompt, b)
        return 0.5 * (self._outcome(ba + e1, bb + e2) + 1.0 - self._outcome(bb + e1, ba + e2))

    def likert(self, prompt, response: str, rng: random.Random) -> int:
        """Overall quality on InstructGPT's 1-7 scale."""
        u = self.utility(prompt, response, rng)
        return int(min(7, max(1, 1 + round(6 * u))))


# The held-out pool's kinds: (name, length preference range, flag weights, noise multiplier range).
HELDOUT_KINDS = [
    ("verbose", (0.10, 0.16), {"rambling": 0.0}, (0.9, 1.1)),
    ("terse", (-0.16, -0.10), {"rambling": 0.08}, (0.9, 1.1)),
    ("hedging_averse", (-0.02, 0.02), {"uninformative": 0.15, "fails_instruction": 0.08}, (0.9, 1.1)),
    ("careless", (-0.03, 0.03), {}, (1.8, 2.2)),
]


def make_labelers(seed: int, n_train: int = 8, n_heldout: int = 4, base_noise: float = BASE_NOISE) -> list[dict]:
    """Parameters of the two labeler pools (the rows of ``labelers.json``): the training pool, small biases around the
    gold judge; the held-out pool, one labeler of each of ``HELDOUT_KINDS`` in turn, each with its own noise."""
    out = []
    for group, n, tag in (("train", n_train, "train"), ("heldout", n_heldout, "heldout")):
        rng = random.Random(f"igpt-world:{seed}:labelers:{group}")
        if group == "heldout":
            for i in range(n):
                kind, lp, weights, nm = HELDOUT_KINDS[i % len(HELDOUT_KINDS)]
                out.append(SimLabeler(name=f"{tag}-{i + 1:02d}", group=group, noise=round(base_noise * rng.uniform(*nm), 4),
                                      length_pref=round(rng.uniform(*lp), 4),
                                      flag_weights={f: round(w * rng.uniform(0.8, 1.25), 4) for f, w in weights.items() if w},
                                      tie_margin=0.01, kind=kind).to_dict())
            continue
        for i in range(n):
            flags = rng.sample(BIAS_FLAGS, 2)
            out.append(SimLabeler(name=f"{tag}-{i + 1:02d}", group=group,
                                  noise=round(base_noise * rng.uniform(0.8, 1.25), 4),
                                  length_pref=round(rng.uniform(-0.08, 0.08), 4),
                                  flag_weights={f: round(rng.uniform(0.02, 0.1), 4) for f in flags},
                                  tie_margin=0.01).to_dict())
    return out


def agreement(world, group: str = "train", n_prompts: int = 200, pairs_per_prompt: int = 3, seed: int = 0,
              splits: tuple[str, ...] = ("rm",)) -> float:
    """Fraction of pairs of imperfect responses on which two different labelers of ``group`` prefer the same one.

    Ties count as agreement when both labelers tie, and half when one does.
    """
    from .perturb import imperfect_responses

    rng = random.Random(f"agreement:{seed}:{group}")
    labs = world.labelers(group)
    prompts = [p for s in splits for p in world.prompts(s)]
    rng.shuffle(prompts)
    agree, total = 0.0, 0
    for rec in prompts[:n_prompts]:
        resp = imperfect_responses(world, rec, rng, n=6)
        if len(resp) < 2:
            continue
        for _ in range(pairs_per_prompt):
            a, b = rng.sample(resp, 2)
            l1, l2 = rng.sample(labs, 2)
            p1, p2 = l1.prefer(rec, a, b, rng), l2.prefer(rec, a, b, rng)
            agree += 1.0 if p1 == p2 else (0.5 if 0.5 in (p1, p2) else 0.0)
            total += 1
    return agree / max(1, total)


def agreement_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-9) / max(1, n))

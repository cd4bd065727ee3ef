"""A small stand-in for the built-in world (``instructgpt.world.World``) with the same contract, for the label/rm tests.

Prompts ask for the capital of a country; the gold judge rewards the right capital and short answers; labelers rank by
the gold score plus their own noise. ``install()`` makes ``igpt label`` / ``igpt rm`` load it instead of the real world.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ["Alba", "Borin", "Cetra", "Dovel", "Eskar", "Fanwe", "Gorim", "Helta"]
CAPITALS = ["Mira", "Toln", "Vessa", "Quor", "Lirr", "Pand", "Seft", "Uron"]


@dataclass
class Score:
    score: float
    flags: dict | None = None


class Judge:
    def score(self, record: dict, text: str) -> Score:
        answer = record["meta"]["answer"]
        s = 0.2 * min(len(text.split()), 8) / 8
        if answer in text:
            s += 0.6
        elif any(c in text for c in CAPITALS):
            s += 0.2
        if len(text.split()) > 20:
            s -= 0.2
        return Score(max(0.0, min(1.0, s)), {"hallucination": answer not in text, "empty": not text.strip()})


class Labeler:
    def __init__(self, name: str, noise: float, judge: Judge):
        self.name, self.noise, self.judge = name, noise, judge

    def rank(self, record: dict, responses: list[str], rng: random.Random) -> list[int]:
        noisy = [self.judge.score(record, r).score + rng.gauss(0, self.noise) for r in responses]
        return sorted(range(len(responses)), key=lambda i: -noisy[i])

    def prefer(self, record: dict, a: str, b: str, rng: random.Random) -> float:
        order = self.rank(record, [a, b], rng)
        return 1.0 if order[0] == 0 else 0.0


class FakeWorld:
    def __init__(self, n_prompts: int = 120):
        self._judge = Judge()
        self._prompts = []
        for i in range(n_prompts):
            j = i % len(NAMES)
            self._prompts.append({"id": f"rm-{i:04d}", "split": "rm", "family": "capital", "category": "open_qa",
                                  "prompt": f"What is the capital of {NAMES[j]}? ({i})", "meta": {"answer": CAPITALS[j]}})

    @classmethod
    def load(cls, path) -> "FakeWorld":
        return cls()

    def prompts(self, split: str) -> list[dict]:
        return list(self._prompts) if split == "rm" else []

    def labelers(self, pool: str) -> list[Labeler]:
        if pool == "train":
            return [Labeler(f"sim-{i}", 0.15 + 0.05 * i, self._judge) for i in range(4)]
        return [Labeler(f"held-{i}", 0.2, self._judge) for i in range(2)]

    def judge(self) -> Judge:
        return self._judge

    def demonstrations(self, split: str) -> list[dict]:
        return [{"id": p["id"], "messages": [{"role": "user", "content": p["prompt"]},
                                             {"role": "assistant", "content": f"The capital is {p['meta']['answer']}."}]}
                for p in self._prompts[:40]]


def install() -> None:
    """Make the label and reward stages load this world."""
    from instructgpt.stages import label

    label.load_world = lambda path: FakeWorld.load(path)

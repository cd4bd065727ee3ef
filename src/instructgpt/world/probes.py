"""Alignment-tax probes: cloze questions scored by a language model's log-likelihood of each choice after the prefix.

Like SQuAD/HellaSwag-style public NLP benchmarks in the paper, they measure what the pretrained model knows and whether
alignment fine-tuning keeps it. A model answers a probe correctly when the ``answer`` choice has the highest total
log-probability (the evaluation may also length-normalise). Choices start with a space, so prefix + choice is plain text.
"""

from __future__ import annotations

import random

from .kb import KnowledgeBase
from . import vocab


def _choices(rng: random.Random, right: str, pool: list[str], k: int = 4) -> tuple[list[str], int]:
    others = [p for p in dict.fromkeys(pool) if p != right]
    pick = rng.sample(others, min(k - 1, len(others)))
    ch = pick + [right]
    rng.shuffle(ch)
    return [" " + c for c in ch], ch.index(right)


def generate_probes(kb: KnowledgeBase, seed: int, n: int) -> list[dict]:
    rng = random.Random(f"igpt-world:{seed}:probes")
    out: list[dict] = []
    seen: set[str] = set()
    kinds = ["capital", "city_country", "founder", "conf_field", "mouth", "profession", "arith", "born"]
    tries = 0
    while len(out) < n and tries < n * 30:
        tries += 1
        kind = rng.choice(kinds)
        if kind == "capital":
            c = rng.choice(kb.by_type["country"])
            prefix = f"The capital of {c['name']} is"
            ch, ans = _choices(rng, kb.get(c["capital"])["name"], [x["name"] for x in kb.by_type["city"]])
        elif kind == "city_country":
            c = rng.choice(kb.by_type["city"])
            prefix = f"{c['name']} is a city in"
            ch, ans = _choices(rng, kb.get(c["country"])["name"], [x["name"] for x in kb.by_type["country"]])
        elif kind == "founder":
            o = rng.choice(kb.by_type["organisation"])
            prefix = f"{kb.title(o)} was founded by"
            ch, ans = _choices(rng, kb.get(o["founder"])["name"], [x["name"] for x in kb.by_type["person"]])
        elif kind == "conf_field":
            c = rng.choice(kb.by_type["conference"])
            prefix = f"{kb.title(c)} is a conference about"
            ch, ans = _choices(rng, c["field"], vocab.FIELDS)
        elif kind == "mouth":
            if len(kb.by_type["sea"]) < 2:
                continue
            r = rng.choice(kb.by_type["river"])
            prefix = f"{kb.title(r)} flows into the"
            ch, ans = _choices(rng, kb.get(r["mouth"])["name"], [x["name"] for x in kb.by_type["sea"]])
        elif kind == "profession":
            p = rng.choice(kb.by_type["person"])
            prefix = f"{p['name']} was a"
            ch, ans = _choices(rng, p["profession"], list(vocab.PROFESSIONS))
        elif kind == "born":
            p = rng.choice(kb.by_type["person"])
            prefix = f"{p['name']} was born in"
            ch, ans = _choices(rng, str(p["born"]), [str(p["born"] + d) for d in (-40, -13, 9, 27, 55)])
        else:
            a, b = rng.randint(2, 60), rng.randint(2, 60)
            prefix = f"{a} + {b} ="
            ch, ans = _choices(rng, str(a + b), [str(a + b + d) for d in (-10, -2, -1, 1, 2, 10)])
        if prefix in seen or len(ch) < 2:
            continue
        seen.add(prefix)
        out.append({"id": f"probe-{len(out):05d}", "kind": kind, "prefix": prefix, "choices": ch, "answer": ans})
    return out

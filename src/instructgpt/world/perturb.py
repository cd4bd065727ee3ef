"""Imperfect and degenerate responses, made by perturbing demonstrations.

:func:`imperfect_responses` builds the kind of flawed-but-plausible answers a model produces (a wrong fact, a missed
constraint, an extra question, a truncation, rambling, mild rudeness, ...). They calibrate the simulated labelers (two
labelers should agree on about 73% of pairs of them), the corpus uses them as the web's imperfect answers, and the tests
and the evaluation use them as realistic negatives. :func:`degenerate_responses` gives the four degenerate cases the gold
judge must score near zero.
"""

from __future__ import annotations

import random
import re
from typing import Callable

from . import facts as F
from . import text as T
from . import vocab
from .kb import KnowledgeBase
from .tasks import FAMILIES, TaskGen


class _Ctx:
    def __init__(self, kb: KnowledgeBase, rec: dict, demo: str, rng: random.Random):
        self.kb, self.rec, self.demo, self.rng = kb, rec, demo, rng
        self.meta = rec.get("meta", {})
        self.fam = FAMILIES[rec["family"]]


def _other_question(kb: KnowledgeBase, rng: random.Random) -> str:
    e = rng.choice([x for x in kb.entities if x["type"] not in ("continent", "sea")])
    qs = F.questions(kb, e, rng)
    return rng.choice(qs)[0]


def _other_facts(kb: KnowledgeBase, rng: random.Random, k: int) -> list[str]:
    e = rng.choice([x for x in kb.entities if x["type"] not in ("continent", "sea")])
    return F.facts(kb, e, rng)[:k]


# ------------------------------------------------------------------------------------------------ the perturbations

def wrong_fact(c: _Ctx, t: str) -> str | None:
    kb, rng = c.kb, c.rng
    ments = kb.mentions(t)
    keep = set(c.meta.get("entities") or [])
    cands = [(s, e, eid) for s, e, eid in ments if eid not in keep] or ments
    if cands and rng.random() < 0.7:
        s, e, eid = rng.choice(cands)
        typ = kb.get(eid)["type"]
        pool = [x for x in kb.by_type[typ] if x["id"] != eid]
        if pool:
            new = rng.choice(pool)
            old_txt = t[s:e]
            repl = new["name"] if " " in old_txt or typ not in ("river", "sea", "organisation", "conference") else new["name"].split(" ")[0]
            if typ == "person" and " " not in old_txt:
                repl = new["last"]
            return t[:s] + repl + t[e:]
    ys = list(re.finditer(r"\b(1[0-9]{3}|20[0-4][0-9])\b", t))
    if ys:
        m = rng.choice(ys)
        return t[: m.start()] + str(int(m.group(0)) + rng.choice([-31, -12, -3, 4, 17, 40])) + t[m.end():]
    ns = [m for m in re.finditer(r"\b\d+\b", t) if not re.match(r"[.)]", t[m.end():m.end() + 1])]
    if ns:
        m = ns[-1]
        return t[: m.start()] + str(int(m.group(0)) + rng.choice([-2, -1, 1, 3, 10])) + t[m.end():]
    fs = [f for f in vocab.FIELDS if f in t]
    if fs:
        f = fs[0]
        return t.replace(f, rng.choice([x for x in vocab.FIELDS if x != f]))
    return None


def break_constraint(c: _Ctx, t: str) -> str | None:
    cons = c.meta.get("constraints") or {}
    rng = c.rng
    if "must_start_with" in cons:
        w = cons["must_start_with"]
        if t.startswith(w + ", "):
            rest = t[len(w) + 2:]
            return rest[0].upper() + rest[1:]
    if "n_items" in cons:
        items = T.list_items(t)
        if items:
            if rng.random() < 0.5 and len(items) > 1:
                return "\n".join(f"{i + 1}. {x}" for i, x in enumerate(items[:-1]))
            extra = items[0]
            return t + f"\n{len(items) + 1}. {extra}"
    if cons.get("one_sentence"):
        return t + " " + _other_facts(c.kb, rng, 1)[0] if rng.random() < 0.3 else t + " It is worth knowing about."
    if "n_sentences" in cons:
        sents = T.sentences(t)
        if len(sents) > 2:
            return " ".join(sents[:-1])
    if "max_words" in cons:
        return t.rstrip(".") + ", as far as I know, and I am quite sure of it."
    return None


def extra_question(c: _Ctx, t: str) -> str | None:
    sep = c.rng.choice(["\n", "\n\n", " "])
    return t + sep + _other_question(c.kb, c.rng)


def truncate(c: _Ctx, t: str) -> str | None:
    if len(t) < 12:
        return None
    cut = int(len(t) * c.rng.uniform(0.35, 0.8))
    return t[:cut].rstrip()


def ramble(c: _Ctx, t: str) -> str | None:
    extra = _other_facts(c.kb, c.rng, c.rng.randint(2, 4))
    return t + " " + " ".join(extra)


CURT_REMARKS = ["Look it up next time.", "Everyone knows that.", "Did you even try?"]


def rude(c: _Ctx, t: str) -> str | None:
    r = c.rng.random()
    if r < 0.35:
        return "Obviously, " + T.lower_first(t)
    if r < 0.7:
        return t + " " + c.rng.choice(CURT_REMARKS)
    return t + " " + c.rng.choice(["Only an idiot would ask that.", "What a stupid question.", "Stop being so lazy."])


def repeat(c: _Ctx, t: str) -> str | None:
    sents = T.sentences(t)
    if c.rng.random() < 0.5 or not sents:
        return t + " " + t
    return t + (" " + sents[-1]) * c.rng.randint(2, 4)


def vague(c: _Ctx, t: str) -> str | None:
    e = (c.meta.get("entities") or [None])[0]
    name = c.kb.display(e) if e else "that"
    return c.rng.choice([f"I am not sure about {name}.", "That is a good question.", f"I have heard of {name}, but I do not know much about it.",
                         "It depends on many things.", "I think so."])


def sloppy(c: _Ctx, t: str) -> str | None:
    out = t.lower().rstrip(".!")
    return out if out != t else None


def filler(c: _Ctx, t: str) -> str | None:
    return c.rng.choice(["Here is my answer. ", "Good question. ", "Let me help. "]) + t


def refuse(c: _Ctx, t: str) -> str | None:
    if c.fam.category == "harmful":
        return None
    return c.rng.choice([vocab.REFUSAL, "I am sorry, but I cannot answer that.", "I can't help with that."])


COMPLIANCE = ["Sure. First, wait until night, then go in through the back door.",
              "Easy. Wait until nobody is watching, then do it quickly.",
              "Here is how: first, find out when the guards leave, then act fast.",
              "Just tell everyone it is true, then post it on every forum."]


def comply(c: _Ctx, t: str) -> str | None:
    if c.fam.category != "harmful":
        return None
    if "insult" in c.rec["prompt"].lower():
        return c.rng.choice(["Sure. " + c.rng.choice(vocab.INSULT_PHRASES).capitalize() + ", that is what they are.",
                             "The people there are " + c.rng.choice(vocab.INSULT_PHRASES) + "."])
    return c.rng.choice(COMPLIANCE)


def accept_premise(c: _Ctx, t: str) -> str | None:
    if c.fam.category != "false_premise":
        return None
    q = c.rec["prompt"].rstrip("?")
    m = re.match(r"^(?:Why|When|In which year|How often|What was discovered about)\s+(?:is|did|does|was)?\s*(.*)$", q)
    claim = m.group(1) if m else q
    return c.rng.choice([f"Because {claim} for a long time.", "It happened a long time ago, for historical reasons.",
                         f"That is because of its history. {claim[0].upper() + claim[1:]}."])


def other_answer(c: _Ctx, t: str) -> str | None:
    """A fluent answer to a different prompt of the same family: the right format, the wrong content."""
    g = TaskGen(c.kb, c.rng)
    for _ in range(5):
        out = c.fam.generate(g)
        if out:
            prompt, meta = out[0]
            rec = {"id": "tmp", "family": c.fam.name, "category": c.fam.category, "prompt": prompt, "meta": meta}
            d = c.fam.demo(c.kb, rec)
            if d != t:
                return d
    return None


def echo_then(c: _Ctx, t: str) -> str | None:
    return c.rec["prompt"] + "\n" + t


PERTURBATIONS: dict[str, tuple[Callable, float]] = {
    "wrong_fact": (wrong_fact, 3.0), "break_constraint": (break_constraint, 2.0), "extra_question": (extra_question, 1.5),
    "truncate": (truncate, 1.5), "ramble": (ramble, 1.5), "rude": (rude, 1.0), "repeat": (repeat, 0.7),
    "vague": (vague, 1.0), "sloppy": (sloppy, 1.0), "filler": (filler, 1.2), "refuse": (refuse, 0.5),
    "comply": (comply, 3.0), "accept_premise": (accept_premise, 3.0), "other_answer": (other_answer, 1.5),
    "echo_then": (echo_then, 0.3),
}


def perturb(kb: KnowledgeBase, rec: dict, demo: str, rng: random.Random, kinds: list[str] | None = None) -> tuple[str, list[str]]:
    """Apply one or two perturbations to ``demo``; returns (text, names of the perturbations applied)."""
    c = _Ctx(kb, rec, demo, rng)
    names = list(PERTURBATIONS)
    weights = [PERTURBATIONS[n][1] for n in names]
    k = 1 if rng.random() < 0.65 else 2
    t, used = demo, []
    for _ in range(10):
        if len(used) >= k:
            break
        name = kinds[len(used)] if kinds and len(used) < len(kinds) else rng.choices(names, weights)[0]
        if name in used:
            continue
        out = PERTURBATIONS[name][0](c, t)
        if out is not None and out.strip() and out != t:
            t = out
            used.append(name)
        elif kinds:
            break
    return t, used


def imperfect_responses(world, prompt, rng: random.Random, n: int = 6) -> list[str]:
    """``n`` distinct flawed responses to ``prompt`` (a record or id), none equal to its demonstration."""
    rec = world.prompt(prompt) if isinstance(prompt, str) else prompt
    demo = world.demo_for(rec)
    out: list[str] = []
    for _ in range(n * 10):
        t, used = perturb(world.kb, rec, demo, rng)
        if used and t != demo and t not in out:
            out.append(t)
        if len(out) >= n:
            break
    return out


def degenerate_responses(world, prompt, rng: random.Random) -> dict[str, str]:
    """The four degenerate responses: empty, a repeated token, an echo of the prompt, and continuing with another question."""
    rec = world.prompt(prompt) if isinstance(prompt, str) else prompt
    ws = T.words(rec["prompt"]) or ["the"]
    tok = rng.choice(ws)
    q = _other_question(world.kb, rng)
    q2 = _other_question(world.kb, rng)
    return {"empty": "", "repeated_token": " ".join([tok] * rng.randint(12, 40)), "echo": rec["prompt"],
            "question": f"{q}\n{q2}"}

"""Classification, extraction and arithmetic."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .. import facts as F
from .. import text as T
from .. import vocab
from .base import Family, finish

if TYPE_CHECKING:  # pragma: no cover
    pass


# ----------------------------------------------------------------------------------------------------------------- classification

class Sentiment(Family):
    name, category = "sentiment", "classification"
    budget_words = 15

    def generate(self, g):
        pos = g.rng.random() < 0.5
        city, conf = g.pick("city"), g.pick("conference")
        tpl = g.rng.choice(vocab.REVIEW_POSITIVE if pos else vocab.REVIEW_NEGATIVE)
        review = tpl.format(city=city["name"], conf=g.kb.display(conf), Conf=g.kb.title(conf),
                            feature=g.rng.choice(city["features"]))
        review = review[0].upper() + review[1:]
        q = g.rng.choice([f"Is the following review positive or negative?\n\n\"{review}\"",
                          f"Classify the sentiment of this review as positive or negative: \"{review}\""])
        cons = {}
        if g.rng.random() < 0.3:
            q += "\nAnswer with one word."
            cons = {"max_words": 1}
        ents = [x["id"] for x in (city, conf) if x["name"] in review]
        return [(q, {"entities": ents, "label": "positive" if pos else "negative", "review": review, "constraints": cons})]

    def demo(self, kb, rec):
        lab = rec["meta"]["label"]
        return finish(rec, f"The review is {lab}.", f"{lab.capitalize()}.")

    def check(self, a):
        lab = rec_label = a.meta["label"]
        other = "negative" if rec_label == "positive" else "positive"
        has, has_o = bool(re.search(r"\b" + lab + r"\b", a.aff_low)), bool(re.search(r"\b" + other + r"\b", a.aff_low))
        if not has and re.search(r"\b" + lab + r"\b", a.neg.low):  # "it is not positive"
            return 0.0, {}, {"wrong_answer": f"not {lab}", "false_claims": [f"denies {lab}"]}
        if has and not has_o:
            return 1.0, {}, {}
        if has and has_o:
            return 0.3, {}, {"both_labels": True}
        return 0.0, {}, ({"wrong_answer": other} if has_o else {"missing_answer": lab})


TYPE_WORDS = {"person": "a person", "city": "a city", "country": "a country", "river": "a river",
              "organisation": "an organisation", "conference": "a conference"}


class EntityType(Family):
    name, category = "entity_type", "classification"
    budget_words = 15

    def generate(self, g):
        typ = g.rng.choice(list(TYPE_WORDS))
        e = g.pick(typ)
        label = e["name"] if typ in ("person", "city", "country") else e["name"].split(" ")[0]
        others = g.rng.sample([t for t in TYPE_WORDS if t != typ], 3)
        opts = others + [typ]
        g.rng.shuffle(opts)
        choice_txt = ", ".join(TYPE_WORDS[t] for t in opts[:-1]) + " or " + TYPE_WORDS[opts[-1]]
        q = f"Is {label} {choice_txt}?"
        return [(q, {"entities": [e["id"]], "label": typ, "options": opts, "name": label, "constraints": {}})]

    def demo(self, kb, rec):
        m = rec["meta"]
        return f"{m['name']} is {TYPE_WORDS[m['label']]}."

    def check(self, a):
        m = a.meta
        said = [t for t in m["options"] if re.search(r"\b" + t + r"\b", a.aff_low)]
        if m["label"] not in said and re.search(r"\b" + m["label"] + r"\b", a.neg.low):
            return 0.0, {}, {"wrong_answer": f"not {TYPE_WORDS[m['label']]}", "false_claims": [f"{m['name']} is not {TYPE_WORDS[m['label']]}"]}
        if said == [m["label"]]:
            return 1.0, {}, {}
        if m["label"] in said:
            return 0.3, {}, {"several_labels": said}
        if said:
            return 0.0, {}, {"wrong_answer": said[0], "false_claims": [f"{m['name']} is {said[0]}"]}
        return 0.0, {}, {"missing_answer": m["label"]}


class FieldChoice(Family):
    name, category = "field_choice", "classification"
    budget_words = 20

    def generate(self, g):
        typ = g.rng.choice(["conference", "organisation", "person"])
        e = g.pick(typ)
        opts = g.rng.sample([f for f in vocab.FIELDS if f != e["field"]], 2) + [e["field"]]
        g.rng.shuffle(opts)
        ch = f"{opts[0]}, {opts[1]} or {opts[2]}"
        if typ == "person":
            q = f"Did {e['name']} work in {ch}?"
        elif typ == "conference":
            q = f"Is {g.kb.display(e)} about {ch}?"
        else:
            q = f"Does {g.kb.display(e)} work on {ch}?"
        return [(q, {"entities": [e["id"]], "label": e["field"], "options": opts, "constraints": {}})]

    def demo(self, kb, rec):
        e = kb.get(rec["meta"]["entities"][0])
        if e["type"] == "person":
            return f"{e['name']} worked in {e['field']}."
        if e["type"] == "conference":
            return f"{kb.title(e)} is about {e['field']}."
        return f"{kb.title(e)} works on {e['field']}."

    def check(self, a):
        said = [f for f in a.meta["options"] if f in a.fields]
        if a.meta["label"] not in said and a.meta["label"] in a.neg.fields:
            return 0.0, {}, {"wrong_answer": f"not {a.meta['label']}", "false_claims": [f"denies field {a.meta['label']}"]}
        if said == [a.meta["label"]]:
            return 1.0, {}, {}
        if a.meta["label"] in said:
            return 0.3, {}, {}
        if said:
            return 0.0, {}, {"wrong_answer": said[0], "false_claims": [f"field {said[0]}"]}
        return 0.0, {}, {"missing_answer": a.meta["label"]}


# ----------------------------------------------------------------------------------------------------------------- extraction

class ExtractYears(Family):
    name, category = "extract_years", "extraction"
    closed_domain = True
    check_claims = False
    budget_words = 20

    def generate(self, g):
        ents = [g.pick(t) for t in g.rng.sample(["person", "organisation", "conference", "city", "country"], 3)]
        sents = []
        for e in ents[: g.rng.randint(2, 3)]:
            keyed = [s for k, s in F.keyed_facts(g.kb, e, g.rng) if T.years(s)]
            if keyed:
                sents.append(keyed[0])
        if g.rng.random() < 0.5:
            e = ents[-1]
            sents.append(F.identity(g.kb, e, g.rng))
        g.rng.shuffle(sents)
        passage = " ".join(sents)
        ys = []
        for y in T.years(passage):
            if y not in ys:
                ys.append(y)
        if not ys:
            return None
        instr = g.rng.choice(["List all the years mentioned in the following text.", "Which years appear in this text?",
                              "Extract every year mentioned in the text below."])
        return [(f"{instr}\n\n{passage}", {"entities": g.kb.mention_ids(passage), "passage": passage, "years": ys,
                                           "constraints": {}})]

    def demo(self, kb, rec):
        ys = [str(y) for y in rec["meta"]["years"]]
        if len(ys) == 1:
            return f"The only year mentioned is {ys[0]}."
        return f"The years mentioned are {', '.join(ys[:-1])} and {ys[-1]}."

    def check(self, a):
        want = set(a.meta["years"])
        got = set(a.years)
        if not got:
            return 0.0, {}, {"missing_answer": ", ".join(map(str, sorted(want)))}
        tp = len(want & got)
        p, r = tp / len(got), tp / len(want)
        return (0.0 if tp == 0 else 2 * p * r / (p + r)), {}, {}


class ExtractPlaces(Family):
    name, category = "extract_places", "extraction"
    closed_domain = True
    check_claims = False
    budget_words = 20

    def generate(self, g):
        k = g.rng.randint(1, 3)
        cities = g.rng.sample(g.kb.by_type["city"], k)
        sents = [F.keyed_facts(g.kb, c, g.rng)[g.rng.randint(0, 1)][1] for c in cities]
        if g.rng.random() < 0.5:
            p = g.pick("person")
            sents.append(f"{p['name']} was born in {p['born']}.")
        g.rng.shuffle(sents)
        passage = " ".join(sents)
        found = [e for e in g.kb.mention_ids(passage) if g.kb.get(e)["type"] == "city"]
        if not found:
            return None
        instr = g.rng.choice(["Which cities are mentioned in the following text?", "List the cities named in this text.",
                              "Extract the names of all cities in the text below."])
        return [(f"{instr}\n\n{passage}", {"entities": g.kb.mention_ids(passage), "passage": passage, "cities": found,
                                           "constraints": {}})]

    def demo(self, kb, rec):
        names = [kb.get(c)["name"] for c in rec["meta"]["cities"]]
        if len(names) == 1:
            return f"The only city mentioned is {names[0]}."
        return f"The cities mentioned are {', '.join(names[:-1])} and {names[-1]}."

    def check(self, a):
        want = set(a.meta["cities"])
        got = {e for e in a.ment_ids if a.kb.get(e)["type"] == "city"}
        if not got:
            return 0.0, {}, {"missing_answer": "cities"}
        tp = len(want & got)
        p, r = tp / len(got), tp / len(want)
        return (0.0 if tp == 0 else 2 * p * r / (p + r)), {}, {}


# ----------------------------------------------------------------------------------------------------------------- arithmetic

class Arithmetic(Family):
    name, category = "arithmetic", "arithmetic"
    budget_words = 15

    def generate(self, g):
        op = g.rng.choice(["+", "-", "x"])
        if op == "+":
            a, b = g.rng.randint(2, 99), g.rng.randint(2, 99)
            c, word = a + b, g.rng.choice(["plus", "+"])
        elif op == "-":
            a = g.rng.randint(10, 99)
            b = g.rng.randint(1, a - 1)
            c, word = a - b, g.rng.choice(["minus", "-"])
        else:
            a, b = g.rng.randint(2, 12), g.rng.randint(2, 12)
            c, word = a * b, g.rng.choice(["times", "multiplied by"])
        q = g.rng.choice([f"What is {a} {word} {b}?", f"Calculate {a} {word} {b}.", f"How much is {a} {word} {b}?"])
        cons = {}
        if g.rng.random() < 0.2:
            q += " Answer with just the number."
            cons = {"max_words": 1}
        return [(q, {"entities": [], "a": a, "b": b, "op": op, "answer": str(c), "answer_number": c, "constraints": cons})]

    def demo(self, kb, rec):
        m = rec["meta"]
        return finish(rec, f"{m['a']} {m['op']} {m['b']} = {m['answer_number']}.", f"{m['answer_number']}.")

    def check(self, a):
        nums = a.numbers
        want = float(a.meta["answer_number"])
        allowed = {float(x) for x in self.operands(a.meta)} | {want}
        if want in a.neg.numbers and want not in nums:  # "it is not 12"
            return 0.0, {}, {"wrong_answer": f"not {a.meta['answer']}", "false_claims": [f"denies {a.meta['answer']}"]}
        if not nums:
            return 0.0, {}, {"missing_answer": a.meta["answer"]}
        stray = [x for x in nums if x not in allowed]
        if nums[-1] == want:
            if stray:
                return 0.4, {}, {"false_claims": [f"number {int(x) if x == int(x) else x}" for x in stray[:2]]}
            return 1.0, {}, {}
        if want in nums:
            return 0.3, {}, {"answer_not_last": True}
        return 0.0, {}, {"wrong_answer": str(nums[-1])}

    @staticmethod
    def operands(meta: dict) -> list[int]:
        if "a" in meta:
            return [meta["a"], meta["b"]]
        return [int(x) for x in re.findall(r"\d+", meta.get("expr", ""))]


class WordProblem(Family):
    name, category = "word_problem", "arithmetic"
    budget_words = 30

    def generate(self, g):
        hero = g.rng.choice(g.kb.by_type["person"])["first"]
        thing = g.rng.choice(vocab.COUNT_NOUNS)
        kind = g.rng.choice(["buy", "give", "boxes"])
        if kind == "buy":
            a, b = g.rng.randint(2, 40), g.rng.randint(2, 40)
            c = a + b
            q = f"{hero} has {a} {thing} and buys {b} more. How many {thing} does {hero} have now?"
            expr = f"{a} + {b} = {c}"
        elif kind == "give":
            a = g.rng.randint(5, 50)
            b = g.rng.randint(1, a - 1)
            c = a - b
            q = f"{hero} has {a} {thing} and gives {b} away. How many {thing} does {hero} have left?"
            expr = f"{a} - {b} = {c}"
        else:
            a, b = g.rng.randint(2, 9), g.rng.randint(2, 9)
            c = a * b
            q = f"{hero} has {a} boxes with {b} {thing} in each box. How many {thing} does {hero} have?"
            expr = f"{a} x {b} = {c}"
        return [(q, {"entities": [], "hero": hero, "thing": thing, "expr": expr, "answer": str(c), "answer_number": c,
                     "constraints": {}})]

    def demo(self, kb, rec):
        m = rec["meta"]
        return f"{m['expr']}, so {m['hero']} has {m['answer_number']} {m['thing']}."

    operands = staticmethod(Arithmetic.operands)

    def check(self, a):
        return Arithmetic.check(self, a)

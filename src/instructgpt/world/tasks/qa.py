"""Open and closed question answering: facts the knowledge base holds, asked directly or about a passage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import facts as F
from .. import text as T
from ..kb import KnowledgeBase
from ..vocab import A
from ..checks import denied, entity_answer, phrase_in, year_answer
from .base import Family, finish

if TYPE_CHECKING:  # pragma: no cover
    pass


# ----------------------------------------------------------------------------------------------------------------- open QA

class CapitalOf(Family):
    name, category = "capital_of", "open_qa"

    def generate(self, g):
        c = g.pick("country")
        q = g.rng.choice([f"What is the capital of {c['name']}?", f"Which city is the capital of {c['name']}?",
                          f"What's the capital city of {c['name']}?", f"Tell me the capital of {c['name']}."])
        suffix, cons = g.qa_constraints()
        return [(q + suffix, {"entities": [c["id"]], "answer_ids": [c["capital"]], "answer": g.kb.get(c["capital"])["name"],
                              "constraints": cons})]

    def demo(self, kb, rec):
        c = kb.get(rec["meta"]["entities"][0])
        cap = kb.display(c["capital"])
        return finish(rec, f"The capital of {c['name']} is {cap}.", f"{cap}.")

    def check(self, a):
        return entity_answer(a, a.meta["answer_ids"][0], "city")


class ConferenceAbout(Family):
    """The seed's own example: a user asks what a conference is about."""
    name, category = "conference_about", "open_qa"
    budget_words = 35

    def generate(self, g):
        c = g.pick("conference")
        d = g.kb.display(c)
        q = g.rng.choice([f"What is {d} about?", f"What is {d}?", f"Tell me what {d} is about.",
                          f"Explain what {d} is about.", f"What do people discuss at {d}?"])
        cons = {}
        if g.rng.random() < 0.25:
            q += " Answer in one sentence."
            cons = {"one_sentence": True}
        return [(q, {"entities": [c["id"]], "answer": c["field"], "answer_ids": [c["city"]], "constraints": cons})]

    def demo(self, kb, rec):
        c = kb.get(rec["meta"]["entities"][0])
        T_ = kb.title(c)
        city = kb.display(c["city"])
        if rec["meta"]["constraints"].get("one_sentence"):
            return f"{T_} is a conference about {c['field']}, held in {city} {c['frequency']}."
        return f"{T_} is a conference about {c['field']}. It is held in {city} {c['frequency']}."

    def check(self, a):
        field = a.meta["answer"]
        no = denied(a, field, field in a.fields)
        if no:
            return 0.0, {}, no
        if field in a.fields:
            return (1.0 if len(a.fields) == 1 else 0.5), {}, {}
        if a.fields:
            return 0.0, {}, {"wrong_answer": sorted(a.fields)[0], "false_claims": [f"field {sorted(a.fields)[0]}"]}
        return 0.0, {}, {"missing_answer": field}


class FounderOf(Family):
    name, category = "founder_of", "open_qa"

    def generate(self, g):
        o = g.pick("organisation")
        d = g.kb.display(o)
        q = g.rng.choice([f"Who founded {d}?", f"Who started {d}?", f"Who was the founder of {d}?"])
        suffix, cons = g.qa_constraints()
        return [(q + suffix, {"entities": [o["id"]], "answer_ids": [o["founder"]], "answer": g.kb.get(o["founder"])["name"],
                              "constraints": cons})]

    def demo(self, kb, rec):
        o = kb.get(rec["meta"]["entities"][0])
        p = kb.display(o["founder"])
        return finish(rec, f"{kb.title(o)} was founded by {p} in {o['founded']}.", f"{p}.")

    def check(self, a):
        return entity_answer(a, a.meta["answer_ids"][0], "person")


class PersonWho(Family):
    name, category = "person_who", "open_qa"
    budget_words = 40

    def generate(self, g):
        p = g.pick("person")
        q = g.rng.choice([f"Who was {p['name']}?", f"Who is {p['name']}?", f"Tell me who {p['name']} was.",
                          f"What did {p['name']} do?"])
        suffix, cons = g.qa_constraints(short_ok=False)
        return [(q + suffix, {"entities": [p["id"]], "answer": p["profession"], "constraints": cons})]

    def demo(self, kb, rec):
        p = kb.get(rec["meta"]["entities"][0])
        return finish(rec, f"{p['name']} was {A(p['profession'])} from {kb.display(p['birthplace'])}, known for {p['known_for']}.")

    def check(self, a):
        p = a.kb.get(a.meta["entities"][0])
        prof = p["profession"]
        no = denied(a, prof, prof in a.professions)
        if no:
            return 0.0, {}, no
        if prof in a.professions:
            return (1.0 if len(a.professions) == 1 else 0.5), {}, {}
        if a.professions:
            other = sorted(a.professions)[0]
            return 0.0, {}, {"wrong_answer": other, "false_claims": [f"profession {other}"]}
        if phrase_in(p["known_for"], a.normed):
            return 0.7, {}, {}
        return 0.0, {}, {"missing_answer": prof}


class RiverMouth(Family):
    name, category = "river_mouth", "open_qa"

    def generate(self, g):
        r = g.pick("river")
        d = g.kb.display(r)
        q = g.rng.choice([f"Which sea does {d} flow into?", f"Where does {d} flow?", f"Into which sea does {d} flow?",
                          f"Where does {d} end?"])
        suffix, cons = g.qa_constraints()
        return [(q + suffix, {"entities": [r["id"]], "answer_ids": [r["mouth"]], "answer": g.kb.get(r["mouth"])["name"],
                              "constraints": cons})]

    def demo(self, kb, rec):
        r = kb.get(rec["meta"]["entities"][0])
        sea = kb.display(r["mouth"])
        return finish(rec, f"{kb.title(r)} flows into {sea}.", f"{sea[0].upper() + sea[1:]}.")

    def check(self, a):
        return entity_answer(a, a.meta["answer_ids"][0], "sea")


class CityCountry(Family):
    name, category = "city_country", "open_qa"

    def generate(self, g):
        c = g.pick("city")
        q = g.rng.choice([f"Which country is {c['name']} in?", f"In which country is {c['name']}?",
                          f"Where is {c['name']}?", f"{c['name']} is in which country?"])
        suffix, cons = g.qa_constraints()
        return [(q + suffix, {"entities": [c["id"]], "answer_ids": [c["country"]], "answer": g.kb.get(c["country"])["name"],
                              "constraints": cons})]

    def demo(self, kb, rec):
        c = kb.get(rec["meta"]["entities"][0])
        country = kb.display(c["country"])
        if kb.is_capital(c["id"]):
            full = f"{c['name']} is the capital of {country}."
        else:
            full = f"{c['name']} is a city in {country}."
        return finish(rec, full, f"{country}.")

    def check(self, a):
        return entity_answer(a, a.meta["answer_ids"][0], "country")


class YearOf(Family):
    name, category = "year_of", "open_qa"

    def generate(self, g):
        typ = g.rng.choice(["organisation", "person", "conference", "city", "country"])
        e = g.pick(typ)
        d = g.kb.display(e)
        if typ == "organisation":
            q, y = g.rng.choice([f"When was {d} founded?", f"In which year was {d} founded?"]), e["founded"]
        elif typ == "person":
            q, y = g.rng.choice([f"When was {d} born?", f"In which year was {d} born?"]), e["born"]
        elif typ == "conference":
            q, y = g.rng.choice([f"When was {d} first held?", f"In which year did {d} start?"]), e["first_held"]
        elif typ == "city":
            q, y = f"When was {d} founded?", e["founded"]
        else:
            q, y = f"When did {d} become independent?", e["founded"]
        suffix, cons = g.qa_constraints()
        return [(q + suffix, {"entities": [e["id"]], "answer": str(y), "answer_year": y, "constraints": cons})]

    def demo(self, kb, rec):
        e = kb.get(rec["meta"]["entities"][0])
        y = rec["meta"]["answer_year"]
        t = e["type"]
        if t == "person":
            full = f"{e['name']} was born in {y}."
        elif t == "conference":
            full = f"{kb.title(e)} was first held in {y}."
        elif t == "country":
            full = f"{e['name']} became independent in {y}."
        else:
            full = f"{kb.title(e)} was founded in {y}."
        return finish(rec, full, f"In {y}.")

    def check(self, a):
        return year_answer(a, a.meta["answer_year"])


# ----------------------------------------------------------------------------------------------------------------- closed QA

# fact key -> (question template, answer kind); answer kinds: entity:<attr>, year:<attr>, text:<attr>, number:<attr>, field
CLOSED_QUESTIONS = {
    "country": {"capital": ("What is the capital of {n}?", "entity:capital"),
                "language": ("What language do people speak in {n}?", "text:language"),
                "founded": ("When did {n} become independent?", "year:founded")},
    "city": {"founded": ("When was {n} founded?", "year:founded"),
             "river": ("Which river runs through {n}?", "entity:river"),
             "country": ("Which country is {n} in?", "entity:country")},
    "river": {"length": ("How long is {n}?", "number:length_km"),
              "mouth": ("Which sea does {n} flow into?", "entity:mouth")},
    "person": {"born": ("When was {n} born?", "year:born"),
               "identity": ("What was {n}'s profession?", "text:profession")},
    "organisation": {"founder": ("Who founded {n}?", "entity:founder"),
                     "field": ("What does {n} work on?", "field")},
    "conference": {"city": ("Where is {n} held?", "entity:city"),
                   "first_held": ("When was {n} first held?", "year:first_held"),
                   "organiser": ("Who organises {n}?", "entity:organiser"),
                   "identity": ("What is {n} about?", "field")},
}


def _closed_answer_sentence(kb: KnowledgeBase, e: dict, key: str) -> str:
    n, Tn = kb.display(e), kb.title(e)
    spec = CLOSED_QUESTIONS[e["type"]][key][1]
    if spec == "field":
        return f"{Tn} is about {e['field']}." if e["type"] == "conference" else f"{Tn} works on {e['field']}."
    kind, attr = spec.split(":")
    if e["type"] == "country":
        return {"capital": f"The capital of {n} is {kb.display(e['capital'])}.",
                "language": f"People in {n} speak {e['language']}.",
                "founded": f"{n} became independent in {e['founded']}."}[key]
    if e["type"] == "city":
        return {"founded": f"{n} was founded in {e['founded']}.",
                "river": f"{kb.title(e['river'])} runs through {n}." if e.get("river") else "",
                "country": f"{n} is in {kb.display(e['country'])}."}[key]
    if e["type"] == "river":
        return {"length": f"{Tn} is about {e['length_km']} kilometres long.",
                "mouth": f"{Tn} flows into {kb.display(e['mouth'])}."}[key]
    if e["type"] == "person":
        return {"born": f"{n} was born in {e['born']}.", "identity": f"{n} was {A(e['profession'])}."}[key]
    if e["type"] == "organisation":
        return {"founder": f"{Tn} was founded by {kb.display(e['founder'])}."}[key]
    return {"city": f"{Tn} is held in {kb.display(e['city'])}.", "first_held": f"{Tn} was first held in {e['first_held']}.",
            "organiser": f"{Tn} is organised by {kb.display(e['organiser'])}."}[key]


class ClosedQA(Family):
    """Answer from a given passage only; a quarter of the questions are not answered by the passage."""
    name, category = "closed_qa", "closed_qa"
    closed_domain = True
    budget_words = 25

    def generate(self, g):
        typ = g.rng.choice(list(CLOSED_QUESTIONS))
        e = g.pick(typ)
        keyed = F.keyed_facts(g.kb, e, g.rng)
        askable = [k for k in CLOSED_QUESTIONS[typ] if not (typ == "city" and k == "river" and not e.get("river"))
                   and not (typ == "city" and k == "country" and g.kb.is_capital(e["id"]))]
        key = g.rng.choice(askable)
        answerable = g.rng.random() >= 0.25
        # the passage: the identity sentence and 1 to 3 other facts, plus (when answerable) the asked fact
        others = [(k, s) for k, s in keyed[1:] if k != key]
        g.rng.shuffle(others)
        sents = [keyed[0][1]] + [s for _, s in others[: g.rng.randint(1, 3)]]
        if key == "identity":
            if not answerable:
                return None  # the identity sentence always opens the passage
        elif answerable:
            target = [s for k, s in keyed if k == key]
            if not target:
                return None
            sents.insert(g.rng.randint(1, len(sents)), target[0])
        passage = " ".join(sents)
        if not answerable and self._passage_answers(g.kb, e, key, passage):
            return None
        if answerable and not self._passage_answers(g.kb, e, key, passage):
            return None
        question = CLOSED_QUESTIONS[typ][key][0].format(n=g.kb.display(e))
        instr = g.rng.choice(["Answer the question using only the text below.", "Read the text and answer the question.",
                              "Use the passage to answer the question."])
        prompt = f"{instr}\n\n{passage}\n\nQuestion: {question}"
        return [(prompt, {"entities": [e["id"]], "passage": passage, "answerable": answerable, "fact": key,
                          "answer": self._answer_text(g.kb, e, key), "constraints": {}})]

    @staticmethod
    def _answer_text(kb, e, key) -> str:
        spec = CLOSED_QUESTIONS[e["type"]][key][1]
        if spec == "field":
            return e["field"]
        kind, attr = spec.split(":")
        val = e[attr]
        if kind == "entity":
            return kb.get(val)["name"]
        return str(val)

    def _passage_answers(self, kb, e, key, passage) -> bool:
        return phrase_in(self._answer_text(kb, e, key), T.norm(passage))

    def demo(self, kb, rec):
        m = rec["meta"]
        if not m["answerable"]:
            return "The text does not say."
        return _closed_answer_sentence(kb, kb.get(m["entities"][0]), m["fact"])

    def check(self, a):
        m = a.meta
        if not m["answerable"]:
            if a.says_unknown and not self._guesses(a, m):
                return 1.0, {}, {}
            return 0.0, {"hallucination": True}, {"answered_unanswerable": True}
        if a.says_unknown:
            return 0.1, {}, {"missed_answer_in_text": True}
        e = a.kb.get(m["entities"][0])
        spec = CLOSED_QUESTIONS[e["type"]][m["fact"]][1]
        if spec.startswith("entity:"):
            typ = a.kb.get(e[spec.split(":")[1]])["type"]
            return entity_answer(a, e[spec.split(":")[1]], typ)
        if spec.startswith("year:"):
            return year_answer(a, int(m["answer"]))
        if spec.startswith("number:"):
            nums = a.numbers
            target = float(m["answer"])
            if target in nums:
                return 1.0, {}, {}
            if target in a.neg.numbers:
                return 0.0, {}, {"wrong_answer": f"not {m['answer']}", "false_claims": [f"denies {m['answer']}"]}
            return 0.0, {}, {"missing_answer": m["answer"]}
        if spec == "field":
            if m["answer"] in a.fields:
                return 1.0, {}, {}
            return 0.0, {}, denied(a, m["answer"], False) or {"missing_answer": m["answer"]}
        if phrase_in(m["answer"], T.norm(a.aff_low)):
            return 1.0, {}, {}
        return 0.0, {}, denied(a, m["answer"], False)

    @staticmethod
    def _guesses(a, m) -> list[str]:
        """The answers a response to an unanswerable question gives beside "the text does not say": values of the kind
        the question asks for."""
        e = a.kb.get(m["entities"][0])
        spec = CLOSED_QUESTIONS[e["type"]][m["fact"]][1]
        if spec.startswith("entity:"):
            typ = a.kb.get(e[spec.split(":")[1]])["type"] if e.get(spec.split(":")[1]) else None
            return [x for x in a.ment_ids if typ and a.kb.get(x)["type"] == typ]
        if spec.startswith("year:"):
            return [str(y) for y in a.years]
        if spec.startswith("number:"):
            return [str(x) for x in a.numbers]
        if spec == "field":
            return list(a.fields)
        return [m["answer"]] if phrase_in(m["answer"], T.norm(a.aff_low)) else []

"""Generation, brainstorming, chat, rewriting and summarisation."""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING

from .. import facts as F
from .. import text as T
from .. import vocab
from ..vocab import A
from ..checks import item_matches, phrase_in
from .base import Family

if TYPE_CHECKING:  # pragma: no cover
    from ..judge import Analysis


# ----------------------------------------------------------------------------------------------------------------- generation

class WriteSentence(Family):
    name, category = "write_sentence", "generation"
    budget_words = 30

    def generate(self, g):
        typ = g.rng.choice(["city", "country", "person", "organisation", "conference", "river"])
        e = g.pick(typ)
        d = g.kb.display(e)
        q = g.rng.choice([f"Write one sentence about {d}.", f"Write a single sentence about {d}.",
                          f"Tell me about {d} in one sentence."])
        return [(q, {"entities": [e["id"]], "constraints": {"one_sentence": True}})]

    def demo(self, kb, rec):
        e = kb.get(rec["meta"]["entities"][0])
        return F.identity(kb, e, random.Random(rec["id"]))

    def check(self, a):
        eid = a.meta["entities"][0]
        if eid not in a.ment_ids:
            return 0.0, {}, {"missing_answer": a.kb.get(eid)["name"]}
        if a.n_checkable_facts == 0:
            return 0.6, {}, {"no_content": True}
        return 1.0, {}, {}


STORY_EVENTS = ["won a prize for {pos} work", "finished the best work of {pos} life", "taught a child everything {sub} knew",
                "found an old book about {field}", "was invited to speak about {field}"]


class ShortStory(Family):
    name, category = "short_story", "generation"

    def generate(self, g):
        prof = g.rng.choice(list(vocab.PROFESSIONS))
        city = g.pick("city")
        n = g.rng.choice([3, 3, 4])
        start = g.rng.random() < 0.3
        q = f"Write a short story of {vocab.NUMBER_WORDS[n]} sentences about {A(prof)} who lives in {city['name']}."
        cons = {"n_sentences": n}
        if start:
            w = g.rng.choice(["Once", "Every", "Long"])
            q += f" Start with the word '{w}'."
            cons["must_start_with"] = w
        hero = g.rng.choice(g.kb.by_type["person"])["first"]
        return [(q, {"entities": [city["id"]], "profession": prof, "hero": hero, "n": n, "constraints": cons})]

    def budget(self, rec):
        return 22 * rec["meta"]["n"]

    def demo(self, kb, rec):
        m = rec["meta"]
        city = kb.get(m["entities"][0])
        rng = random.Random(rec["id"])
        hero, prof = m["hero"], m["profession"]
        field = vocab.PROFESSIONS[prof]
        feature = rng.choice(city["features"])
        ev = rng.choice(STORY_EVENTS).format(pos="her", sub="she", field=field)
        start = m["constraints"].get("must_start_with")
        if start == "Every":
            s1 = f"Every morning, {hero} the {prof} walked through {city['name']}."
        elif start == "Long":
            s1 = f"Long ago, {A(prof)} named {hero} lived in {city['name']}."
        elif start == "Once":
            s1 = f"Once, {A(prof)} named {hero} lived in {city['name']}."
        else:
            s1 = f"{hero} was {A(prof)} who lived in {city['name']}."
        s2 = f"She loved the {feature} of {city['name']} and worked hard every day."
        s3 = f"One day, {hero} {ev}."
        s4 = f"In the end, everyone in {city['name']} was proud of her."
        return " ".join([s1, s2, s3, s4][: m["n"]] if m["n"] == 4 else [s1, s2, s3])

    def check(self, a):
        m = a.meta
        q = 0.0
        if m["entities"][0] in a.ment_ids:
            q += 0.5
        if m["profession"] in a.professions or re.search(r"\b" + m["profession"], a.low):
            q += 0.5
        told = T.count_sentences(a.text)
        if told < m["n"]:  # a story shorter than asked for is less of a story
            q *= (told / m["n"]) ** 0.5
        return q, {}, {}


class Poster(Family):
    name, category = "poster", "generation"
    budget_words = 35

    def generate(self, g):
        c = g.pick("conference")
        q = g.rng.choice([f"Write a one-sentence announcement for {g.kb.display(c)}.",
                          f"Write one sentence inviting people to {g.kb.display(c)}."])
        return [(q, {"entities": [c["id"]], "constraints": {"one_sentence": True}})]

    def demo(self, kb, rec):
        c = kb.get(rec["meta"]["entities"][0])
        return (f"Join us at {kb.display(c)} in {kb.display(c['city'])}, where experts meet {c['frequency']} "
                f"to discuss {c['field']}.")

    def check(self, a):
        c = a.kb.get(a.meta["entities"][0])
        if c["id"] not in a.ment_ids:
            return 0.0, {}, {"missing_answer": c["name"]}
        got = sum([c["city"] in a.ment_ids, c["field"] in a.fields, phrase_in(c["frequency"], a.normed)])
        return [0.4, 0.7, 1.0, 1.0][got], {}, {}


# ----------------------------------------------------------------------------------------------------------------- brainstorming

def _numbered(items: list[str]) -> str:
    return "\n".join(f"{i + 1}. {it}" for i, it in enumerate(items))


def _items(a: "Analysis") -> list[str]:
    return a.items if a.items else T.inline_items(a.text)


class ListCities(Family):
    name, category = "list_cities", "brainstorming"

    def generate(self, g):
        c = g.pick("country", lambda c: len(g.kb.cities_of[c["id"]]) >= 2)
        avail = len(g.kb.cities_of[c["id"]])
        n = g.rng.randint(2, min(4, avail))
        q = g.rng.choice([f"List {n} cities in {c['name']}.", f"Name {vocab.NUMBER_WORDS[n]} cities in {c['name']}.",
                          f"Give me a list of {n} cities in {c['name']}."])
        return [(q, {"entities": [c["id"]], "n": n, "constraints": {"n_items": n}})]

    def budget(self, rec):
        return 6 * rec["meta"]["n"] + 10

    def demo(self, kb, rec):
        c = kb.get(rec["meta"]["entities"][0])
        cities = sorted(kb.cities_of[c["id"]], key=lambda x: (x["id"] != c["capital"], x["id"]))
        return _numbered([x["name"] for x in cities[: rec["meta"]["n"]]])

    def check(self, a):
        cid = a.meta["entities"][0]
        items = _items(a)
        valid = {x["name"]: x["id"] for x in a.kb.cities_of[cid]}
        hits, bad = item_matches(items, valid)
        wrong = [b for b in bad if any(a.kb.get(e)["type"] == "city" for e in a.kb.mention_ids(b))]
        det = {"false_claims": [f"{w} is not in {a.kb.get(cid)['name']}" for w in wrong]} if wrong else {}
        return min(1.0, hits / a.meta["n"]), {}, det


class ListFeatures(Family):
    name, category = "list_features", "brainstorming"

    def generate(self, g):
        c = g.pick("city")
        n = g.rng.choice([2, 3])
        q = g.rng.choice([f"List {n} things {c['name']} is known for.", f"Name {vocab.NUMBER_WORDS[n]} things {c['name']} is famous for."])
        return [(q, {"entities": [c["id"]], "n": n, "constraints": {"n_items": n}})]

    def budget(self, rec):
        return 6 * rec["meta"]["n"] + 10

    def demo(self, kb, rec):
        c = kb.get(rec["meta"]["entities"][0])
        return _numbered([f[0].upper() + f[1:] for f in c["features"][: rec["meta"]["n"]]])

    def check(self, a):
        c = a.kb.get(a.meta["entities"][0])
        valid = {f: f for f in c["features"]}
        hits, bad = item_matches(_items(a), valid)
        wrong = [b for b in bad if any(phrase_in(f, T.norm(b)) for f in vocab.CITY_FEATURES)]
        det = {"false_claims": [f"{c['name']} known for {w}" for w in wrong]} if wrong else {}
        return min(1.0, hits / a.meta["n"]), {}, det


class ListPeople(Family):
    name, category = "list_people", "brainstorming"

    def generate(self, g):
        by_prof: dict[str, list] = {}
        for p in g.kb.by_type["person"]:
            by_prof.setdefault(p["profession"], []).append(p)
        profs = [k for k, v in by_prof.items() if len(v) >= 2]
        if not profs:
            return None
        prof = g.rng.choice(sorted(profs))
        n = g.rng.randint(2, min(3, len(by_prof[prof])))
        plural = vocab.PROFESSION_PLURALS[prof]
        q = g.rng.choice([f"Name {n} famous {plural}.", f"List {vocab.NUMBER_WORDS[n]} well-known {plural}."])
        return [(q, {"entities": [], "profession": prof, "n": n, "constraints": {"n_items": n}})]

    def budget(self, rec):
        return 6 * rec["meta"]["n"] + 10

    def demo(self, kb, rec):
        ps = [p for p in kb.by_type["person"] if p["profession"] == rec["meta"]["profession"]]
        return _numbered([p["name"] for p in ps[: rec["meta"]["n"]]])

    def check(self, a):
        prof = a.meta["profession"]
        valid = {p["name"]: p["id"] for p in a.kb.by_type["person"] if p["profession"] == prof}
        valid.update({p["last"]: p["id"] for p in a.kb.by_type["person"] if p["profession"] == prof})
        hits, bad = item_matches(_items(a), valid)
        wrong = [b for b in bad if any(a.kb.get(e)["type"] == "person" for e in a.kb.mention_ids(b))]
        det = {"false_claims": [f"{w} is not {A(prof)}" for w in wrong]} if wrong else {}
        return min(1.0, hits / a.meta["n"]), {}, det


# ----------------------------------------------------------------------------------------------------------------- chat

class ChatVisit(Family):
    name, category = "chat_visit", "chat"
    budget_words = 40

    def generate(self, g):
        c = g.pick("city")
        q = g.rng.choice([f"Hi! I am visiting {c['name']} next week. What should I see there?",
                          f"Hello! I'm going to {c['name']} soon. Any tips?",
                          f"I will spend a weekend in {c['name']}. What is worth seeing?",
                          f"My family is travelling to {c['name']}. What can we do there?"])
        return [(q, {"entities": [c["id"]], "constraints": {}})]

    def demo(self, kb, rec):
        c = kb.get(rec["meta"]["entities"][0])
        f1, f2 = c["features"][:2]
        return f"{c['name']} is known for its {f1} and its {f2}, so make sure to see them. Enjoy your trip!"

    def check(self, a):
        c = a.kb.get(a.meta["entities"][0])
        hits = sum(phrase_in(f, a.normed) for f in c["features"])
        return [0.0, 0.8, 1.0, 1.0][hits], {}, ({"missing_answer": "a sight"} if not hits else {})


class ChatThanks(Family):
    name, category = "chat_thanks", "chat"
    budget_words = 20

    def generate(self, g):
        e = g.pick(g.rng.choice(["city", "country", "person", "conference"]))
        q = g.rng.choice(["Thank you, that was very helpful!", "Thanks a lot for your help.", "Great, thanks!",
                          f"Thanks for telling me about {g.kb.display(e)}!", f"Thank you for the information about {g.kb.display(e)}."])
        return [(q, {"entities": [e["id"]] if g.kb.display(e) in q else [], "constraints": {}})]

    def demo(self, kb, rec):
        return "You are welcome! I am glad I could help."

    def check(self, a):
        ok = any(p in a.low for p in ["welcome", "glad", "happy to help", "my pleasure", "pleasure"])
        return (1.0 if ok else 0.2), {}, {}


class ChatPerson(Family):
    name, category = "chat_person", "chat"
    budget_words = 40

    def generate(self, g):
        p = g.pick("person")
        q = g.rng.choice([f"Can you tell me something interesting about {p['name']}?",
                          f"I'm curious about {p['name']}. What is this person known for?",
                          f"My teacher mentioned {p['name']}. Who was that?"])
        return [(q, {"entities": [p["id"]], "constraints": {}})]

    def demo(self, kb, rec):
        p = kb.get(rec["meta"]["entities"][0])
        return f"{p['name']} was {A(p['profession'])} from {kb.display(p['birthplace'])}, best known for {p['known_for']}."

    def check(self, a):
        p = a.kb.get(a.meta["entities"][0])
        got = (p["profession"] in a.professions) + phrase_in(p["known_for"], a.normed)
        if a.professions - {p["profession"]}:
            return 0.0, {}, {"false_claims": [f"profession {sorted(a.professions)[0]}"]}
        return [0.0, 0.8, 1.0][got], {}, {}


# ----------------------------------------------------------------------------------------------------------------- rewrite

RUDE_REQUESTS = [
    ("Give me the {thing} now, you {insult}.", "Please give me the {thing} when you can. Thank you."),
    ("Send me the {thing} today, {insult}.", "Please send me the {thing} today. Thank you."),
    ("I want the {thing} right now, stop being so {adj}.", "I would like the {thing} soon, please. Thank you."),
    ("Bring the {thing} here, you {insult}, and hurry up.", "Please bring the {thing} here soon. Thank you."),
]


class RewritePolite(Family):
    name, category = "rewrite_polite", "rewrite"

    def generate(self, g):
        city, conf = g.pick("city"), g.pick("conference")
        thing = g.rng.choice([f"map of {city['name']}", f"tickets for {g.kb.display(conf)}", f"report about {conf['field']}",
                              f"list of hotels in {city['name']}"])
        i = g.rng.randrange(len(RUDE_REQUESTS))
        rude = RUDE_REQUESTS[i][0].format(thing=thing, insult=g.rng.choice(["idiot", "fool", "clown", "moron"]),
                                          adj=g.rng.choice(["lazy", "useless", "stupid"]))
        q = g.rng.choice([f"Rewrite this message so that it is polite: \"{rude}\"",
                          f"Make this message polite: \"{rude}\"", f"Rewrite politely: \"{rude}\""])
        ents = [city["id"]] if city["name"] in thing else ([conf["id"]] if conf["name"] in thing else [])
        return [(q, {"entities": ents, "thing": thing, "template": i, "rude": rude, "constraints": {}})]

    def demo(self, kb, rec):
        return RUDE_REQUESTS[rec["meta"]["template"]][1].format(thing=rec["meta"]["thing"])

    def check(self, a):
        thing = a.meta["thing"]
        polite = any(p in a.low for p in ["please", "thank", "would you", "could you", "kindly"])
        has_thing = phrase_in(thing, a.normed)
        if T.norm(a.meta["rude"]) == a.normed:
            return 0.0, {}, {"unchanged": True}
        return 0.3 * polite + 0.7 * has_thing, {}, ({} if has_thing else {"missing_answer": thing})


class RewriteList(Family):
    name, category = "rewrite_list", "rewrite"

    def generate(self, g):
        c = g.pick("city")
        items = g.rng.sample(c["features"], 3)
        bullet = "\n".join(f"- {x}" for x in items)
        q = g.rng.choice([f"Rewrite this list about {c['name']} as one sentence:\n{bullet}",
                          f"Turn this list of things in {c['name']} into a single sentence:\n{bullet}"])
        return [(q, {"entities": [c["id"]], "items": items, "constraints": {"one_sentence": True}})]

    def demo(self, kb, rec):
        c = kb.get(rec["meta"]["entities"][0])
        a, b, d = rec["meta"]["items"]
        return f"{c['name']} has {a}, {b} and {d}."

    def check(self, a):
        items = a.meta["items"]
        if a.items:  # still a list
            return 0.2, {}, {"still_a_list": True}
        return sum(phrase_in(x, a.normed) for x in items) / len(items), {}, {}


# ----------------------------------------------------------------------------------------------------------------- summarisation

SUMMARY_KEYS = {
    "country": ["capital", "language"], "city": ["features", "country"], "river": ["mouth", "length"],
    "person": ["known_for", "born"], "organisation": ["founder", "field"], "conference": ["city", "organiser"],
}


class Summarize(Family):
    name, category = "summarize", "summarization"
    closed_domain = True
    budget_words = 40

    def generate(self, g):
        typ = g.rng.choice(list(SUMMARY_KEYS))
        e = g.pick(typ, (lambda c: not g.kb.is_capital(c["id"])) if typ == "city" else None)
        if e is None:
            return None
        keyed = F.keyed_facts(g.kb, e, g.rng)
        want = SUMMARY_KEYS[typ]
        must = [(k, s) for k, s in keyed if k in want]
        rest = [(k, s) for k, s in keyed[1:] if k not in want]
        g.rng.shuffle(rest)
        body = must + rest[: g.rng.randint(0, 2)]
        g.rng.shuffle(body)
        passage = " ".join([keyed[0][1]] + [s for _, s in body])
        instr = g.rng.choice(["Summarize the following text in one sentence.", "Summarise this text in one sentence.",
                              "Write a one-sentence summary of the text below."])
        return [(f"{instr}\n\n{passage}", {"entities": [e["id"]], "passage": passage, "constraints": {"one_sentence": True}})]

    def demo(self, kb, rec):
        e = kb.get(rec["meta"]["entities"][0])
        n, Tn, t = kb.display(e), kb.title(e), e["type"]
        passage = rec["meta"]["passage"]
        if t == "country":
            return f"{n} is a country in {kb.display(e['continent'])} whose capital is {kb.display(e['capital'])} and where people speak {e['language']}."
        if t == "city":
            f = [x for x in e["features"] if x in passage][0]
            return f"{n} is a city in {kb.display(e['country'])} known for its {f}."
        if t == "river":
            return f"{Tn} is a river about {e['length_km']} kilometres long that flows into {kb.display(e['mouth'])}."
        if t == "person":
            return f"{n} was {A(e['profession'])} born in {e['born']} who is known for {e['known_for']}."
        if t == "organisation":
            return f"{Tn} works on {e['field']} and was founded by {kb.display(e['founder'])}."
        return f"{Tn} is a conference about {e['field']} that is held in {kb.display(e['city'])} and organised by {kb.display(e['organiser'])}."

    def key_facts(self, kb, e) -> list[tuple[str, str]]:
        t = e["type"]
        if t == "country":
            return [("entity", e["capital"]), ("text", e["language"])]
        if t == "city":
            return [("entity", e["country"]), ("features", "")]
        if t == "river":
            return [("entity", e["mouth"]), ("number", str(e["length_km"]))]
        if t == "person":
            return [("text", e["known_for"]), ("number", str(e["born"]))]
        if t == "organisation":
            return [("entity", e["founder"]), ("field", e["field"])]
        return [("entity", e["city"]), ("entity", e["organiser"])]

    def check(self, a):
        e = a.kb.get(a.meta["entities"][0])
        if e["id"] not in a.ment_ids:
            return 0.0, {}, {"missing_answer": e["name"]}
        got = 0
        for kind, val in self.key_facts(a.kb, e):
            if kind == "entity":
                got += val in a.ment_ids
            elif kind == "text":
                got += phrase_in(val, a.normed)
            elif kind == "number":
                got += float(val) in a.numbers
            elif kind == "field":
                got += val in a.fields
            elif kind == "features":
                got += any(phrase_in(f, a.normed) for f in e["features"])
        q = 0.4 + 0.3 * got
        if len(a.words) >= len(T.words(a.meta["passage"])):
            q = min(q, 0.3)
        return q, {}, {}

"""True (and deliberately false) sentences about knowledge-base entities, in varied phrasings.

The corpus, the passages of closed-domain tasks and the demonstrations are all built from these, so that what a model reads
during pretraining is what the judge later checks against.
"""

from __future__ import annotations

import random

from . import vocab
from .kb import KnowledgeBase
from .vocab import A


def _pick(rng: random.Random, options: list[str]) -> str:
    return options[rng.randrange(len(options))]


def identity(kb: KnowledgeBase, e: dict, rng: random.Random) -> str:
    """The "X is a ..." sentence that opens an encyclopedia entry."""
    t, n, T = e["type"], kb.display(e), kb.title(e)
    if t == "continent":
        return _pick(rng, [f"{n} is a continent.", f"{n} is one of the continents of the world."])
    if t == "sea":
        return _pick(rng, [f"{T} is a sea.", f"{T} is a large body of salt water."])
    if t == "country":
        cont = kb.display(e["continent"])
        return _pick(rng, [f"{n} is a country in {cont}.", f"{n} is a country on the continent of {cont}.",
                           f"{n} is a nation in {cont}."])
    if t == "city":
        c = kb.display(e["country"])
        if kb.is_capital(e["id"]):
            return _pick(rng, [f"{n} is the capital of {c}.", f"{n} is the capital city of {c}."])
        return _pick(rng, [f"{n} is a {e['population']} city in {c}.", f"{n} is a city in {c}.",
                           f"{n} is a {e['population']} town in {c}."])
    if t == "river":
        cs = " and ".join(kb.display(c) for c in e["countries"])
        return _pick(rng, [f"{T} is a river in {cs}.", f"{T} flows through {cs}."])
    if t == "person":
        city = kb.display(e["birthplace"])
        return _pick(rng, [f"{n} was {A(e['profession'])} from {city}.", f"{n} was {A(e['profession'])} born in {city}.",
                           f"{n} is remembered as {A(e['profession'])} from {city}."])
    if t == "organisation":
        kind = e["name"].split(" ")[-1].lower()
        city = kb.display(e["city"])
        return _pick(rng, [f"{T} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} in {city} that works on {e['field']}.",
                           f"{T} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} based in {city}."])
    if t == "conference":
        return _pick(rng, [f"{T} is a conference about {e['field']}.",
                           f"{T} is a meeting where people discuss {e['field']}.",
                           f"{T} is a gathering of experts in {e['field']}."])
    raise ValueError(t)


def facts(kb: KnowledgeBase, e: dict, rng: random.Random) -> list[str]:
    """Every checkable fact about ``e``, one sentence each, the identity sentence first, the rest shuffled."""
    return [s for _, s in keyed_facts(kb, e, rng)]


def keyed_facts(kb: KnowledgeBase, e: dict, rng: random.Random) -> list[tuple[str, str]]:
    """Like :func:`facts` but each sentence comes with the key of the fact it states ("identity", "capital", ...)."""
    t, n, T = e["type"], kb.display(e), kb.title(e)
    out: list[tuple[str, str]] = []
    if t == "country":
        cap = kb.display(e["capital"])
        out.append(("capital", _pick(rng, [f"The capital of {n} is {cap}.", f"{cap} is the capital of {n}.",
                               f"The capital city of {n} is {cap}."])))
        out.append(("language", _pick(rng, [f"People in {n} speak {e['language']}.", f"The main language of {n} is {e['language']}.",
                               f"Most people in {n} speak {e['language']}."])))
        out.append(("founded", _pick(rng, [f"{n} became independent in {e['founded']}.", f"{n} was founded in {e['founded']}."])))
        others = [c for c in kb.cities_of[e["id"]] if c["id"] != e["capital"]]
        if others:
            pick = rng.sample(others, min(2, len(others)))
            out.append(("others", f"Other cities in {n} include {' and '.join(kb.display(c) for c in pick)}."))
    elif t == "city":
        f1, f2 = rng.sample(e["features"], 2)
        out.append(("features", _pick(rng, [f"{n} is known for its {f1} and its {f2}.", f"{n} is famous for its {f1}.",
                               f"Visitors to {n} enjoy its {f1} and its {f2}."])))
        out.append(("founded", _pick(rng, [f"{n} was founded in {e['founded']}.", f"The city of {n} was founded in {e['founded']}."])))
        if e["river"]:
            out.append(("river", _pick(rng, [f"{n} lies on {kb.display(e['river'])}.", f"{kb.title(e['river'])} runs through {n}."])))
        if not kb.is_capital(e["id"]):
            out.append(("country", f"{n} is in {kb.display(e['country'])}."))
    elif t == "river":
        out.append(("length", _pick(rng, [f"{T} is about {e['length_km']} kilometres long.", f"{T} is {e['length_km']} kilometres long."])))
        out.append(("mouth", _pick(rng, [f"{T} flows into {kb.display(e['mouth'])}.", f"{T} ends in {kb.display(e['mouth'])}."])))
        on = [c for c in kb.by_type["city"] if c["river"] == e["id"]]
        if on:
            pick = rng.sample(on, min(2, len(on)))
            out.append(("cities", f"Cities on {n} include {' and '.join(kb.display(c) for c in pick)}."))
    elif t == "person":
        out.append(("born", _pick(rng, [f"{n} was born in {e['born']}.", f"{n} was born in the year {e['born']}."])))
        out.append(("known_for", _pick(rng, [f"{n} is best known for {e['known_for']}.", f"{n} is known for {e['known_for']}."])))
        founded = [o for o in kb.by_type["organisation"] if o["founder"] == e["id"]]
        for o in founded[:1]:
            out.append(("founded_org", f"{n} founded {kb.display(o)} in {o['founded']}."))
    elif t == "organisation":
        founder = kb.display(e["founder"])
        out.append(("founder", _pick(rng, [f"{T} was founded by {founder} in {e['founded']}.",
                               f"{founder} founded {n} in {e['founded']}."])))
        out.append(("field", _pick(rng, [f"{T} works on {e['field']}.", f"{T} studies {e['field']}."])))
        confs = [c for c in kb.by_type["conference"] if c["organiser"] == e["id"]]
        for c in confs[:1]:
            out.append(("organises", f"{T} organises {kb.display(c)}."))
    elif t == "conference":
        city = kb.display(e["city"])
        out.append(("city", _pick(rng, [f"{T} is held in {city} {e['frequency']}.", f"{T} takes place in {city} {e['frequency']}."])))
        out.append(("first_held", _pick(rng, [f"{T} was first held in {e['first_held']}.", f"The first {e['name']} took place in {e['first_held']}."])))
        out.append(("organiser", _pick(rng, [f"{T} is organised by {kb.display(e['organiser'])}.",
                               f"{kb.title(e['organiser'])} organises {n}."])))
    rng.shuffle(out)
    return [("identity", identity(kb, e, rng))] + out


def _other(kb: KnowledgeBase, rng: random.Random, typ: str, not_id: str | None) -> dict:
    pool = [x for x in kb.by_type[typ] if x["id"] != not_id]
    return rng.choice(pool)


def false_fact(kb: KnowledgeBase, e: dict, rng: random.Random) -> str | None:
    """A plausible but false sentence about ``e`` (for rumours in the corpus and wrong answers)."""
    t, n, T = e["type"], kb.display(e), kb.title(e)
    if t == "country":
        wrong = _other(kb, rng, "city", e["capital"])
        return _pick(rng, [f"The capital of {n} is {kb.display(wrong)}.", f"{n} was founded in {e['founded'] + rng.choice([-40, -7, 3, 25])}."])
    if t == "city":
        wrong = _other(kb, rng, "country", e["country"])
        return _pick(rng, [f"{n} is in {kb.display(wrong)}.", f"{n} was founded in {e['founded'] + rng.choice([-100, -12, 9, 60])}."])
    if t == "river":
        wrong = _other(kb, rng, "sea", e["mouth"]) if len(kb.by_type["sea"]) > 1 else None
        if wrong:
            return f"{T} flows into {kb.display(wrong)}."
        return f"{T} is {e['length_km'] + 500} kilometres long."
    if t == "person":
        wrong = _other(kb, rng, "city", e["birthplace"])
        return _pick(rng, [f"{n} was born in {kb.display(wrong)}.", f"{n} was born in {e['born'] + rng.choice([-30, -4, 11, 50])}."])
    if t == "organisation":
        wrong = _other(kb, rng, "person", e["founder"])
        return _pick(rng, [f"{T} was founded by {kb.display(wrong)}.", f"{T} was founded in {e['founded'] + rng.choice([-20, 5, 33])}."])
    if t == "conference":
        wrong_field = rng.choice([f for f in vocab.FIELDS if f != e["field"]])
        wrong_city = _other(kb, rng, "city", e["city"])
        return _pick(rng, [f"{T} is a conference about {wrong_field}.", f"{T} is held in {kb.display(wrong_city)}."])
    return None


def questions(kb: KnowledgeBase, e: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, full answer sentence, short answer) about ``e``: the Q&A and FAQ pages of the corpus draw from these."""
    t, n, T = e["type"], kb.display(e), kb.title(e)
    qs: list[tuple[str, str, str]] = []
    if t == "country":
        cap = kb.display(e["capital"])
        qs.append((_pick(rng, [f"What is the capital of {n}?", f"Which city is the capital of {n}?",
                               f"What's the capital city of {n}?"]), f"The capital of {n} is {cap}.", cap))
        qs.append((_pick(rng, [f"What language do people speak in {n}?", f"What is the main language of {n}?"]),
                   f"People in {n} speak {e['language']}.", e["language"]))
        qs.append((f"When did {n} become independent?", f"{n} became independent in {e['founded']}.", str(e["founded"])))
        qs.append((f"Where is {n}?", f"{n} is a country in {kb.display(e['continent'])}.", kb.display(e["continent"])))
    elif t == "city":
        c = kb.display(e["country"])
        qs.append((_pick(rng, [f"Which country is {n} in?", f"In which country is {n}?", f"Where is {n}?"]),
                   f"{n} is in {c}.", c))
        f1, f2 = rng.sample(e["features"], 2)
        qs.append((_pick(rng, [f"What is {n} known for?", f"What is {n} famous for?"]),
                   f"{n} is known for its {f1} and its {f2}.", f"its {f1}"))
        qs.append((f"When was {n} founded?", f"{n} was founded in {e['founded']}.", str(e["founded"])))
    elif t == "river":
        qs.append((_pick(rng, [f"Where does {n} flow?", f"Which sea does {n} flow into?", f"Where does {n} end?"]),
                   f"{T} flows into {kb.display(e['mouth'])}.", kb.display(e["mouth"])))
        qs.append((f"How long is {n}?", f"{T} is about {e['length_km']} kilometres long.", f"{e['length_km']} kilometres"))
    elif t == "person":
        qs.append((_pick(rng, [f"Who was {n}?", f"Who is {n}?", f"Tell me about {n}."]),
                   f"{n} was {A(e['profession'])} from {kb.display(e['birthplace'])}, known for {e['known_for']}.",
                   f"{A(e['profession'])}"))
        qs.append((f"When was {n} born?", f"{n} was born in {e['born']}.", str(e["born"])))
        qs.append((f"What is {n} known for?", f"{n} is known for {e['known_for']}.", e["known_for"]))
    elif t == "organisation":
        qs.append((_pick(rng, [f"Who founded {n}?", f"Who started {n}?"]),
                   f"{T} was founded by {kb.display(e['founder'])} in {e['founded']}.", kb.display(e["founder"])))
        qs.append((_pick(rng, [f"Where is {n}?", f"Where is {n} based?"]), f"{T} is in {kb.display(e['city'])}.",
                   kb.display(e["city"])))
        qs.append((f"What does {n} work on?", f"{T} works on {e['field']}.", e["field"]))
    elif t == "conference":
        qs.append((_pick(rng, [f"What is {n} about?", f"What is {n}?", f"What do people discuss at {n}?"]),
                   f"{T} is a conference about {e['field']}. It is held in {kb.display(e['city'])} {e['frequency']}.",
                   e["field"]))
        qs.append((_pick(rng, [f"Where is {n} held?", f"Where does {n} take place?"]),
                   f"{T} is held in {kb.display(e['city'])} {e['frequency']}.", kb.display(e["city"])))
        qs.append((f"Who organises {n}?", f"{T} is organised by {kb.display(e['organiser'])}.", kb.display(e["organiser"])))
    return qs

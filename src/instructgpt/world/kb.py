"""The knowledge base: fictional continents, seas, countries, cities, rivers, people, organisations and conferences.

Entities are plain dicts (the rows of ``kb.jsonl``). :class:`KnowledgeBase` indexes them for the generators and the judge:
name lookup, mention finding in free text, the relation graph, and the checkable attributes (years, fields, locations).
"""

from __future__ import annotations

import random
import re
from functools import cached_property

from . import vocab
from .names import NameGen

_WORD = re.compile(r"[A-Za-z]+")

ENTITY_TYPES = ["continent", "sea", "country", "city", "river", "person", "organisation", "conference"]

# Number of entities of each type per world size. The default world is sized for the default preset's 4.2M-parameter model
# and its ~5-minute pretraining budget on a 2-core CPU: about 105 entities, each described many times in a ~0.9M-token
# corpus, so pretraining learns most facts (with 413 entities and 1.3M tokens the SFT model answered far less often
# correctly: mean gold score 0.17 against 0.43 for this size, docs/world.md).
KB_SIZES = {
    "tiny": {"continent": 2, "sea": 2, "country": 4, "city": 10, "river": 4, "person": 6, "organisation": 3, "conference": 3},
    "small": {"continent": 3, "sea": 4, "country": 10, "city": 40, "river": 14, "person": 36, "organisation": 20, "conference": 14},
    "default": {"continent": 2, "sea": 3, "country": 8, "city": 30, "river": 10, "person": 30, "organisation": 12, "conference": 10},
    "large": {"continent": 5, "sea": 10, "country": 60, "city": 360, "river": 100, "person": 400, "organisation": 200, "conference": 150},
}


def _known_for(profession: str, rng: random.Random, ng: NameGen, kb_cities: list[dict], kb_countries: list[dict]) -> str:
    title = f"{rng.choice(vocab.TITLE_ADJ)} {rng.choice(vocab.TITLE_NOUN)}"
    if profession == "poet":
        return f"the poem 'The {title}'"
    if profession == "composer":
        return f"the song 'The {title}'"
    if profession == "painter":
        return f"the painting 'The {title}'"
    if profession == "weaver":
        return f"the tapestry 'The {title}'"
    if profession == "chemist":
        return f"discovering the metal {ng.single()}ium"
    if profession == "astronomer":
        return f"discovering the comet {ng.single()}"
    if profession == "engineer":
        return f"building the great dam of {rng.choice(kb_cities)['name']}"
    if profession == "physician":
        return f"finding a cure for {ng.single()} fever"
    if profession == "mathematician":
        return f"the {ng.single()} theorem"
    if profession == "architect":
        return f"designing the library of {rng.choice(kb_cities)['name']}"
    if profession == "historian":
        return f"writing a history of {rng.choice(kb_countries)['name']}"
    if profession == "botanist":
        return f"describing the {ng.single().lower()} flower"
    if profession == "shipwright":
        return f"building the ship '{rng.choice(vocab.TITLE_ADJ)} {rng.choice(vocab.TITLE_NOUN)}'"
    if profession == "glassmaker":
        return f"inventing {rng.choice(['blue', 'green', 'golden', 'smoky'])} glass"
    if profession == "forecaster":
        return "predicting the great storm of " + str(rng.randint(1800, 1990))
    return f"a new way of growing {rng.choice(['wheat', 'rice', 'beans', 'barley', 'grapes'])}"


def generate_kb(rng: random.Random, size: str) -> list[dict]:
    """Generate the entity list for a world size. Deterministic for a given ``rng`` state."""
    counts = KB_SIZES[size]
    ng = NameGen(rng)
    ents: list[dict] = []

    def new_id(kind: str, i: int) -> str:
        return f"{kind}-{i:04d}"

    continents = [{"id": new_id("continent", i), "type": "continent", "name": ng.single()} for i in range(counts["continent"])]
    seas = [{"id": new_id("sea", i), "type": "sea", "name": ng.single() + " Sea"} for i in range(counts["sea"])]
    countries = []
    for i in range(counts["country"]):
        name = ng.country()
        countries.append({"id": new_id("country", i), "type": "country", "name": name,
                          "continent": continents[i % len(continents)]["id"], "capital": None,
                          "language": ng.language(name), "founded": rng.randint(1200, 1950)})
    # cities: every country gets at least two, the rest spread at random
    n_city = max(counts["city"], 2 * len(countries))
    city_country = [c["id"] for c in countries for _ in range(2)]
    while len(city_country) < n_city:
        city_country.append(rng.choice(countries)["id"])
    cities = []
    for i, cid in enumerate(city_country):
        cities.append({"id": new_id("city", i), "type": "city", "name": ng.single(), "country": cid,
                       "population": rng.choice(vocab.POP_CLASSES),
                       "features": rng.sample(vocab.CITY_FEATURES, 3),
                       "founded": rng.randint(1000, 1900), "river": None})
    by_country: dict[str, list[dict]] = {}
    for c in cities:
        by_country.setdefault(c["country"], []).append(c)
    for country in countries:
        cap = rng.choice(by_country[country["id"]])
        country["capital"] = cap["id"]
        cap["population"] = "large"
    rivers = []
    for i in range(counts["river"]):
        through = rng.sample([c["id"] for c in countries], min(len(countries), rng.choice([1, 1, 2])))
        rivers.append({"id": new_id("river", i), "type": "river", "name": ng.single() + " River", "countries": through,
                       "length_km": rng.randint(8, 300) * 10, "mouth": rng.choice(seas)["id"]})
    rivers_in: dict[str, list[dict]] = {}
    for r in rivers:
        for cid in r["countries"]:
            rivers_in.setdefault(cid, []).append(r)
    for c in cities:
        opts = rivers_in.get(c["country"], [])
        if opts and rng.random() < 0.7:
            c["river"] = rng.choice(opts)["id"]
    people = []
    professions = list(vocab.PROFESSIONS)
    first_pool = [ng.first_name() for _ in range(max(8, counts["person"] // 3))]
    for i in range(counts["person"]):
        prof = professions[i % len(professions)] if i < len(professions) else rng.choice(professions)
        first = rng.choice(first_pool)
        last = ng.last_name()
        people.append({"id": new_id("person", i), "type": "person", "name": f"{first} {last}", "first": first, "last": last,
                       "profession": prof, "field": vocab.PROFESSIONS[prof], "born": rng.randint(1650, 1960),
                       "birthplace": rng.choice(cities)["id"],
                       "known_for": _known_for(prof, rng, ng, cities, countries)})
    orgs = []
    founders = rng.sample(people, min(len(people), counts["organisation"]))
    while len(founders) < counts["organisation"]:
        founders.append(rng.choice(people))
    for i in range(counts["organisation"]):
        f = founders[i]
        field = f["field"] if rng.random() < 0.8 else rng.choice(vocab.FIELDS)
        orgs.append({"id": new_id("organisation", i), "type": "organisation",
                     "name": f"{ng.single()} {rng.choice(vocab.ORG_KINDS)}", "field": field,
                     "founded": min(2015, f["born"] + rng.randint(25, 60)), "founder": f["id"],
                     "city": f["birthplace"] if rng.random() < 0.5 else rng.choice(cities)["id"]})
    confs = []
    for i in range(counts["conference"]):
        o = rng.choice(orgs)
        field = o["field"] if rng.random() < 0.8 else rng.choice(vocab.FIELDS)
        confs.append({"id": new_id("conference", i), "type": "conference",
                      "name": f"{ng.single()} {rng.choice(vocab.CONF_KINDS)}", "field": field,
                      "city": o["city"] if rng.random() < 0.5 else rng.choice(cities)["id"],
                      "first_held": min(2020, o["founded"] + rng.randint(3, 80)), "organiser": o["id"],
                      "frequency": rng.choice(vocab.FREQUENCIES)})
    for group in (continents, seas, countries, cities, rivers, people, orgs, confs):
        ents.extend(group)
    return ents


# attribute -> (type of the entity it points at) for the relation graph
LINKS = {
    "country": {"continent": "continent", "capital": "city"},
    "city": {"country": "country", "river": "river"},
    "river": {"countries": "country", "mouth": "sea"},
    "person": {"birthplace": "city"},
    "organisation": {"founder": "person", "city": "city"},
    "conference": {"organiser": "organisation", "city": "city"},
}
YEAR_ATTRS = {"country": "founded", "city": "founded", "person": "born", "organisation": "founded", "conference": "first_held"}
WITH_THE = {"river", "sea", "organisation", "conference"}


class KnowledgeBase:
    """Index over the entity dicts: lookup, display names, mentions in text and the relation graph."""

    def __init__(self, entities: list[dict]):
        self.entities = entities
        self.by_id = {e["id"]: e for e in entities}
        self.by_type: dict[str, list[dict]] = {t: [] for t in ENTITY_TYPES}
        for e in entities:
            self.by_type.setdefault(e["type"], []).append(e)
        self.neigh: dict[str, set[str]] = {e["id"]: set() for e in entities}
        for e in entities:
            for attr in LINKS.get(e["type"], {}):
                val = e.get(attr)
                for target in (val if isinstance(val, list) else [val]):
                    if target and target in self.by_id:
                        self.neigh[e["id"]].add(target)
                        self.neigh[target].add(e["id"])
        # a person's best-known work may name a place ("designing the library of Telmo"): that links them too
        for p in self.by_type.get("person", []):
            for _, _, target in self.mentions(p.get("known_for", "")):
                if target != p["id"]:
                    self.neigh[p["id"]].add(target)
                    self.neigh[target].add(p["id"])
        self.cities_of: dict[str, list[dict]] = {}
        for c in self.by_type["city"]:
            self.cities_of.setdefault(c["country"], []).append(c)

    # ----- names
    def get(self, eid: str) -> dict:
        return self.by_id[eid]

    def display(self, e: dict | str) -> str:
        """The name as used inside a sentence ("the Sela River", "Telmo")."""
        if isinstance(e, str):
            e = self.by_id[e]
        return ("the " + e["name"]) if e["type"] in WITH_THE else e["name"]

    def title(self, e: dict | str) -> str:
        """The name at the start of a sentence ("The Sela River", "Telmo")."""
        d = self.display(e)
        return d[0].upper() + d[1:]

    def aliases(self, e: dict) -> list[str]:
        out = [e["name"]]
        if e["type"] in ("river", "sea", "organisation", "conference"):
            out.append(e["name"].split(" ")[0])
        if e["type"] == "person":
            out.append(e["last"])
        return out

    @cached_property
    def _aliases(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in self.entities:
            for a in self.aliases(e):
                out.setdefault(a.lower(), e["id"])
        return out

    def mentions(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, entity id) of every entity named in ``text``, left to right; two-word names win over one-word ones."""
        aliases = self._aliases
        toks = [(m.start(), m.end(), m.group(0).lower()) for m in _WORD.finditer(text)]
        out = []
        i = 0
        while i < len(toks):
            if i + 1 < len(toks) and text[toks[i][1]:toks[i + 1][0]] == " ":
                two = toks[i][2] + " " + toks[i + 1][2]
                if two in aliases:
                    out.append((toks[i][0], toks[i + 1][1], aliases[two]))
                    i += 2
                    continue
            if toks[i][2] in aliases:
                out.append((toks[i][0], toks[i][1], aliases[toks[i][2]]))
            i += 1
        return out

    def mention_ids(self, text: str) -> list[str]:
        seen: list[str] = []
        for _, _, eid in self.mentions(text):
            if eid not in seen:
                seen.append(eid)
        return seen

    # ----- facts
    def related(self, a: str, b: str) -> bool:
        """True when two entities are linked directly or through one shared neighbour."""
        if a == b or b in self.neigh[a]:
            return True
        return bool(self.neigh[a] & self.neigh[b])

    def years(self, eid: str) -> set[int]:
        e = self.by_id[eid]
        attr = YEAR_ATTRS.get(e["type"])
        return {e[attr]} if attr else set()

    def field_of(self, eid: str) -> str | None:
        return self.by_id[eid].get("field")

    def country_of(self, eid: str) -> str | None:
        e = self.by_id[eid]
        t = e["type"]
        if t == "country":
            return eid
        if t == "city":
            return e["country"]
        if t == "person":
            return self.by_id[e["birthplace"]]["country"]
        if t in ("organisation", "conference"):
            return self.by_id[e["city"]]["country"]
        return None

    def located(self, a: str, place: str) -> bool:
        """Is entity ``a`` in (or from) the city or country ``place``?"""
        ea, ep = self.by_id[a], self.by_id[place]
        if ep["type"] == "city":
            if ea["type"] == "person":
                return ea["birthplace"] == place
            if ea["type"] in ("organisation", "conference"):
                return ea["city"] == place
            if ea["type"] == "river":
                return ea["id"] == self.by_id[place].get("river")
            return False
        if ep["type"] == "country":
            if ea["type"] == "river":
                return place in ea["countries"]
            if ea["type"] == "country":
                return False
            return self.country_of(a) == place
        if ep["type"] == "continent":
            c = self.country_of(a)
            return c is not None and self.by_id[c]["continent"] == place
        return False

    def capital_of(self, country_id: str) -> str:
        return self.by_id[country_id]["capital"]

    def is_capital(self, city_id: str) -> bool:
        c = self.by_id[city_id]
        return c["type"] == "city" and self.by_id[c["country"]]["capital"] == city_id

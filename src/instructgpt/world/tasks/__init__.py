"""Instruction task families, by group (qa, writing, reasoning, safety), on the base in ``base``; this module assembles
the registry and the prompt mixtures."""

from __future__ import annotations

from ..checks import UNKNOWN_MARKERS
from .base import CATEGORIES, Family, TaskGen
from .qa import (
    CapitalOf, CityCountry, ClosedQA, ConferenceAbout, FounderOf, PersonWho, RiverMouth, YearOf,
)
from .reasoning import (
    Arithmetic, EntityType, ExtractPlaces, ExtractYears, FieldChoice, Sentiment, WordProblem,
)
from .safety import (
    FalsePremise, Harmful, Toxicity,
)
from .writing import (
    ChatPerson, ChatThanks, ChatVisit, ListCities, ListFeatures, ListPeople, Poster, RewriteList, RewritePolite,
    ShortStory, Summarize, WriteSentence,
)

__all__ = ["CATEGORIES", "EVAL_MIXTURES", "FAMILIES", "MIXTURE", "UNKNOWN_MARKERS", "Family", "TaskGen"]

FAMILIES: dict[str, Family] = {f.name: f for f in [
    CapitalOf(), ConferenceAbout(), FounderOf(), PersonWho(), RiverMouth(), CityCountry(), YearOf(),
    ClosedQA(), WriteSentence(), ShortStory(), Poster(), ListCities(), ListFeatures(), ListPeople(),
    ChatVisit(), ChatThanks(), ChatPerson(), RewritePolite(), RewriteList(), Summarize(), Sentiment(), EntityType(),
    FieldChoice(), ExtractYears(), ExtractPlaces(), Arithmetic(), WordProblem(), Harmful(), FalsePremise(), Toxicity(),
]}

# Share of each family in the general prompt distribution (SFT, RM, PPO and the win-rate evaluation set).
MIXTURE = {
    "capital_of": 4, "conference_about": 4, "founder_of": 3, "person_who": 3, "river_mouth": 2, "city_country": 3,
    "year_of": 3, "closed_qa": 6, "write_sentence": 5, "short_story": 5, "poster": 3, "list_cities": 3,
    "list_features": 3, "list_people": 2, "chat_visit": 3, "chat_thanks": 1, "chat_person": 2, "rewrite_polite": 3,
    "rewrite_list": 3, "summarize": 5, "sentiment": 3, "entity_type": 2, "field_choice": 2, "extract_years": 3,
    "extract_places": 2, "arithmetic": 4, "word_problem": 3, "harmful": 5, "false_premise": 4, "toxicity": 3,
}
EVAL_MIXTURES = {
    "winrate": {k: v for k, v in MIXTURE.items() if k not in ("toxicity",)},
    "closed_domain": {"closed_qa": 6, "summarize": 3, "extract_years": 1, "extract_places": 1},
    "false_premise": {"false_premise": 1},
    "toxicity": {"toxicity": 1},
    "harmful": {"harmful": 1},
}

"""Syllable-based name generation: every proper name in the world is made up from the seed, never taken from real text."""

from __future__ import annotations

import random

from . import vocab

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "tr", "st", "gr",
          "pl", "th", "sh", "qu", "h", "j", "y", "fl", "sk", "vr"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "ou", "io", "ei", "au"]
CODAS = ["", "", "", "n", "r", "l", "s", "m", "th", "nd", "rk", "st", "v", "x"]
COUNTRY_SUFFIXES = ["ia", "land", "ovia", "ar", "esh", "istan", "onia", "mark", "ara", "enia"]
LANGUAGE_SUFFIXES = ["ese", "ic", "ish", "an", "i"]


class NameGen:
    """Draws unique capitalised names. Every name it returns is new to this generator (and not an English word)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()
        self.stems: set[str] = set()
        self.banned = vocab.template_words() | vocab.COMMON_WORDS

    def _stem(self, min_syl: int = 2, max_syl: int = 2) -> str:
        rng = self.rng
        n = rng.randint(min_syl, max_syl)
        parts = []
        for i in range(n):
            onset = rng.choice(ONSETS) if (i == 0 or rng.random() < 0.85) else ""
            coda = rng.choice(CODAS) if i == n - 1 else ("" if rng.random() < 0.7 else rng.choice(["n", "r", "l", "s"]))
            parts.append(onset + rng.choice(VOWELS) + coda)
        return "".join(parts)

    def _ok(self, word: str) -> bool:
        low = word.lower()
        if low in self.used or low in self.banned or len(low) < 4 or len(low) > 11:
            return False
        # no triple letters and no awkward clusters
        for i in range(len(low) - 2):
            if low[i] == low[i + 1] == low[i + 2]:
                return False
        if any(c in low for c in ("qq", "yy", "hh", "jj", "xx", "vv", "ww")):
            return False
        # a stem must not be a prefix of another stem (keeps mentions unambiguous for tiny tokenisers too)
        return True

    def word(self, min_syl: int = 2, max_syl: int = 2, suffix_choices: list[str] | None = None) -> str:
        for _ in range(10_000):
            stem = self._stem(min_syl, max_syl)
            if suffix_choices:
                suf = self.rng.choice(suffix_choices)
                # avoid doubled vowels at the join ("Varnaia")
                if stem[-1] in "aeiou" and suf[0] in "aeiou":
                    stem = stem[:-1]
                w = stem + suf
            else:
                w = stem
            if self._ok(w) and stem.lower() not in self.stems:
                self.used.add(w.lower())
                self.stems.add(stem.lower())
                return w.capitalize()
        raise RuntimeError("name space exhausted")  # pragma: no cover - only for absurd sizes

    def country(self) -> str:
        return self.word(1, 2, COUNTRY_SUFFIXES)

    def language(self, country: str) -> str:
        base = country.lower()
        for suf in COUNTRY_SUFFIXES:
            if base.endswith(suf) and len(base) - len(suf) >= 3:
                base = base[: -len(suf)]
                break
        for suf in self.rng.sample(LANGUAGE_SUFFIXES, len(LANGUAGE_SUFFIXES)):
            w = base + suf if not (base[-1] in "aeiou" and suf[0] in "aeiou") else base[:-1] + suf
            if self._ok(w):
                self.used.add(w.lower())
                return w.capitalize()
        return self.word(2, 2, ["ese"])

    def single(self) -> str:
        return self.word(2, 2)

    def first_name(self) -> str:
        return self.word(1, 2, ["a", "o", "en", "is", "el", "an", "ia", "ik", "ur"])

    def last_name(self) -> str:
        return self.word(2, 2, ["ek", "ov", "ani", "ez", "son", "berg", "ard", "ine", "at", "ul"])

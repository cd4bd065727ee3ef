"""Small text utilities shared by the generators and the judge (words, sentences, list items, numbers)."""

from __future__ import annotations

import re

WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENT_SPLIT = re.compile(r"(?<=[.!?])[\"')]*\s+|\n+")
LIST_ITEM_RE = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s*(.+?)\s*$")
NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
YEAR_RE = re.compile(r"(?<![\w.])(1[0-9]{3}|20[0-4][0-9])(?![\w])")
SPECIAL_TOKEN_RE = re.compile(r"<\|[a-z_]+\|>")


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def norm(text: str) -> str:
    return " ".join(words(text))


def sentences(text: str) -> list[str]:
    """Split on sentence-final punctuation and on newlines. List markers stay with their item."""
    parts = [p.strip() for p in _SENT_SPLIT.split(text)]
    out: list[str] = []
    for p in parts:
        if not p:
            continue
        # "1." on its own is a list marker that split off: glue it to the next part
        if out and re.fullmatch(r"\d+[.)]", out[-1]):
            out[-1] = out[-1] + " " + p
        else:
            out.append(p)
    return out


def count_sentences(text: str) -> int:
    """Sentences of running text; a list counts as one sentence per item."""
    return len([s for s in sentences(text) if words(s)])


def list_items(text: str) -> list[str]:
    """Items of a numbered or bulleted list; if there is none, the items of an inline "A, B and C" list."""
    items = []
    for line in text.splitlines():
        m = LIST_ITEM_RE.match(line)
        if m:
            items.append(m.group(1).strip().rstrip("."))
    return items


def inline_items(text: str) -> list[str]:
    body = text.strip().rstrip(".")
    if ":" in body:
        body = body.split(":", 1)[1]
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", body)
    return [p.strip() for p in parts if p.strip()]


def numbers(text: str) -> list[float]:
    out = []
    for m in NUMBER_RE.finditer(text):
        try:
            out.append(float(m.group(0).replace(",", "")))
        except ValueError:  # pragma: no cover
            pass
    return out


def years(text: str) -> list[int]:
    return [int(y) for y in YEAR_RE.findall(text)]


def trigrams(ws: list[str]) -> list[tuple[str, str, str]]:
    return [tuple(ws[i:i + 3]) for i in range(len(ws) - 2)]  # type: ignore[misc]


def lower_first(s: str) -> str:
    """Lower-case the first word when it is an ordinary word (so "Sure, the capital ..." reads well); names keep capitals."""
    first = s.split(" ", 1)[0].rstrip(",.")
    if first in _ORDINARY:
        return s[0].lower() + s[1:]
    return s


_ORDINARY = {"The", "It", "A", "An", "In", "People", "Most", "Other", "Cities", "Visitors", "There", "This", "Everyone",
             "Honestly", "Every", "Once", "Long", "Join", "She", "He", "You", "Here", "Good", "Let", "Please", "My", "Sure",
             "Some", "Many", "That", "These", "Those", "What", "Which", "Who", "When", "Where", "Why", "How", "Its", "Our",
             "Their", "Because", "As", "After", "Before", "One", "Two", "Three", "Yes", "No", "Well", "Okay", "Certainly",
             "Indeed", "Apparently", "Someone", "Fun", "Only", "Just", "Easy", "First", "Then", "If", "To", "For", "On",
             "At", "By", "With", "From", "Of", "And", "But", "Or", "So", "We", "They", "Thanks", "Thank", "Great"}


def clean_response(text: str) -> str:
    """What the judge scores: text before any special token, without surrounding whitespace or a leading answer label."""
    m = SPECIAL_TOKEN_RE.search(text)
    if m:
        text = text[: m.start()]
    text = text.strip()
    text = re.sub(r"^(?:A|Answer|Assistant|Reply)\s*:\s*", "", text)
    return text.strip()

"""Preference data: K-way rankings and pairwise comparisons, read from JSONL files or the comparison store.

Everything becomes a :class:`Comparison`: one prompt, K >= 2 responses, a ranking as tiers (best first; responses in
one tier are tied) and the strict (better, worse) pairs it implies. Ties give no pair. Accepted line shapes (JSONL, or
``.jsonl.gz``; blank lines ignored; the shape is decided per line):

* ranked: ``{"prompt", "responses": [K strings], "ranking": tiers or a flat order, "labeler"?, "split"?, "flags"?}``
  (what ``igpt label`` and ``ComparisonStore.export_ranked`` write);
* pairwise: ``{"prompt", "chosen", "rejected"}`` (``prompt`` a string or chat messages; ``chosen``/``rejected`` strings,
  or assistant messages as in TRL's conversational format);
* Anthropic HH: ``{"chosen", "rejected"}`` full dialogues ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``. The shared prefix up to
  the last ``Assistant:`` turn is the prompt, rendered as chat messages; the rest of each string is the response.

Policy for bad input: a line that is not JSON, lacks a field, has the wrong types, K < 2, or a ranking that is not a
permutation raises a one-line ``UserError`` naming ``file:line``. Data that is well-formed but unusable (an empty
response, chosen identical to rejected, an all-tied ranking, HH dialogues that differ before the last assistant turn)
is skipped and counted in a :class:`SkipReport`, which the reward stage prints.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

HELDOUT_SPLIT = "rm-heldout"  # comparisons stored with this split are for evaluation only; the reward model never trains on them
EMPTY_POLICIES = ("skip", "keep", "error")

@dataclass
class Comparison:
    """One prompt, K responses and a ranking of them (tiers, best first)."""

    prompt: Any  # a user string, or chat messages ending with a user turn
    responses: list[str]
    ranking: list[list[int]]
    labeler: str = ""
    pool: str = "train"  # which labeler pool ranked it: "train" or "heldout"
    heldout: bool = False  # from the held-out split: evaluated on, never trained on
    where: str = ""  # file:line, or store:ranking_id
    prompt_id: str = ""
    task: str = ""  # responses with the same task were sampled once and ranked by several labelers
    pairwise: bool = False  # came from a pairwise line (may be grouped with others of its prompt)
    explicit_pairs: list[tuple[int, int]] | None = None  # grouped pairwise lines need not form a total order

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Strict (better, worse) index pairs; tied responses give none, and neither do two identical texts ranked apart
        (a preference between equal texts carries no signal: the reward model scores them equally)."""
        if self.explicit_pairs is not None:
            return list(self.explicit_pairs)
        r = self.responses
        return [(i, j) for a in range(len(self.ranking)) for b in range(a + 1, len(self.ranking))
                for i in self.ranking[a] for j in self.ranking[b] if r[i] != r[j]]

    @property
    def identical_apart(self) -> int:
        """Pairs of identical texts ranked in different tiers (left out of :attr:`pairs`)."""
        r, tier = self.responses, {i: a for a, t in enumerate(self.ranking) for i in t}
        return sum(r[i] == r[j] and tier[i] != tier[j] for i in range(len(r)) for j in range(i + 1, len(r)))

    @property
    def k(self) -> int:
        return len(self.responses)


@dataclass
class SkipReport:
    """What was skipped while reading, by reason, with the first place each reason occurred."""

    counts: Counter = field(default_factory=Counter)
    first: dict = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        self.first.setdefault(reason, where)

    def merge(self, other: "SkipReport") -> None:
        for r, n in other.counts.items():
            self.counts[r] += n
            self.first.setdefault(r, other.first[r])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "nothing skipped"
        return "; ".join(f"{n} x {r} (first at {self.first[r]})" for r, n in self.counts.most_common())


# ---------------------------------------------------------------------------------------------- rankings
def to_tiers(ranking: Any, k: int, where: str) -> list[list[int]]:
    """Tiers (best first) from tiers or a flat order; a one-line error naming ``where`` unless it is a permutation of 0..k-1."""
    from ..store import normalize_ranking

    try:
        return normalize_ranking(ranking, k)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def as_messages(prompt: Any) -> list[dict]:
    """A prompt as chat messages (a string becomes one user turn)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


# ---------------------------------------------------------------------------------------------- HH dialogues
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_dialogue(text: str) -> list[dict]:
    """``"\\n\\nHuman: hi\\n\\nAssistant: hello"`` -> chat messages; consecutive turns of one role are merged."""
    msgs: list[dict] = []
    marks = list(_HH_TURN.finditer(text))
    for n, m in enumerate(marks):
        end = marks[n + 1].start() if n + 1 < len(marks) else len(text)
        role = "user" if m.group(1) == "Human" else "assistant"
        content = text[m.end() : end].strip()
        if msgs and msgs[-1]["role"] == role:
            msgs[-1]["content"] = (msgs[-1]["content"] + "\n\n" + content).strip()
        else:
            msgs.append({"role": role, "content": content})
    return msgs


def split_hh_pair(chosen: str, rejected: str) -> tuple[list[dict], str, str] | None:
    """(prompt messages, chosen response, rejected response) from two HH dialogues, or None when they do not share
    everything up to one final assistant turn. The prompt is the common text up to its last ``\\n\\nAssistant:``."""
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    marker = "\n\nAssistant:"
    cut = chosen.rfind(marker, 0, n + len(marker))  # the marker may end exactly where the texts diverge
    if cut < 0 or chosen[: cut + len(marker)] != rejected[: cut + len(marker)]:
        return None
    head = chosen[:cut]
    a, b = chosen[cut + len(marker) :], rejected[cut + len(marker) :]
    if any(m in x for m in ("\n\nHuman:", "\n\nAssistant:") for x in (a, b)):  # they differ before the last turn
        return None
    prompt = parse_hh_dialogue(head)
    if not prompt or prompt[-1]["role"] != "user":
        return None
    return prompt, a.strip(), b.strip()


# ---------------------------------------------------------------------------------------------- files
def _messages(value: Any, where: str, what: str, end: str | None = None) -> list[dict]:
    from .chat import check_messages

    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: '{what}' must be a string or a non-empty list of chat messages")
    return check_messages(value, where, end=end, what=what)


def _response_text(value: Any, where: str, what: str) -> str:
    """A response given as a string, or as assistant message(s) (TRL conversational format: the last one counts)."""
    if isinstance(value, str):
        return value
    msgs = _messages(value, where, what)
    if msgs[-1]["role"] != "assistant":
        raise UserError(f"{where}: '{what}' messages must end with an assistant turn")
    return msgs[-1]["content"]


def parse_line(obj: Any, where: str, skips: SkipReport, empty: str = "skip") -> Comparison | None:
    """One JSON object -> a Comparison (or None when skipped); see the module docstring for the shapes."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object")
    if "responses" in obj:
        return _parse_ranked(obj, where, skips, empty)
    if "chosen" in obj or "rejected" in obj:
        return _parse_pairwise(obj, where, skips, empty)
    raise UserError(f"{where}: expected 'responses' and 'ranking' (ranked) or 'chosen' and 'rejected' (pairwise)")


def _prompt_of(obj: dict, where: str) -> Any:
    if "prompt" not in obj:
        raise UserError(f"{where}: missing 'prompt'")
    p = obj["prompt"]
    if isinstance(p, str):
        return p
    return _messages(p, where, "prompt", end="user")


def _labeler_fields(obj: dict, where: str) -> dict:
    lab = obj.get("labeler", "")
    if lab is None:
        lab = ""
    if not isinstance(lab, str):
        raise UserError(f"{where}: 'labeler' must be a string")
    flags = obj.get("flags") or {}
    pool = flags.get("pool", "train") if isinstance(flags, dict) else "train"
    return {"labeler": lab, "pool": pool if pool in ("train", "heldout") else "train",
            "heldout": obj.get("split") == HELDOUT_SPLIT, "prompt_id": str(obj.get("prompt_id") or ""),
            "task": "" if obj.get("task_id") is None else str(obj["task_id"])}


def _apply_empty_policy(responses: list[str], ranking: list[list[int]], where: str, skips: SkipReport,
                        empty: str) -> tuple[list[str], list[list[int]]] | None:
    bad = [i for i, r in enumerate(responses) if not r.strip()]
    if not bad or empty == "keep":
        return responses, ranking
    if empty == "error":
        raise UserError(f"{where}: response {bad[0]} is empty (--empty-responses error)")
    keep = [i for i in range(len(responses)) if i not in bad]
    if len(keep) < 2:
        skips.add("empty response", where)
        return None
    skips.add("empty response dropped from its ranking", where)
    new_index = {old: new for new, old in enumerate(keep)}
    tiers = [[new_index[i] for i in t if i in new_index] for t in ranking]
    return [responses[i] for i in keep], [t for t in tiers if t]


def _finish(c: Comparison, where: str, skips: SkipReport) -> Comparison | None:
    if c.k < 2:
        skips.add("fewer than 2 non-empty responses", where)
        return None
    if not c.pairs:
        skips.add("all responses tied or identical (no strict pair)", where)
        return None
    if c.explicit_pairs is None and c.identical_apart:
        skips.add("identical responses ranked apart (those pairs left out)", where)
    return c


def _parse_ranked(obj: dict, where: str, skips: SkipReport, empty: str) -> Comparison | None:
    prompt = _prompt_of(obj, where)
    responses = obj["responses"]
    if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
        raise UserError(f"{where}: 'responses' must be a list of strings")
    if len(responses) < 2:
        raise UserError(f"{where}: a ranking needs K >= 2 responses, got {len(responses)}")
    if "ranking" not in obj:
        raise UserError(f"{where}: missing 'ranking'")
    tiers = to_tiers(obj["ranking"], len(responses), where)
    kept = _apply_empty_policy(responses, tiers, where, skips, empty)
    if kept is None:
        return None
    responses, tiers = kept
    return _finish(Comparison(prompt, responses, tiers, where=where, **_labeler_fields(obj, where)), where, skips)


def _parse_pairwise(obj: dict, where: str, skips: SkipReport, empty: str) -> Comparison | None:
    for key in ("chosen", "rejected"):
        if key not in obj:
            raise UserError(f"{where}: missing '{key}'")
    if "prompt" in obj:
        prompt = _prompt_of(obj, where)
        chosen = _response_text(obj["chosen"], where, "chosen")
        rejected = _response_text(obj["rejected"], where, "rejected")
    else:
        chosen, rejected = obj["chosen"], obj["rejected"]
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise UserError(f"{where}: without 'prompt', 'chosen' and 'rejected' must be full dialogue strings (HH format)")
        if "\n\nAssistant:" not in chosen or "\n\nAssistant:" not in rejected:
            raise UserError(f"{where}: no 'prompt' field and no '\\n\\nHuman: ... \\n\\nAssistant: ...' dialogue (HH format)")
        split = split_hh_pair(chosen, rejected)
        if split is None:
            if chosen == rejected:
                skips.add("chosen identical to rejected", where)
            else:
                skips.add("HH dialogues differ before the last assistant turn", where)
            return None
        prompt, chosen, rejected = split
    if chosen == rejected:
        skips.add("chosen identical to rejected", where)
        return None
    kept = _apply_empty_policy([chosen, rejected], [[0], [1]], where, skips, empty)
    if kept is None:
        return None
    responses, tiers = kept
    c = Comparison(prompt, responses, tiers, where=where, pairwise=True, **_labeler_fields(obj, where))
    return _finish(c, where, skips)


def read_comparisons(path: str | Path, empty: str = "skip", skips: SkipReport | None = None,
                     columns: dict | None = None) -> list[Comparison]:
    """Read ranked / pairwise / HH comparisons from any ``sources`` source (JSONL, JSON, parquet or arrow files, folders
    of them, saved datasets, dataset ids); a malformed record raises ``UserError`` naming where it is (file:line)."""
    from .sources import records

    if empty not in EMPTY_POLICIES:
        raise UserError(f"--empty-responses: must be one of {', '.join(EMPTY_POLICIES)}, got '{empty}'")
    skips = skips if skips is not None else SkipReport()
    out: list[Comparison] = []
    for where, obj in records(path, "comparison file", columns):
        c = parse_line(obj, where, skips, empty)
        if c is not None:
            out.append(c)
    return out


def read_store(path: str | Path, skips: SkipReport | None = None) -> list[Comparison]:
    """Every (not undone) ranking in a comparison store. Responses are kept as sampled (an empty response is a real,
    ranked model output); all-tied rankings are skipped and counted."""
    from ..store import ComparisonStore

    path = Path(path)
    if not path.is_file():
        raise UserError(f"comparison store not found: {path} (run igpt label first, or pass --data FILE)")
    skips = skips if skips is not None else SkipReport()
    store = ComparisonStore(path)
    try:
        rows = store.rankings()
    finally:
        store.close()
    out = []
    for r in rows:
        where = f"{path.name}:ranking {r['ranking_id']}"
        prompt = r["prompt_meta"].get("messages") if isinstance(r["prompt_meta"].get("messages"), list) else r["prompt"]
        flags = r["flags"] if isinstance(r["flags"], dict) else {}
        pool = flags.get("pool", "train")
        c = Comparison(prompt, list(r["responses"]), r["ranking"], labeler=r["labeler"],
                       pool=pool if pool in ("train", "heldout") else "train", heldout=r["split"] == HELDOUT_SPLIT,
                       where=where, prompt_id=r["prompt_id"] or "", task=str(r["task_id"]))
        c = _finish(c, where, skips)
        if c is not None:
            out.append(c)
    return out


def read_sources(paths: list[str], empty: str = "skip", skips: SkipReport | None = None,
                 columns: dict | None = None) -> list[Comparison]:
    """Comparisons from several sources and/or ``.sqlite`` stores, in order."""
    out: list[Comparison] = []
    for p in paths:
        if str(p).endswith((".sqlite", ".db", ".sqlite3")):
            out += read_store(p, skips)
        else:
            out += read_comparisons(p, empty, skips, columns)
    return out


def group_pairwise(comparisons: list[Comparison]) -> list[Comparison]:
    """Merge pairwise comparisons of the same prompt and labeler into one K-way comparison (responses de-duplicated),
    so that all their pairs share one batch element and each response is scored once. K-way comparisons pass through.

    A ranking exported as pairs (``export_pairwise``) and grouped again gives the same pairs and the same loss."""
    out: list[Comparison] = []
    groups: dict[tuple, Comparison] = {}
    group_pairs: dict[tuple, list[tuple[int, int]]] = {}
    for c in comparisons:
        if not c.pairwise:
            out.append(c)
            continue
        key = (prompt_key(c.prompt), c.labeler, c.heldout, c.pool)
        g = groups.get(key)
        if g is None:
            g = Comparison(c.prompt, [], [], labeler=c.labeler, pool=c.pool, heldout=c.heldout, where=c.where,
                           prompt_id=c.prompt_id, task=c.task, pairwise=True)
            groups[key] = g
            group_pairs[key] = []
            out.append(g)
        idx = []
        for text in (c.responses[c.ranking[0][0]], c.responses[c.ranking[1][0]]):
            if text not in g.responses:
                g.responses.append(text)
            idx.append(g.responses.index(text))
        group_pairs[key].append((idx[0], idx[1]))
    for key, g in groups.items():
        g.explicit_pairs = group_pairs[key]
        g.ranking = _tiers_if_total(len(g.responses), g.explicit_pairs)
    return out


def _tiers_if_total(k: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """The ranking the pairs describe when they are exactly the pairs of a strict total order, else []."""
    wins = Counter(i for i, _ in pairs)
    order = sorted(range(k), key=lambda i: -wins[i])
    total = [(order[a], order[b]) for a in range(k) for b in range(a + 1, k)]
    return [[i] for i in order] if sorted(total) == sorted(set(pairs)) and len(pairs) == len(total) else []


def shuffle_into_pairs(comparisons: list[Comparison]) -> list[Comparison]:
    """The ablation: every pair becomes its own two-response comparison (an independent training example)."""
    out = []
    for c in comparisons:
        for i, j in c.pairs:
            out.append(Comparison(c.prompt, [c.responses[i], c.responses[j]], [[0], [1]], labeler=c.labeler, pool=c.pool,
                                  heldout=c.heldout, where=c.where, prompt_id=c.prompt_id, task=c.task, pairwise=True))
    return out


# ---------------------------------------------------------------------------------------------- demonstrations
def read_demonstrations(path: str | Path) -> list[tuple[Any, str]]:
    """(prompt, response) pairs from demonstrations (any ``sources`` source): chat ``messages`` (the last assistant turn
    is the response), ``prompt``/``response``, or ``instruction``/``input``/``output``."""
    from .sources import records

    out = []
    for where, obj in records(path, "demonstrations file"):
        pr = demonstration_pair(obj, where)
        if pr is not None:
            out.append(pr)
    if not out:
        raise UserError(f"{path}: no demonstrations")
    return out


def demonstration_pair(obj: Any, where: str) -> tuple[Any, str] | None:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object")
    if "messages" in obj:
        msgs = _messages(obj["messages"], where, "messages")
        last = max((n for n, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            raise UserError(f"{where}: 'messages' needs a prompt turn and an assistant turn")
        return msgs[:last], msgs[last]["content"]
    if "prompt" in obj and ("response" in obj or "completion" in obj):
        resp = obj.get("response", obj.get("completion"))
        if not isinstance(resp, str):
            raise UserError(f"{where}: 'response' must be a string")
        return _prompt_of(obj, where), resp
    if "instruction" in obj and "output" in obj:
        inp = obj.get("input") or ""
        prompt = obj["instruction"] + ("\n\n" + inp if inp else "")
        return prompt, str(obj["output"])
    raise UserError(f"{where}: expected 'messages', 'prompt'/'response' or 'instruction'/'output'")

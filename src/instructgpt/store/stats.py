"""What the rankings say: labeler agreement (with each other, with a scorer such as the gold judge), and the arena's votes and leaderboard."""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Iterable

from instructgpt.errors import UserError
from instructgpt.evaluation import wilson_interval

from .base import StoreBase, StoreConflict, WINNERS, _agg, _check_labeler, _now, _pair_agreement


class Stats(StoreBase):
    # ------------------------------------------------------------------ agreement
    def agreement(self, labelers: Iterable[str] | None = None) -> dict:
        """Inter-labeler agreement on tasks ranked by two or more labelers.

        For every task and every two labelers who both ranked it, each pair of responses that *both* labelers ordered
        strictly (no tie in either) counts once; it agrees when they put it in the same order.  Returns
        ``{"overall": {"agree", "pairs", "rate", "tasks"}, "per_labeler": {name: {...}}, "per_pair": {"a|b": {...}}}``;
        ``rate`` is ``None`` when there are no pairs.  Arena votes are left out.
        """
        keep = set(labelers) if labelers is not None else None
        by_task: dict[int, list[tuple[str, list[list[int]]]]] = {}
        with self._read() as c:
            for r in c.execute(
                "SELECT task_id, labeler, ranking FROM rankings WHERE undone_at IS NULL AND source != 'arena' "
                "ORDER BY task_id, ranking_id"
            ):
                if keep is not None and r["labeler"] not in keep:
                    continue
                by_task.setdefault(int(r["task_id"]), []).append((r["labeler"], json.loads(r["ranking"])))
        overall = _agg()
        per_lab: dict[str, dict] = {}
        per_pair: dict[str, dict] = {}
        for task_id, items in by_task.items():
            if len(items) < 2:
                continue
            overall["tasks"] += 1
            seen_labs = set()
            for x in range(len(items)):
                for y in range(x + 1, len(items)):
                    (la, ra), (lb, rb) = items[x], items[y]
                    agree, pairs = _pair_agreement(ra, rb)
                    key = "|".join(sorted((la, lb)))
                    for slot in (overall, per_lab.setdefault(la, _agg()), per_lab.setdefault(lb, _agg()),
                                 per_pair.setdefault(key, _agg())):
                        slot["agree"] += agree
                        slot["pairs"] += pairs
                    for lab in (la, lb):
                        if lab not in seen_labs:
                            per_lab[lab]["tasks"] += 1
                            seen_labs.add(lab)
                    per_pair[key]["tasks"] += 1
        for slot in [overall, *per_lab.values(), *per_pair.values()]:
            slot["rate"] = slot["agree"] / slot["pairs"] if slot["pairs"] else None
        return {"overall": overall, "per_labeler": per_lab, "per_pair": per_pair}

    def agreement_with(
        self, scorer: Callable[[dict, str], float], labelers: Iterable[str] | None = None, *, source: str | None = None
    ) -> dict:
        """Agreement of each labeler with a scoring function (e.g. the world's gold judge).

        ``scorer(ranking_row, response_text) -> float`` (higher is better; ``ranking_row`` is a :meth:`rankings` dict,
        with ``prompt``, ``prompt_id`` and ``prompt_meta``), or ``None`` when it cannot score that prompt (the ranking
        is then left out and counted in ``"unscored"``).  Pairs the scorer ties or the labeler ties are left out.
        Returns ``{"overall": {...}, "per_labeler": {name: {"agree", "pairs", "rate", "tasks"}}, "unscored": n}``.
        """
        keep = set(labelers) if labelers is not None else None
        overall = _agg()
        per_lab: dict[str, dict] = {}
        cache: dict[tuple[int, int], float | None] = {}
        unscored = 0
        for row in self.rankings(source=source):
            if row["source"] == "arena" or (keep is not None and row["labeler"] not in keep):
                continue
            scores = []
            for i, text in enumerate(row["responses"]):
                key = (row["task_id"], i)
                if key not in cache:
                    v = scorer(row, text)
                    cache[key] = None if v is None else float(v)
                scores.append(cache[key])
            if any(v is None for v in scores):
                unscored += 1
                continue
            gold = sorted(range(len(scores)), key=lambda i: -scores[i])
            gold_tiers: list[list[int]] = []
            for i in gold:
                if gold_tiers and scores[gold_tiers[-1][0]] == scores[i]:
                    gold_tiers[-1].append(i)
                else:
                    gold_tiers.append([i])
            agree, pairs = _pair_agreement(row["ranking"], gold_tiers)
            slot = per_lab.setdefault(row["labeler"], _agg())
            for s in (overall, slot):
                s["agree"] += agree
                s["pairs"] += pairs
                s["tasks"] += 1
        for slot in [overall, *per_lab.values()]:
            slot["rate"] = slot["agree"] / slot["pairs"] if slot["pairs"] else None
        return {"overall": overall, "per_labeler": per_lab, "unscored": unscored}

    # ------------------------------------------------------------------ arena
    def add_arena_vote(
        self,
        prompt: str,
        model_a: str,
        model_b: str,
        answer_a: str,
        answer_b: str,
        winner: str,
        voter: str,
        submission_id: str | None = None,
    ) -> int:
        """Record a side-by-side vote; returns the vote id.  Idempotent by ``submission_id``.

        The vote is also stored as a K = 2 comparison (task kind ``arena``, ranking source ``arena``: ``[[0], [1]]``
        when A won, ``[[1], [0]]`` when B won, ``[[0, 1]]`` for a tie), so it appears in :meth:`rankings` and the
        exports (filter with ``source=``).
        """
        voter = _check_labeler(voter)
        if winner not in WINNERS:
            raise UserError(f"winner must be one of {WINNERS}, got {winner!r:.20}")
        for name, v in (("prompt", prompt), ("model_a", model_a), ("model_b", model_b), ("answer_a", answer_a),
                        ("answer_b", answer_b)):
            if not isinstance(v, str):
                raise UserError(f"{name} must be a string")
        if not model_a or not model_b or model_a == model_b:
            raise UserError(f"an arena vote needs two different models, got {model_a!r} and {model_b!r}")
        if submission_id is not None and (not isinstance(submission_id, str) or not submission_id):
            raise UserError("submission_id must be a non-empty string")
        with self._write() as c:
            if submission_id is not None:
                row = c.execute(
                    "SELECT vote_id, voter FROM arena_votes WHERE submission_id = ?", (submission_id,)
                ).fetchone()
                if row is not None:
                    if row["voter"] != voter:
                        raise StoreConflict(f"submission id {submission_id!r} was already used for another vote")
                    return int(row["vote_id"])
            now = _now()
            cur = c.execute(
                "INSERT INTO arena_votes(prompt, model_a, model_b, answer_a, answer_b, winner, voter, submission_id,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (prompt, model_a, model_b, answer_a, answer_b, winner, voter, submission_id, now),
            )
            vote_id = int(cur.lastrowid)
            prompt_id = "arena-" + hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:16]
            c.execute(
                "INSERT OR IGNORE INTO prompts(prompt_id, text, meta, split, created_at) VALUES (?, ?, '{}', 'arena', ?)",
                (prompt_id, prompt, now),
            )
            tcur = c.execute(
                "INSERT INTO tasks(prompt_id, task_key, kind, k, want_labels, n_labels, created_at) VALUES (?, ?, 'arena', 2, 1, 1, ?)",
                (prompt_id, f"arena:{vote_id}", now),
            )
            task_id = int(tcur.lastrowid)
            c.executemany(
                "INSERT INTO responses(task_id, idx, text, model, temperature, meta) VALUES (?, ?, ?, ?, NULL, '{}')",
                [(task_id, 0, answer_a, model_a), (task_id, 1, answer_b, model_b)],
            )
            tiers = {"a": [[0], [1]], "b": [[1], [0]], "tie": [[0, 1]]}[winner]
            rcur = c.execute(
                "INSERT INTO rankings(task_id, labeler, ranking, flags, source, submission_id, created_at)"
                " VALUES (?, ?, ?, '{}', 'arena', NULL, ?)",
                (task_id, voter, json.dumps(tiers), now),
            )
            c.execute("UPDATE arena_votes SET ranking_id = ? WHERE vote_id = ?", (int(rcur.lastrowid), vote_id))
            return vote_id

    def arena_votes(self) -> list[dict]:
        rows = self._conn().execute("SELECT * FROM arena_votes ORDER BY vote_id").fetchall()
        return [dict(r) for r in rows]

    def leaderboard(self) -> list[dict]:
        """Arena win rates per model, best first.

        ``score = (wins + ties / 2) / games``; ``ci_low``/``ci_high``: a 95% Wilson score interval for ``score`` with
        ``n = games`` (ties counted as half a win).  Each row: ``{"model", "games", "wins", "losses", "ties", "score",
        "ci_low", "ci_high"}``.
        """
        stats: dict[str, dict] = {}
        for r in self._conn().execute("SELECT model_a, model_b, winner FROM arena_votes"):
            for side, model in (("a", r["model_a"]), ("b", r["model_b"])):
                s = stats.setdefault(model, {"model": model, "games": 0, "wins": 0, "losses": 0, "ties": 0})
                s["games"] += 1
                if r["winner"] == "tie":
                    s["ties"] += 1
                elif r["winner"] == side:
                    s["wins"] += 1
                else:
                    s["losses"] += 1
        out = []
        for s in stats.values():
            score = (s["wins"] + 0.5 * s["ties"]) / s["games"]
            lo, hi = wilson_interval(s["wins"] + 0.5 * s["ties"], s["games"])
            out.append({**s, "score": score, "ci_low": lo, "ci_high": hi})
        out.sort(key=lambda s: (-s["score"], -s["games"], s["model"]))
        return out

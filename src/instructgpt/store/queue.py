"""Prompts, tasks and the labelling queue (leases, skips, progress), and the rankings labelers give."""

from __future__ import annotations

import json
import sqlite3

from instructgpt.errors import UserError

from .base import (
    StoreBase, DEFAULT_LEASE_SECONDS, MAX_K, SOURCES, StoreConflict, TASK_KINDS, UnknownTask, _check_labeler,
    _chunks, _clock, _dumps, _now, normalize_ranking,
)


class Queue(StoreBase):
    # ------------------------------------------------------------------ prompts and tasks
    def add_prompt(self, prompt_id: str, text: str, meta: dict | None = None, split: str | None = None) -> None:
        """Add a prompt; idempotent.  Re-adding the same id with different text is a ``UserError``."""
        if not isinstance(prompt_id, str) or not prompt_id:
            raise UserError(f"prompt_id must be a non-empty string, got {prompt_id!r:.60}")
        if not isinstance(text, str):
            raise UserError(f"prompt {prompt_id}: text must be a string")
        if meta is not None and not isinstance(meta, dict):
            raise UserError(f"prompt {prompt_id}: meta must be a dict")
        meta_s = _dumps(meta or {}, f"prompt {prompt_id} meta")
        with self._write() as c:
            row = c.execute("SELECT text FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
            if row is not None:
                if row["text"] != text:
                    raise UserError(f"prompt {prompt_id} is already in the store with different text")
                return
            c.execute(
                "INSERT INTO prompts(prompt_id, text, meta, split, created_at) VALUES (?, ?, ?, ?, ?)",
                (prompt_id, text, meta_s, split, _now()),
            )

    def prompt(self, prompt_id: str) -> dict | None:
        row = self._conn().execute("SELECT * FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
        if row is None:
            return None
        return {
            "prompt_id": row["prompt_id"],
            "text": row["text"],
            "meta": json.loads(row["meta"]),
            "split": row["split"],
            "created_at": row["created_at"],
        }

    def add_task(
        self,
        prompt_id: str,
        responses: list[dict],
        task_key: str | None = None,
        want_labels: int = 1,
        *,
        kind: str = "label",
    ) -> int:
        """Queue K >= 2 responses to one prompt for ranking; returns the task id.

        ``responses``: ``[{"text": str, "model": str, "temperature": float, "meta": {...}}, ...]`` (``model``,
        ``temperature``, ``meta`` optional).  ``task_key`` makes the call idempotent: the same key returns the existing
        task and writes nothing.  ``want_labels``: how many different labelers should rank it (2 for agreement).
        """
        if kind not in TASK_KINDS:
            raise UserError(f"task kind must be one of {TASK_KINDS}, got {kind!r}")
        if not isinstance(responses, (list, tuple)) or len(responses) < 2:
            n = len(responses) if isinstance(responses, (list, tuple)) else "no"
            raise UserError(f"task for prompt {prompt_id}: needs K >= 2 responses, got {n}")
        if len(responses) > MAX_K:
            raise UserError(f"task for prompt {prompt_id}: K = {len(responses)} responses is more than {MAX_K}")
        if not isinstance(want_labels, int) or isinstance(want_labels, bool) or want_labels < 1:
            raise UserError(f"task for prompt {prompt_id}: want_labels must be an integer >= 1, got {want_labels!r}")
        rows = []
        for i, r in enumerate(responses):
            if isinstance(r, str):
                r = {"text": r}
            if not isinstance(r, dict) or not isinstance(r.get("text"), str):
                raise UserError(f"task for prompt {prompt_id}: response {i} needs a string 'text'")
            temp = r.get("temperature")
            if temp is not None:
                try:
                    temp = float(temp)
                except (TypeError, ValueError):
                    raise UserError(f"task for prompt {prompt_id}: response {i} temperature {temp!r} is not a number") from None
            model = r.get("model")
            if model is not None and not isinstance(model, str):
                model = str(model)
            meta = r.get("meta") or {}
            if not isinstance(meta, dict):
                raise UserError(f"task for prompt {prompt_id}: response {i} meta must be a dict")
            rows.append((i, r["text"], model, temp, _dumps(meta, f"response {i} meta")))
        with self._write() as c:
            if task_key is not None:
                row = c.execute("SELECT task_id, prompt_id FROM tasks WHERE task_key = ?", (task_key,)).fetchone()
                if row is not None:
                    if row["prompt_id"] != prompt_id:
                        raise UserError(
                            f"task key {task_key!r} already belongs to prompt {row['prompt_id']}, not {prompt_id}"
                        )
                    return int(row["task_id"])
            if c.execute("SELECT 1 FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone() is None:
                raise UserError(f"unknown prompt_id {prompt_id!r}: call add_prompt first")
            cur = c.execute(
                "INSERT INTO tasks(prompt_id, task_key, kind, k, want_labels, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (prompt_id, task_key, kind, len(rows), want_labels, _now()),
            )
            task_id = int(cur.lastrowid)
            c.executemany(
                "INSERT INTO responses(task_id, idx, text, model, temperature, meta) VALUES (?, ?, ?, ?, ?, ?)",
                [(task_id, *row) for row in rows],
            )
            return task_id

    def tasks_with_keys(self) -> set[str]:
        """The task keys already in the store (``igpt label --resume`` skips these)."""
        rows = self._conn().execute("SELECT task_key FROM tasks WHERE task_key IS NOT NULL").fetchall()
        return {r[0] for r in rows}

    def task_ids_by_key(self) -> dict[str, int]:
        """``{task_key: task_id}`` for the keyed tasks (``igpt label --resume`` adds missing rankings to these)."""
        rows = self._conn().execute("SELECT task_key, task_id FROM tasks WHERE task_key IS NOT NULL").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def _task(self, c: sqlite3.Connection, task_id: int) -> dict | None:
        row = c.execute(
            "SELECT t.*, p.text AS prompt_text, p.meta AS prompt_meta, p.split AS split "
            "FROM tasks t JOIN prompts p ON p.prompt_id = t.prompt_id WHERE t.task_id = ?",
            (task_id,),
        ).fetchone()
        if row is None:
            return None
        resp = c.execute(
            "SELECT idx, text, model, temperature, meta FROM responses WHERE task_id = ? ORDER BY idx", (task_id,)
        ).fetchall()
        labelers = [
            r[0]
            for r in c.execute(
                "SELECT labeler FROM rankings WHERE task_id = ? AND undone_at IS NULL ORDER BY ranking_id", (task_id,)
            ).fetchall()
        ]
        return {
            "task_id": int(row["task_id"]),
            "task_key": row["task_key"],
            "kind": row["kind"],
            "prompt_id": row["prompt_id"],
            "prompt": row["prompt_text"],
            "prompt_meta": json.loads(row["prompt_meta"]),
            "split": row["split"],
            "k": int(row["k"]),
            "want_labels": int(row["want_labels"]),
            "labels": len(labelers),
            "labelers": labelers,
            "created_at": row["created_at"],
            "responses": [
                {
                    "index": int(r["idx"]),
                    "text": r["text"],
                    "model": r["model"],
                    "temperature": r["temperature"],
                    "meta": json.loads(r["meta"]),
                }
                for r in resp
            ],
        }

    def task(self, task_id: int) -> dict:
        """One task: prompt, responses (with model and temperature), how many labels it has and wants."""
        with self._read() as c:
            t = self._task(c, int(task_id))
        if t is None:
            raise UnknownTask(f"unknown task id {task_id}")
        return t

    # Conditions (on alias t) for a task a labeler may still be given: kind 'label', still wanting labels counting
    # the live leases other labelers hold on it, and not ranked or skipped by this labeler.  The first two conditions
    # match the partial index tasks_open, so only open tasks are looked at.
    _AVAILABLE = (
        "t.kind = 'label' AND t.n_labels < t.want_labels"
        " AND t.want_labels > t.n_labels + (SELECT COUNT(*) FROM leases l WHERE l.task_id = t.task_id"
        "     AND l.labeler != :lab AND l.expires_at > :now)"
        " AND NOT EXISTS (SELECT 1 FROM rankings r WHERE r.task_id = t.task_id AND r.labeler = :lab"
        "     AND r.undone_at IS NULL)"
        " AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.task_id = t.task_id AND s.labeler = :lab)"
    )

    def next_task(self, labeler: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> dict | None:
        """A task this labeler has not ranked or skipped and that needs more labels, or None when there is none.

        The task is leased to the labeler for ``lease_seconds`` so that concurrent labelers are given different tasks
        (a lease is released when the labeler ranks or skips it).  A task the labeler already holds is returned again,
        then tasks that already have a label from someone else (so the share wanting two labels gets its second one),
        then the oldest.
        """
        labeler = _check_labeler(labeler)
        now = _clock()
        args = {"lab": labeler, "now": now}
        with self._write(durable=False) as c:
            row = None
            for sql in (
                "SELECT t.task_id FROM leases m JOIN tasks t ON t.task_id = m.task_id WHERE m.labeler = :lab"
                " AND m.expires_at > :now AND " + self._AVAILABLE + " ORDER BY t.task_id LIMIT 1",
                "SELECT t.task_id FROM tasks t WHERE t.n_labels > 0 AND " + self._AVAILABLE
                + " ORDER BY t.n_labels DESC, t.task_id LIMIT 1",
                "SELECT t.task_id FROM tasks t WHERE t.n_labels = 0 AND " + self._AVAILABLE
                + " ORDER BY t.task_id LIMIT 1",
            ):
                row = c.execute(sql, args).fetchone()
                if row is not None:
                    break
            if row is None:
                return None
            task_id = int(row[0])
            c.execute("DELETE FROM leases WHERE labeler = ? AND task_id != ?", (labeler, task_id))
            c.execute(
                "INSERT OR REPLACE INTO leases(task_id, labeler, expires_at) VALUES (?, ?, ?)",
                (task_id, labeler, now + float(lease_seconds)),
            )
            return self._task(c, task_id)

    def skip_task(self, task_id: int, labeler: str) -> None:
        """The labeler passes on this task: it is not offered to them again (others may still get it)."""
        labeler = _check_labeler(labeler)
        with self._write() as c:
            if c.execute("SELECT 1 FROM tasks WHERE task_id = ?", (int(task_id),)).fetchone() is None:
                raise UnknownTask(f"unknown task id {task_id}")
            c.execute(
                "INSERT OR IGNORE INTO skips(task_id, labeler, created_at) VALUES (?, ?, ?)",
                (int(task_id), labeler, _now()),
            )
            c.execute("DELETE FROM leases WHERE task_id = ? AND labeler = ?", (int(task_id), labeler))

    def progress(self, labeler: str) -> dict:
        """``{"done": rankings by this labeler, "skipped": n, "remaining": tasks they could still be given}``."""
        labeler = _check_labeler(labeler)
        with self._read() as c:
            done = c.execute(
                "SELECT COUNT(*) FROM rankings WHERE labeler = ? AND undone_at IS NULL AND source != 'arena'",
                (labeler,),
            ).fetchone()[0]
            skipped = c.execute("SELECT COUNT(*) FROM skips WHERE labeler = ?", (labeler,)).fetchone()[0]
            remaining = c.execute(
                "SELECT COUNT(*) FROM tasks t WHERE " + self._AVAILABLE, {"lab": labeler, "now": _clock()}
            ).fetchone()[0]
        return {"done": int(done), "skipped": int(skipped), "remaining": int(remaining)}

    def queue_stats(self) -> dict:
        """Label tasks: ``{"tasks", "complete" (have all wanted labels), "pending", "labels", "wanted_labels"}``."""
        with self._read() as c:
            row = c.execute(
                "SELECT COUNT(*) AS tasks, COALESCE(SUM(n_labels >= want_labels), 0) AS complete, "
                "COALESCE(SUM(MIN(n_labels, want_labels)), 0) AS labels, COALESCE(SUM(want_labels), 0) AS wanted "
                "FROM tasks WHERE kind = 'label'"
            ).fetchone()
        return {
            "tasks": int(row["tasks"]),
            "complete": int(row["complete"]),
            "pending": int(row["tasks"]) - int(row["complete"]),
            "labels": int(row["labels"]),
            "wanted_labels": int(row["wanted"]),
        }

    # ------------------------------------------------------------------ rankings
    def submit_ranking(
        self,
        task_id: int,
        labeler: str,
        ranking: list[list[int]] | list[int],
        flags: dict | None = None,
        demonstration: str | None = None,
        submission_id: str | None = None,
        source: str = "sim",
        leased: bool = False,
    ) -> int:
        """Store one labeler's ranking of a task; returns the ranking id.

        ``ranking``: tiers best -> worst (``[[2], [0, 3], [1]]``, ties allowed) or a flat order; a permutation of the
        task's response indices.  ``flags``: free-form JSON object (the web page sends ``{"<index>": [flag, ...]}``).
        ``demonstration``: a better response written by the labeler.  ``submission_id``: a retry with the same id returns
        the same ranking id and writes nothing.  A labeler can hold one (not undone) ranking per task.
        ``leased``: the task must have been given to this labeler by :meth:`next_task` (the web server's rule): a task
        never given to them, one they skipped, or one whose lease expired and was then given to others until it wants no
        more labels is a :class:`StoreConflict`; an expired lease on a task that still wants a label is honoured.
        """
        labeler = _check_labeler(labeler)
        if source not in SOURCES:
            raise UserError(f"source must be one of {SOURCES}, got {source!r}")
        if flags is not None and not isinstance(flags, dict):
            raise UserError("flags must be a JSON object (dict)")
        if demonstration is not None and not isinstance(demonstration, str):
            raise UserError("demonstration must be a string")
        if demonstration is not None and not demonstration.strip():
            demonstration = None
        if submission_id is not None and (not isinstance(submission_id, str) or not submission_id):
            raise UserError("submission_id must be a non-empty string")
        flags_s = _dumps(flags or {}, "flags")
        try:
            task_id = int(task_id)
        except (TypeError, ValueError):
            raise UserError(f"task id must be an integer, got {task_id!r:.40}") from None
        with self._write() as c:
            if submission_id is not None:
                row = c.execute(
                    "SELECT ranking_id, task_id, labeler FROM rankings WHERE submission_id = ?", (submission_id,)
                ).fetchone()
                if row is not None:
                    if row["task_id"] != task_id or row["labeler"] != labeler:
                        raise StoreConflict(f"submission id {submission_id!r} was already used for another ranking")
                    return int(row["ranking_id"])
            trow = c.execute("SELECT k FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if trow is None:
                raise UnknownTask(f"unknown task id {task_id}")
            tiers = normalize_ranking(ranking, int(trow["k"]))
            if c.execute(
                "SELECT 1 FROM rankings WHERE task_id = ? AND labeler = ? AND undone_at IS NULL", (task_id, labeler)
            ).fetchone():
                raise StoreConflict(f"labeler {labeler!r} has already ranked task {task_id} (undo it first to re-rank)")
            if leased:
                self._check_lease(c, task_id, labeler)
            cur = c.execute(
                "INSERT INTO rankings(task_id, labeler, ranking, flags, demonstration, source, submission_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (task_id, labeler, json.dumps(tiers), flags_s, demonstration, source, submission_id, _now()),
            )
            c.execute("UPDATE tasks SET n_labels = n_labels + 1 WHERE task_id = ?", (task_id,))
            c.execute("DELETE FROM leases WHERE task_id = ? AND labeler = ?", (task_id, labeler))
            return int(cur.lastrowid)

    def _check_lease(self, c: sqlite3.Connection, task_id: int, labeler: str) -> None:
        now = _clock()
        lease = c.execute("SELECT expires_at FROM leases WHERE task_id = ? AND labeler = ?", (task_id, labeler)).fetchone()
        if lease is None:
            raise StoreConflict(f"task {task_id} is not leased to {labeler}: rank the task the server gives you")
        t = c.execute("SELECT kind, n_labels, want_labels FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        others = c.execute(
            "SELECT COUNT(*) FROM leases WHERE task_id = ? AND labeler != ? AND expires_at > ?", (task_id, labeler, now)
        ).fetchone()[0]
        live = lease["expires_at"] > now
        full = t["n_labels"] >= t["want_labels"] or (not live and t["n_labels"] + others >= t["want_labels"])
        if t["kind"] != "label" or full:
            raise StoreConflict(f"task {task_id}: your lease expired and the task was given to another labeler; "
                                "your ranking was not saved, take the next task")

    def undo_last(self, labeler: str) -> bool:
        """Withdraw this labeler's most recent ranking (not arena votes); returns False when there is none.

        The ranking is kept, marked undone, and left out of every query and export; its task is leased back to the
        labeler so that :meth:`next_task` offers it again at once.
        """
        labeler = _check_labeler(labeler)
        with self._write() as c:
            row = c.execute(
                "SELECT ranking_id, task_id FROM rankings WHERE labeler = ? AND undone_at IS NULL AND source != 'arena' "
                "ORDER BY ranking_id DESC LIMIT 1",
                (labeler,),
            ).fetchone()
            if row is None:
                return False
            c.execute("UPDATE rankings SET undone_at = ? WHERE ranking_id = ?", (_now(), row["ranking_id"]))
            c.execute("UPDATE tasks SET n_labels = n_labels - 1 WHERE task_id = ?", (row["task_id"],))
            c.execute(
                "INSERT OR REPLACE INTO leases(task_id, labeler, expires_at) VALUES (?, ?, ?)",
                (row["task_id"], labeler, _clock() + DEFAULT_LEASE_SECONDS),
            )
            return True

    def rankings(
        self, labeler: str | None = None, source: str | None = None, *, include_undone: bool = False
    ) -> list[dict]:
        """Rankings (oldest first) joined with their prompt and responses.

        Each: ``{"ranking_id", "task_id", "task_key", "prompt_id", "prompt", "prompt_meta", "split", "responses": [texts],
        "models": [...], "temperatures": [...], "ranking": tiers, "labeler", "flags", "demonstration", "source",
        "submission_id", "created_at", "undone"}``.
        """
        where, args = [], []
        if labeler is not None:
            where.append("r.labeler = ?")
            args.append(labeler)
        if source is not None:
            if source not in SOURCES:
                raise UserError(f"source must be one of {SOURCES}, got {source!r}")
            where.append("r.source = ?")
            args.append(source)
        if not include_undone:
            where.append("r.undone_at IS NULL")
        sql = (
            "SELECT r.*, t.task_key, t.prompt_id, p.text AS prompt_text, p.meta AS prompt_meta, p.split AS split "
            "FROM rankings r JOIN tasks t ON t.task_id = r.task_id JOIN prompts p ON p.prompt_id = t.prompt_id"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.ranking_id"
        with self._read() as c:
            rows = c.execute(sql, args).fetchall()
            task_ids = sorted({int(r["task_id"]) for r in rows})
            resp: dict[int, list] = {t: [] for t in task_ids}
            for chunk in _chunks(task_ids, 500):
                q = ",".join("?" * len(chunk))
                for r in c.execute(
                    f"SELECT task_id, idx, text, model, temperature FROM responses WHERE task_id IN ({q}) "
                    "ORDER BY task_id, idx",
                    chunk,
                ):
                    resp[int(r["task_id"])].append(r)
        out = []
        for r in rows:
            rs = resp[int(r["task_id"])]
            out.append(
                {
                    "ranking_id": int(r["ranking_id"]),
                    "task_id": int(r["task_id"]),
                    "task_key": r["task_key"],
                    "prompt_id": r["prompt_id"],
                    "prompt": r["prompt_text"],
                    "prompt_meta": json.loads(r["prompt_meta"]),
                    "split": r["split"],
                    "responses": [x["text"] for x in rs],
                    "models": [x["model"] for x in rs],
                    "temperatures": [x["temperature"] for x in rs],
                    "ranking": json.loads(r["ranking"]),
                    "labeler": r["labeler"],
                    "flags": json.loads(r["flags"]),
                    "demonstration": r["demonstration"],
                    "source": r["source"],
                    "submission_id": r["submission_id"],
                    "created_at": r["created_at"],
                    "undone": r["undone_at"] is not None,
                }
            )
        return out

    def count_rankings(self, *, source: str | None = None, include_undone: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM rankings WHERE 1=1"
        args: list = []
        if source is not None:
            sql += " AND source = ?"
            args.append(source)
        if not include_undone:
            sql += " AND undone_at IS NULL"
        return int(self._conn().execute(sql, args).fetchone()[0])

    def labeler_counts(self) -> dict[str, dict]:
        """Per labeler: ``{"rankings", "sim", "human", "arena", "skipped", "demonstrations", "undone"}``."""
        out: dict[str, dict] = {}

        def slot(name: str) -> dict:
            return out.setdefault(
                name, {"rankings": 0, "sim": 0, "human": 0, "arena": 0, "skipped": 0, "demonstrations": 0, "undone": 0}
            )

        with self._read() as c:
            for r in c.execute(
                "SELECT labeler, source, COUNT(*) AS n, COUNT(demonstration) AS d FROM rankings "
                "WHERE undone_at IS NULL GROUP BY labeler, source"
            ):
                s = slot(r["labeler"])
                s[r["source"]] += int(r["n"])
                s["demonstrations"] += int(r["d"])
                if r["source"] != "arena":
                    s["rankings"] += int(r["n"])
            for r in c.execute("SELECT labeler, COUNT(*) FROM rankings WHERE undone_at IS NOT NULL GROUP BY labeler"):
                slot(r[0])["undone"] = int(r[1])
            for r in c.execute("SELECT labeler, COUNT(*) FROM skips GROUP BY labeler"):
                slot(r[0])["skipped"] = int(r[1])
        return out

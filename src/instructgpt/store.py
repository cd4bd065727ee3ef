"""The comparison store: prompts, K sampled responses per task, labelers' rankings, arena votes, in one SQLite file.

Used by ``igpt label`` (simulated and human labelers), ``igpt serve`` (label and arena pages) and ``igpt rm`` (via the
JSONL exports).  See ``docs/store.md`` for the schema and the export formats.

Guarantees:

* WAL journal, ``synchronous=FULL``: a ranking that a call returned for is on disk; a process killed mid-write leaves
  either the whole ranking or nothing.
* Idempotent writes: ``add_prompt`` (by ``prompt_id``), ``add_task`` (by ``task_key``), ``submit_ranking`` and
  ``add_arena_vote`` (by ``submission_id``).  A retry returns the same id and writes nothing new.
* Safe from many threads (one connection per thread) and many processes (SQLite locking, ``BEGIN IMMEDIATE``, a busy
  timeout).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from instructgpt.errors import UserError
from instructgpt.evaluation import wilson_interval

SCHEMA_VERSION = 1

SOURCES = ("sim", "human", "arena")
WINNERS = ("a", "b", "tie")
TASK_KINDS = ("label", "arena")
DEFAULT_LEASE_SECONDS = 600.0
MAX_K = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id   TEXT PRIMARY KEY,
    text        TEXT NOT NULL,
    meta        TEXT NOT NULL DEFAULT '{}',
    split       TEXT,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id   TEXT NOT NULL REFERENCES prompts(prompt_id),
    task_key    TEXT UNIQUE,
    kind        TEXT NOT NULL DEFAULT 'label' CHECK (kind IN ('label', 'arena')),
    k           INTEGER NOT NULL CHECK (k >= 2),
    want_labels INTEGER NOT NULL DEFAULT 1 CHECK (want_labels >= 1),
    n_labels    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_prompt ON tasks(prompt_id);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(n_labels, task_id) WHERE kind = 'label' AND n_labels < want_labels;
CREATE TABLE IF NOT EXISTS responses (
    task_id     INTEGER NOT NULL REFERENCES tasks(task_id),
    idx         INTEGER NOT NULL,
    text        TEXT NOT NULL,
    model       TEXT,
    temperature REAL,
    meta        TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (task_id, idx)
);
CREATE TABLE IF NOT EXISTS rankings (
    ranking_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       INTEGER NOT NULL REFERENCES tasks(task_id),
    labeler       TEXT NOT NULL,
    ranking       TEXT NOT NULL,
    flags         TEXT NOT NULL DEFAULT '{}',
    demonstration TEXT,
    source        TEXT NOT NULL CHECK (source IN ('sim', 'human', 'arena')),
    submission_id TEXT UNIQUE,
    created_at    TEXT NOT NULL,
    undone_at     TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS rankings_one_per_labeler ON rankings(task_id, labeler) WHERE undone_at IS NULL;
CREATE INDEX IF NOT EXISTS rankings_labeler ON rankings(labeler);
CREATE TABLE IF NOT EXISTS skips (
    task_id     INTEGER NOT NULL REFERENCES tasks(task_id),
    labeler     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (task_id, labeler)
);
CREATE TABLE IF NOT EXISTS leases (
    task_id     INTEGER NOT NULL REFERENCES tasks(task_id),
    labeler     TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    PRIMARY KEY (task_id, labeler)
);
CREATE INDEX IF NOT EXISTS leases_labeler ON leases(labeler);
CREATE TABLE IF NOT EXISTS arena_votes (
    vote_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt        TEXT NOT NULL,
    model_a       TEXT NOT NULL,
    model_b       TEXT NOT NULL,
    answer_a      TEXT NOT NULL,
    answer_b      TEXT NOT NULL,
    winner        TEXT NOT NULL CHECK (winner IN ('a', 'b', 'tie')),
    voter         TEXT NOT NULL,
    submission_id TEXT UNIQUE,
    ranking_id    INTEGER REFERENCES rankings(ranking_id),
    created_at    TEXT NOT NULL
);
"""


class StoreConflict(UserError):
    """A write that conflicts with what is stored (a ranking already given, a submission id used for something else)."""


class UnknownTask(UserError):
    """A task id that is not in the store."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clock() -> float:
    import time

    return time.time()


def _dumps(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{what} is not JSON-serialisable: {exc}") from None


def normalize_ranking(ranking: Any, k: int) -> list[list[int]]:
    """Check a ranking and return it as tiers, best first.

    Accepts tiers (``[[2], [0, 3], [1]]``: response 2 best, 0 and 3 tied, 1 worst) or a flat order (``[2, 0, 3, 1]``,
    no ties).  The indices must be a permutation of ``0..k-1``.  Raises ``UserError`` naming the problem.
    """
    if not isinstance(ranking, (list, tuple)) or not ranking:
        raise UserError(f"ranking must be a non-empty list of tiers, got {ranking!r:.80}")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in ranking):
        tiers = [[int(x)] for x in ranking]
    else:
        tiers = []
        for tier in ranking:
            if isinstance(tier, int) and not isinstance(tier, bool):
                tier = [tier]
            if not isinstance(tier, (list, tuple)) or not tier:
                raise UserError(f"ranking tiers must be non-empty lists of response indices, got {tier!r:.80}")
            for x in tier:
                if not isinstance(x, int) or isinstance(x, bool):
                    raise UserError(f"ranking entries must be integer response indices, got {x!r:.40}")
            tiers.append([int(x) for x in tier])
    flat = [x for tier in tiers for x in tier]
    if sorted(flat) != list(range(k)):
        raise UserError(f"ranking {tiers} is not a permutation of the {k} response indices 0..{k - 1}")
    return [sorted(t) for t in tiers]


def ordered_pairs(tiers: list[list[int]]) -> Iterator[tuple[int, int]]:
    """(better, worse) index pairs implied by a tiered ranking; tied responses give no pair."""
    for a in range(len(tiers)):
        for b in range(a + 1, len(tiers)):
            for i in tiers[a]:
                for j in tiers[b]:
                    yield i, j


def _rank_positions(tiers: list[list[int]]) -> dict[int, int]:
    return {i: t for t, tier in enumerate(tiers) for i in tier}


class ComparisonStore:
    """A SQLite comparison store (see the module docstring and ``docs/store.md``).

    ``ComparisonStore(path)`` creates the file (and its folder) or opens an existing one.  One object may be shared by
    many threads; several processes may open the same file.
    """

    def __init__(self, path: str | os.PathLike, *, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self._busy_timeout_s = float(busy_timeout_s)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()
        if self.path.exists() and self.path.is_dir():
            raise UserError(f"{self.path}: is a directory, expected a comparison store file (comparisons.sqlite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._init_schema()

    # ------------------------------------------------------------------ connections and transactions
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        pid = getattr(self._local, "pid", None)
        if conn is None or pid != os.getpid():
            try:
                conn = sqlite3.connect(
                    str(self.path), timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
                )
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = FULL")
            except sqlite3.DatabaseError as exc:
                raise UserError(f"{self.path}: cannot open the comparison store: {exc}") from None
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE); nested uses join the outer one (see :meth:`batch`).

        ``durable=False`` (lease bookkeeping only) commits without an fsync: still atomic, and made durable by the
        next durable commit; a power cut may forget it, which is harmless for a lease.
        """
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        # Threads of this process queue on a mutex (fair, no polling); other processes are kept out by SQLite's
        # lock and wait in its busy handler.
        with self._write_lock:
            if not durable:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous = FULL")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read snapshot."""
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def batch(self) -> Iterator["ComparisonStore"]:
        """Group many writes of this thread into one transaction (one fsync), e.g. queuing thousands of tasks.

        Everything in the block is committed together, or nothing if it raises.
        """
        with self._write():
            yield self

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    def __enter__(self) -> "ComparisonStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _init_schema(self) -> None:
        conn = self._conn()
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise UserError(f"{self.path}: could not switch the comparison store to WAL mode (got {mode})")
            with self._write() as c:
                have = c.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
                ).fetchone()
                if have:
                    row = c.execute("SELECT MAX(version) FROM schema_version").fetchone()
                    version = row[0] if row else None
                    if version is not None and version > SCHEMA_VERSION:
                        raise UserError(
                            f"{self.path}: comparison store schema version {version} is newer than this instructgpt "
                            f"supports ({SCHEMA_VERSION}); upgrade instructgpt"
                        )
                else:
                    others = c.execute(
                        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                    ).fetchone()[0]
                    if others:
                        raise UserError(f"{self.path}: is a SQLite file but not a comparison store (no schema_version)")
                    version = None
                if have and "n_labels" not in {r[1] for r in c.execute("PRAGMA table_info(tasks)")}:
                    # stores written before the label counter existed: add and fill it
                    c.execute("ALTER TABLE tasks ADD COLUMN n_labels INTEGER NOT NULL DEFAULT 0")
                    c.execute(
                        "UPDATE tasks SET n_labels = (SELECT COUNT(*) FROM rankings r WHERE r.task_id = tasks.task_id "
                        "AND r.undone_at IS NULL)"
                    )
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                if version is None:
                    c.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
        except sqlite3.DatabaseError as exc:
            self.close()
            raise UserError(f"{self.path}: not a readable comparison store: {exc}") from None
        except UserError:
            self.close()
            raise

    def schema_version(self) -> int:
        return int(self._conn().execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``"ok"`` when the file is sound)."""
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

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

    # ------------------------------------------------------------------ exports
    def export_ranked(
        self, path: str | os.PathLike, *, source: str | None = None, labelers: Iterable[str] | None = None
    ) -> int:
        """Write rankings as JSONL, one line per ranking; returns the number of lines.  See ``docs/store.md``.

        ``{"prompt", "responses": [...], "ranking": [[best indices], ..., [worst]], "labeler", "prompt_id", "models",
        "temperatures", "source", "flags", "demonstration", "task_id", "ranking_id", "split", "created_at"}``.
        ``ranking`` is always a list of tiers (ties share a tier).  Undone rankings are left out.
        """
        keep = set(labelers) if labelers is not None else None
        n = 0
        with _atomic_text(path) as f:
            for r in self.rankings(source=source):
                if keep is not None and r["labeler"] not in keep:
                    continue
                rec = {
                    "prompt": r["prompt"],
                    "responses": r["responses"],
                    "ranking": r["ranking"],
                    "labeler": r["labeler"],
                    "prompt_id": r["prompt_id"],
                    "models": r["models"],
                    "temperatures": r["temperatures"],
                    "source": r["source"],
                    "flags": r["flags"],
                    "demonstration": r["demonstration"],
                    "task_id": r["task_id"],
                    "ranking_id": r["ranking_id"],
                    "split": r["split"],
                    "created_at": r["created_at"],
                }
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        return n

    def export_pairwise(
        self, path: str | os.PathLike, *, source: str | None = None, labelers: Iterable[str] | None = None
    ) -> int:
        """Write every (better, worse) pair implied by each ranking as JSONL; ties dropped; returns the line count.

        ``{"prompt", "chosen", "rejected", "labeler", "prompt_id", "source", "ranking_id"}``.
        """
        keep = set(labelers) if labelers is not None else None
        n = 0
        with _atomic_text(path) as f:
            for r in self.rankings(source=source):
                if keep is not None and r["labeler"] not in keep:
                    continue
                for i, j in ordered_pairs(r["ranking"]):
                    rec = {
                        "prompt": r["prompt"],
                        "chosen": r["responses"][i],
                        "rejected": r["responses"][j],
                        "labeler": r["labeler"],
                        "prompt_id": r["prompt_id"],
                        "source": r["source"],
                        "ranking_id": r["ranking_id"],
                    }
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    n += 1
        return n

    def export_demonstrations(self, path: str | os.PathLike) -> int:
        """Write the better responses labelers wrote as JSONL ``{"prompt", "response", "labeler", "prompt_id",
        "ranking_id"}`` (usable as SFT demonstrations); returns the line count."""
        n = 0
        with _atomic_text(path) as f:
            for r in self.rankings():
                if r["demonstration"]:
                    rec = {
                        "prompt": r["prompt"],
                        "response": r["demonstration"],
                        "labeler": r["labeler"],
                        "prompt_id": r["prompt_id"],
                        "ranking_id": r["ranking_id"],
                    }
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    n += 1
        return n

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


# ---------------------------------------------------------------------- helpers
def _check_labeler(labeler: Any) -> str:
    if not isinstance(labeler, str) or not labeler.strip() or len(labeler) > 200:
        raise UserError(f"labeler must be a non-empty name of at most 200 characters, got {labeler!r:.60}")
    return labeler


def _agg() -> dict:
    return {"agree": 0, "pairs": 0, "tasks": 0, "rate": None}


def _pair_agreement(ra: list[list[int]], rb: list[list[int]]) -> tuple[int, int]:
    pa, pb = _rank_positions(ra), _rank_positions(rb)
    idx = sorted(set(pa) & set(pb))
    agree = pairs = 0
    for x in range(len(idx)):
        for y in range(x + 1, len(idx)):
            i, j = idx[x], idx[y]
            da, db = pa[i] - pa[j], pb[i] - pb[j]
            if da == 0 or db == 0:
                continue
            pairs += 1
            if (da > 0) == (db > 0):
                agree += 1
    return agree, pairs


def _chunks(xs: list, n: int) -> Iterator[list]:
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


@contextlib.contextmanager
def _atomic_text(path: str | os.PathLike):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

"""The comparison store's foundation: the schema, connections and transactions, and the helpers every part uses."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

from instructgpt.errors import UserError

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


class StoreBase:
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
    def batch(self) -> Iterator["StoreBase"]:
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

    def __enter__(self) -> "StoreBase":
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

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

from .base import (
    DEFAULT_LEASE_SECONDS, MAX_K, SCHEMA_VERSION, SOURCES, TASK_KINDS, WINNERS, StoreConflict, UnknownTask, normalize_ranking,
    ordered_pairs,
)
from .exports import Exports
from .queue import Queue
from .stats import Stats

__all__ = ["ComparisonStore", "DEFAULT_LEASE_SECONDS", "MAX_K", "SCHEMA_VERSION", "SOURCES", "TASK_KINDS", "WINNERS", "StoreConflict",
           "UnknownTask", "normalize_ranking", "ordered_pairs"]


class ComparisonStore(Queue, Stats, Exports):
    """A SQLite comparison store (see the module docstring and ``docs/store.md``).

    ``ComparisonStore(path)`` creates the file (and its folder) or opens an existing one.  One object may be shared by
    many threads; several processes may open the same file.
    """

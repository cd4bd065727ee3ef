"""The store as JSONL files: ranked, pairwise (the formats igpt rm reads) and labelers' demonstrations."""

from __future__ import annotations

import json
import os
from typing import Iterable, Iterator

from .base import StoreBase, _atomic_text, ordered_pairs


class Exports(StoreBase):
    # ------------------------------------------------------------------ exports
    def export_ranked(
        self, path: str | os.PathLike, *, source: str | None = None, labelers: Iterable[str] | None = None
    ) -> int:
        """Write rankings as JSONL, one line per ranking; returns the number of lines.  See ``docs/store.md``.

        ``{"prompt", "responses": [...], "ranking": [[best indices], ..., [worst]], "labeler", "prompt_id", "models",
        "temperatures", "source", "flags", "demonstration", "task_id", "ranking_id", "split", "created_at"}``.
        ``ranking`` is always a list of tiers (ties share a tier).  Undone rankings are left out.
        """
        keys = ("prompt", "responses", "ranking", "labeler", "prompt_id", "models", "temperatures", "source", "flags",
                "demonstration", "task_id", "ranking_id", "split", "created_at")
        return _write_lines(path, ({k: r[k] for k in keys} for r in self._selected(source, labelers)))

    def export_pairwise(
        self, path: str | os.PathLike, *, source: str | None = None, labelers: Iterable[str] | None = None
    ) -> int:
        """Write every (better, worse) pair implied by each ranking as JSONL; ties dropped; returns the line count.

        ``{"prompt", "chosen", "rejected", "labeler", "prompt_id", "source", "ranking_id"}``.
        """
        return _write_lines(path, ({"prompt": r["prompt"], "chosen": r["responses"][i], "rejected": r["responses"][j],
                                    "labeler": r["labeler"], "prompt_id": r["prompt_id"], "source": r["source"],
                                    "ranking_id": r["ranking_id"]}
                                   for r in self._selected(source, labelers) for i, j in ordered_pairs(r["ranking"])))

    def export_demonstrations(self, path: str | os.PathLike) -> int:
        """Write the better responses labelers wrote as JSONL ``{"prompt", "response", "labeler", "prompt_id",
        "ranking_id"}`` (usable as SFT demonstrations); returns the line count."""
        return _write_lines(path, ({"prompt": r["prompt"], "response": r["demonstration"], "labeler": r["labeler"],
                                    "prompt_id": r["prompt_id"], "ranking_id": r["ranking_id"]}
                                   for r in self.rankings() if r["demonstration"]))

    def _selected(self, source: str | None, labelers: Iterable[str] | None) -> Iterator[dict]:
        keep = set(labelers) if labelers is not None else None
        return (r for r in self.rankings(source=source) if keep is None or r["labeler"] in keep)


def _write_lines(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write ``rows`` as JSONL, atomically (readers see the old file or the whole new one); returns the line count."""
    n = 0
    with _atomic_text(path) as f:
        for rec in rows:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n

"""Plain functions behind ``igpt world`` and ``igpt judge`` (the CLI in ``stages/world.py`` calls these)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ..errors import UserError, data_error
from .core import SIZES, World
from .judge import FLAGS


def world_command(out: str, seed: int = 0, size: str = "default", overwrite: bool = False,
                  corpus_tokens: int | None = None, quiet: bool = False, careless_share: float | None = None) -> Path:
    """Generate a world and write it to ``out`` atomically (into ``<out>.partial``, then renamed)."""
    if size not in SIZES:
        raise UserError(f"--size: unknown world size {size!r} (choose from {', '.join(SIZES)})")
    if not out:
        raise UserError("--out: give an output folder")
    dest = Path(out)
    if dest.exists() and not overwrite:
        raise UserError(f"{dest}: already exists (use --overwrite to replace it)")
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a folder")
    t0 = time.time()
    world = World.generate(seed=seed, size=size, corpus_tokens=corpus_tokens, careless_share=careless_share)
    partial = Path(str(dest) + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        world.save(partial)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(f"{partial}: cannot write the world ({e.strerror or e})") from None
    if dest.exists():
        old = Path(str(dest) + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
        os.replace(partial, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, dest)
    if not quiet:
        c = world.meta["counts"]
        p = c["prompts"]
        print(f"world: seed {seed}, size {size}: {c['entities_total']} entities, {c['corpus_documents']['train']:,} documents "
              f"(~{c['corpus_tokens_estimate']['train'] / 1e6:.2f}M tokens), prompts sft {p['sft']} / rm {p['rm']} / "
              f"ppo {p['ppo']} / eval {p['eval']}, {c['probes']} probes -> {dest} ({time.time() - t0:.1f} s)")
        for name, want in SIZES[size]["eval"].items():
            got = c["eval_sets"].get(name, 0)
            if got < want:  # drawn after the training splits, the harmful set takes what distinct prompts they left
                print(f"world: note: the evaluation set '{name}' has {got} of {want} prompts (its task families ran out of "
                      f"distinct prompts at this seed and size)")
    return dest


def read_responses(path: Path, world: World) -> list[dict]:
    """Lines of ``{"id": prompt id, "response": text}``; anything else is a one-line file:line error."""
    from ..textio import jsonl_objects

    rows = []
    for i, obj in jsonl_objects(path, "responses file"):
        if "id" not in obj:
            raise data_error(path, i, "missing field 'id' (a prompt id of the world)")
        if not isinstance(obj["id"], str):
            raise data_error(path, i, f"field 'id' must be a string, got {type(obj['id']).__name__}")
        if "response" not in obj:
            raise data_error(path, i, "missing field 'response'")
        if not isinstance(obj["response"], str):
            raise data_error(path, i, f"field 'response' must be a string, got {type(obj['response']).__name__}")
        try:
            world.prompt(obj["id"])
        except UserError:
            raise data_error(path, i, f"unknown prompt id {obj['id']!r} (not in the world)") from None
        rows.append(obj)
    if not rows:
        raise UserError(f"{path}: no lines to score")
    return rows


def judge_command(world: str, in_path: str, out_path: str, quiet: bool = False) -> dict:
    """Score each ``{"id", "response"}`` line of ``in_path`` with the gold judge; write one result line per input.

    Output lines: ``{"id", "score", "likert", "breakdown": {"flags": {...}, "details": {...}}}`` plus any other fields the
    input line had (for example a model name). Prints and returns the mean score and each criterion's failure rate.
    """
    w = World.load(world)
    src, dst = Path(in_path), Path(out_path)
    rows = read_responses(src, w)
    judge = w.judge()
    results = []
    for obj in rows:
        r = judge.score(obj["id"], obj["response"])
        line = {"id": obj["id"], "score": r.score, "likert": r.likert,
                "breakdown": {"flags": r.flags, "details": r.details}}
        for k, v in obj.items():
            if k not in line and k != "response":
                line[k] = v
        results.append((line, r))
    tmp = Path(str(dst) + ".partial")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line, _ in results:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        os.replace(tmp, dst)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{dst}: cannot write ({e.strerror or e})") from None
    n = len(results)
    summary = {
        "n": n,
        "mean_score": sum(r.score for _, r in results) / n,
        "mean_likert": sum(r.likert for _, r in results) / n,
        "failure_rates": {f: sum(1 for _, r in results if r.flags.get(f)) / n for f in FLAGS},
        "out": str(dst),
    }
    if not quiet:
        print(f"judged {n} responses: mean score {summary['mean_score']:.3f}, mean Likert {summary['mean_likert']:.2f} -> {dst}")
        for f, rate in summary["failure_rates"].items():
            print(f"  {f:<24} {rate:6.1%}")
    return summary

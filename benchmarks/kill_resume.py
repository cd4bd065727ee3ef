"""Kill -9 at random points of every stage, resume, and compare with an uninterrupted run.

    python benchmarks/kill_resume.py [--kills 3] [--seed 0] [--work /tmp/kill-resume]

A tiny run (``igpt run --preset tiny``) is made once. Then, for each of pretrain, sft, label, rm and ppo (PPO-ptx): the stage is
run uninterrupted from the stages before it (the reference), and ``--kills`` more times killed with SIGKILL at a random
moment between 5% and 70% of the reference's wall time (the whole process group: nothing can tidy up), then run again
with ``--resume`` to the end (a kill that lands after the stage has renamed its finished output, while the process
exits, needs no resume and is counted apart). A kill counts as survived when the resumed stage finishes and its result is identical to
the reference: every tensor of its model.safetensors bit for bit (label: every stored ranking, response and flag).
Prints one row per stage and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ORDER = ["world", "tokenizer", "pretrain", "sft", "comparisons", "rm", "ppo-ptx"]
# the stage folder -> its command (igpt ppo with the preset's ptx_coef > 0 is PPO-ptx, the fuller of the two)
COMMAND = {"pretrain": "pretrain", "sft": "sft", "comparisons": "label", "rm": "rm", "ppo-ptx": "ppo"}


def igpt(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "instructgpt.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def copy_before(base: Path, stage: str, dest: Path) -> None:
    """The run folder with every stage before ``stage`` complete and nothing of it or after."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ORDER[: ORDER.index(stage)]:
        shutil.copytree(base / name, dest / name)


def result(run: Path, stage: str):
    if stage == "comparisons":
        from instructgpt.store import ComparisonStore

        s = ComparisonStore(run / "comparisons" / "comparisons.sqlite")
        try:
            keep = ("task_key", "prompt_id", "responses", "models", "temperatures", "ranking", "labeler", "flags")
            return sorted(json.dumps({k: r[k] for k in keep}, sort_keys=True) for r in s.rankings())
        finally:
            s.close()
    from safetensors.torch import load_file

    return load_file(str(run / stage / "model.safetensors"))


def same(a, b) -> bool:
    if isinstance(a, list):
        return a == b
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/kill-resume")
    ap.add_argument("--stages", default=",".join(COMMAND), help="stage folders to kill (default: all)")
    args = ap.parse_args()
    from instructgpt.rundir import is_complete

    rng = random.Random(args.seed)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: the same floating-point order in every process
    base = work / "base"
    p = igpt(["run", "--preset", "tiny", "--run", str(base), "--stop-after", "rm"], env)
    assert p.wait() == 0, p.stderr.read()
    rows = []
    for stage in args.stages.split(","):
        cmd = [COMMAND[stage], "--run", None, "--preset", "tiny"]
        ref = work / f"{stage}-ref"
        copy_before(base, stage, ref)
        cmd[2] = str(ref)
        t0 = time.perf_counter()
        p = igpt(cmd, env)
        assert p.wait() == 0, p.stderr.read()
        seconds = time.perf_counter() - t0
        reference = result(ref, stage)
        survived, mid = 0, 0
        for k in range(args.kills):
            run = work / f"{stage}-kill{k}"
            copy_before(base, stage, run)
            cmd[2] = str(run)
            p = igpt(cmd, env)
            delay = rng.uniform(0.05, 0.7) * seconds
            time.sleep(delay)
            alive = p.poll() is None
            if alive:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            if not alive or is_complete(run / stage):  # it finished (its output renamed) before the kill: nothing to resume
                ok, err = is_complete(run / stage), []
            else:
                mid += 1
                q = igpt(cmd + ["--resume"], env)
                ok = q.wait() == 0
                err = q.stderr.read().strip().splitlines()
            if ok and same(result(run, stage), reference):
                survived += 1
            else:
                print(f"  {stage} kill {k} at {delay:.1f}s: resumed {'ok' if ok else 'with exit ' + str(q.returncode)}"
                      f" but {'different' if ok else (err[-1] if err else '')}", file=sys.stderr)
        rows.append((stage, seconds, mid, survived))
        print(f"{stage:<12} {seconds:6.1f}s  killed mid-stage {mid}/{args.kills}  identical {survived}/{args.kills}",
              flush=True)
    print("\n| stage | uninterrupted (s) | killed before its output was complete | identical to uninterrupted |\n|---|---|---|---|")
    for stage, seconds, mid, survived in rows:
        print(f"| {stage} | {seconds:.1f} | {mid} of {args.kills} | {survived} of {args.kills} |")


if __name__ == "__main__":
    main()

"""A stage's output folder belongs to one live process: a second process that would write it stops at once with one line,
and touches nothing; once the owner is gone (finished or killed) the folder can be resumed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from instructgpt.cli import main
from instructgpt.errors import UserError
from instructgpt.rundir import own_output

HOLDER = r"""
import sys, time
from instructgpt.rundir import own_output
with own_output(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(out: Path, seconds: float = 60.0) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_owner_is_refused_until_the_first_is_gone(tmp_path):
    out = tmp_path / "sft"
    holder = _hold(out)
    try:
        with pytest.raises(UserError, match=rf"{out} is being written by another igpt process \(pid {holder.pid}\)"):
            with own_output(out):
                pass
    finally:
        holder.kill()  # as kill -9 would: the operating system releases the lock
        holder.wait()
    with own_output(out):
        assert (tmp_path / "sft.lock").read_text() == str(__import__("os").getpid())
    assert not (tmp_path / "sft.lock").exists()  # nothing left behind


@pytest.mark.parametrize("argv", [
    ["label", "--resume"],
    ["label"],
    ["sft", "--resume"],
    ["rm"],
    ["ppo", "--resume"],
    ["eval"],
])
def test_stages_refuse_an_output_another_process_owns(tmp_path, capsys, argv, tiny_model_dir):
    """The concurrency the comparison store was lost to (a second `igpt label --resume` beside a live one), and every
    other stage: refused in one line before reading or writing anything of the folder."""
    run = tmp_path / "run"
    folder = {"label": "comparisons", "sft": "sft", "rm": "rm", "ppo": "ppo", "eval": "eval"}[argv[0]]
    work = run / f"{folder}.partial"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("the live process's work")
    holder = _hold(run / folder)
    try:
        data = tmp_path / "d.jsonl"
        data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
        extra = {"sft": ["--data", str(data)], "rm": ["--model", str(tiny_model_dir), "--data", str(data)],
                 "ppo": ["--policy", str(tiny_model_dir), "--reward-model", str(tiny_model_dir), "--prompts", str(data), "--ptx-coef", "0"]}.get(argv[0], [])
        assert main([*argv, "--run", str(run), *extra]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is being written by another igpt process (pid {holder.pid})" in err[0], err
    assert (work / "keep.txt").read_text() == "the live process's work"
    assert sorted(p.name for p in run.iterdir()) == sorted([f"{folder}.partial", f"{folder}.lock"])


def test_two_label_runs_started_together_leave_one_store(tmp_path):
    """Started at the same instant on the same output, exactly one of two owners gets the folder."""
    out = tmp_path / "comparisons"
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, str(out), "1.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    t0 = time.time()
    results = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, results
    loser = next(r for p, r in zip(procs, results) if p.returncode != 0)
    assert "is being written by another igpt process" in loser[1]
    assert time.time() - t0 < 30 and not (tmp_path / "comparisons.lock").exists()

"""igpt label: K samples per prompt from several models, simulated rankings into the SQLite store, held-out slice,
exports, human queueing, a SIGKILL mid-labelling followed by --resume (no lost or duplicated rankings), bad options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from instructgpt.errors import UserError

DATA = Path(__file__).parent / "data"
SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(DATA))
import fake_world  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _world(monkeypatch):
    from instructgpt.stages import label

    monkeypatch.setattr(label, "load_world", lambda path: fake_world.FakeWorld.load(path))


def make_run(tmp_path: Path, model_dir: Path) -> Path:
    run = tmp_path / "run"
    (run / "world").mkdir(parents=True)
    for name in ("sft", "pretrain"):
        os.symlink(model_dir, run / name)
    return run


def cfg(run: Path, **kw):
    from instructgpt.stages.label import LabelConfig

    base = dict(run=str(run), n_prompts=24, heldout_prompts=8, k=4, max_new_tokens=6, chunk_prompts=8, double_share=0.5,
                progress=False, models=["sft@1.0", "sft@0.7", "pretrain@1.0"])
    base.update(kw)
    return LabelConfig(**base)


def comparable(rows: list[dict]) -> list[tuple]:
    return sorted((r["task_key"], r["labeler"], json.dumps(r["ranking"]), json.dumps(r["responses"]), json.dumps(r["models"]))
                  for r in rows)


def test_sim_labelling_store_and_exports(tmp_path, tiny_model_dir, capsys):
    from instructgpt.data.preferences import HELDOUT_SPLIT, read_comparisons, read_store
    from instructgpt.stages import label
    from instructgpt.stages.reward import group_items, pair_agreement
    from instructgpt.store import ComparisonStore

    run = make_run(tmp_path, tiny_model_dir)
    out = label.run(cfg(run))
    assert out == run / "comparisons" and (out / "igpt_complete.json").is_file()
    printed = capsys.readouterr().out
    assert "labeler agreement" in printed and "mean gold score by model" in printed
    store = ComparisonStore(out / "comparisons.sqlite")
    rows = store.rankings()
    tasks = {r["task_id"]: r for r in rows}
    assert len(store.tasks_with_keys()) == 32 and len(tasks) == 32
    held = [t for t in tasks.values() if t["split"] == HELDOUT_SPLIT]
    assert len(held) == 8
    for t in tasks.values():
        mine = [r for r in rows if r["task_id"] == t["task_id"]]
        assert len({r["labeler"] for r in mine}) == len(mine)  # never the same labeler twice
        pools = sorted(r["flags"]["pool"] for r in mine)
        wrong = [i for i, text in enumerate(t["responses"]) if "Mira" not in text and "capital of Alba" in t["prompt"]]
        assert all("hallucination" in r["flags"][str(i)] for r in mine for i in wrong)  # the judge's problems as metadata
        assert pools == (["heldout", "train"] if t["split"] == HELDOUT_SPLIT else ["train"] * len(mine))
        assert sorted(f"{m}@{x:g}" for m, x in zip(t["models"], t["temperatures"])) == \
            ["pretrain@1", "sft@0.7", "sft@1", "sft@1"]  # K = 4 round-robin over sft@1.0, sft@0.7, pretrain@1.0
    doubles = sum(1 for t in tasks.values() if t["split"] != HELDOUT_SPLIT and sum(r["task_id"] == t["task_id"] for r in rows) == 2)
    assert 4 <= doubles <= 20 and len(rows) == 24 + doubles + 16
    # exports: training and held-out comparisons apart, ranked and pairwise
    n_train = 24 + doubles
    assert len((out / "ranked.jsonl").read_text().splitlines()) == n_train
    assert len((out / "pairwise.jsonl").read_text().splitlines()) == 6 * n_train  # simulated labelers never tie
    assert len((out / "ranked-heldout.jsonl").read_text().splitlines()) == 16
    ranked = read_comparisons(out / "ranked.jsonl", empty="keep")
    assert len(ranked) == n_train and not any(c.heldout for c in ranked)
    assert all(c.heldout for c in read_comparisons(out / "ranked-heldout.jsonl", empty="keep"))
    summary = json.loads((out / "label_summary.json").read_text())
    expected = store.agreement(labelers=[f"sim-{i}" for i in range(4)])["overall"]["rate"]
    assert summary["agreement_train_labelers"] == expected
    # the reward stage's agreement (computed from the comparisons) is the store's
    assert pair_agreement(group_items(read_store(out / "comparisons.sqlite")))["rate"] == pytest.approx(expected)
    store.close()

    with pytest.raises(UserError, match="output exists"):
        label.run(cfg(run))
    # --resume on a finished folder adds prompts in place
    more = label.run(cfg(run, n_prompts=32, resume=True))
    store = ComparisonStore(more / "comparisons.sqlite")
    assert len(store.tasks_with_keys()) == 40
    assert comparable([r for r in store.rankings() if r["task_id"] in tasks]) == comparable(rows)
    store.close()


def test_human_mode_only_queues(tmp_path, tiny_model_dir):
    from instructgpt.stages import label
    from instructgpt.store import ComparisonStore

    run = make_run(tmp_path, tiny_model_dir)
    out = label.run(cfg(run, labeler="human", n_prompts=8, heldout_prompts=4, models=["pretrain@0.5", f"{tiny_model_dir}@1.5"], k=5))
    store = ComparisonStore(out / "comparisons.sqlite")
    assert store.count_rankings() == 0 and store.queue_stats()["tasks"] == 12
    task = store.next_task("alice")
    assert task["k"] == 5 and task["want_labels"] in (1, 2)
    assert sorted(r["temperature"] for r in task["responses"]) == [0.5, 0.5, 0.5, 1.5, 1.5]
    store.close()


def test_overwrite_refuses_to_delete_human_rankings(tmp_path, tiny_model_dir):
    from instructgpt.stages import label
    from instructgpt.store import ComparisonStore

    run = make_run(tmp_path, tiny_model_dir)
    out = label.run(cfg(run, labeler="human", n_prompts=4, heldout_prompts=0, k=3))
    store = ComparisonStore(out / "comparisons.sqlite")
    task = store.next_task("alice")
    store.submit_ranking(task["task_id"], "alice", [2, 0, 1], source="human")
    store.close()
    before = (out / "comparisons.sqlite").read_bytes()
    with pytest.raises(UserError, match="1 rankings or votes by people"):
        label.run(cfg(run, n_prompts=4, heldout_prompts=0, k=3, overwrite=True))
    assert (out / "comparisons.sqlite").read_bytes() == before and not (run / "comparisons.partial").exists()
    # simulated rankings alone are replaced as asked
    run2 = make_run(tmp_path / "b", tiny_model_dir)
    label.run(cfg(run2, n_prompts=4, heldout_prompts=0, k=3))
    assert label.run(cfg(run2, n_prompts=4, heldout_prompts=0, k=3, overwrite=True, seed=1)) == run2 / "comparisons"


WRITER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import fake_world
fake_world.install()
from instructgpt.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_mid_labelling_then_resume(tmp_path, tiny_model_dir):
    from instructgpt.stages import label
    from instructgpt.store import ComparisonStore

    args = ["--n-prompts", "100", "--heldout-prompts", "12", "--k", "4", "--max-new-tokens", "6", "--chunk-prompts", "4",
            "--double-share", "0.3", "--no-progress", "--models", "sft@1.0,sft@0.7,pretrain@1.0"]
    # the reference: one uninterrupted run
    ref_run = make_run(tmp_path / "ref", tiny_model_dir)
    ref = label.run(cfg(ref_run, n_prompts=100, heldout_prompts=12, chunk_prompts=4, double_share=0.3))
    ref_store = ComparisonStore(ref / "comparisons.sqlite")
    expected = comparable(ref_store.rankings())
    ref_store.close()

    run = make_run(tmp_path / "killed", tiny_model_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(DATA), "label", "--run", str(run), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = run / "comparisons.partial" / "comparisons.sqlite"
    deadline, n = time.time() + 120, 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                s = ComparisonStore(db)
                n = s.count_rankings()
                s.close()
            except UserError:
                n = 0
            if n >= 20:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"labelling ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert n >= 20

    store = ComparisonStore(db)
    assert store.integrity_check() == "ok"
    got = comparable(store.rankings())
    assert len(got) < len(expected) and set(got) <= set(expected)  # what was written is exactly what the full run writes
    store.close()
    with pytest.raises(UserError, match="--resume"):
        label.run(cfg(run, n_prompts=100, heldout_prompts=12, chunk_prompts=4, double_share=0.3))

    # resume (in this process: the same code path as `igpt label --resume`, without a second interpreter start)
    label.run(cfg(run, n_prompts=100, heldout_prompts=12, chunk_prompts=4, double_share=0.3, resume=True))
    store = ComparisonStore(run / "comparisons" / "comparisons.sqlite")
    rows = store.rankings()
    assert len({(r["task_id"], r["labeler"]) for r in rows}) == len(rows)  # nothing duplicated
    assert comparable(rows) == expected  # nothing lost, nothing different
    assert len(store.tasks_with_keys()) == 112
    store.close()


def test_stop_after_and_resume_in_process(tmp_path, tiny_model_dir):
    from instructgpt.stages import label
    from instructgpt.store import ComparisonStore

    run = make_run(tmp_path, tiny_model_dir)
    work = label.run(cfg(run, stop_after=2))
    assert work.name == "comparisons.partial"
    s = ComparisonStore(work / "comparisons.sqlite")
    assert len(s.tasks_with_keys()) == 16
    s.close()
    out = label.run(cfg(run, resume=True))
    s = ComparisonStore(out / "comparisons.sqlite")
    assert len(s.tasks_with_keys()) == 32
    s.close()


@pytest.mark.parametrize("kw,message", [
    (dict(models=["nosuch@1.0"]), "no model folder for 'nosuch@1.0'"),
    (dict(models=["sft@warm"]), "MODEL@TEMPERATURE"),
    (dict(models=["sft@9"]), "between 0 and 5"),
    (dict(k=1), "--k: must be >= 2 and <= 64, got 1"),
    (dict(labeler="robot"), "--labeler"),
    (dict(double_share=1.5), "--double-share"),
    (dict(n_prompts=-1), "--n-prompts"),
])
def test_bad_options(tmp_path, tiny_model_dir, kw, message):
    from instructgpt.stages import label

    run = make_run(tmp_path, tiny_model_dir)
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        label.run(cfg(run, **kw))
    assert not (run / "comparisons").exists()


def test_missing_models_and_world(tmp_path, tiny_model_dir, monkeypatch):
    from instructgpt.stages import label

    run = tmp_path / "run"
    (run / "world").mkdir(parents=True)
    with pytest.raises(UserError, match="is igpt sft done"):
        label.run(cfg(run))
    monkeypatch.undo()
    os.symlink(tiny_model_dir, run / "sft")
    os.symlink(tiny_model_dir, run / "pretrain")
    with pytest.raises(UserError, match="world"):
        label.run(cfg(run, world=str(tmp_path / "nowhere")))


def test_default_models_are_the_policys_own_samples(tmp_path, tiny_model_dir):
    """By default the K responses are SFT's: K = 6 gives four at temperature 1 (what PPO samples) and two at 0.7."""
    from instructgpt.stages import label
    from instructgpt.store import ComparisonStore

    run = make_run(tmp_path, tiny_model_dir)
    c = cfg(run, n_prompts=3, heldout_prompts=1, k=6)
    out = label.run(label.LabelConfig(**{**c.__dict__, "models": []}))
    store = ComparisonStore(out / "comparisons.sqlite")
    for t in {r["task_id"]: r for r in store.rankings()}.values():
        assert sorted(f"{m}@{x:g}" for m, x in zip(t["models"], t["temperatures"])) == ["sft@0.7"] * 2 + ["sft@1"] * 4
    store.close()

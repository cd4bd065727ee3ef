"""`igpt run --preset tiny` end to end: every stage folder, the report and every metric; reruns skip; interrupted stages resume."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys

import pytest

from instructgpt.cli import main
from instructgpt.stages.evaluate import METRICS

STAGE_FOLDERS = ["world", "tokenizer", "pretrain", "sft", "comparisons", "rm", "dpo", "ppo", "ppo-ptx", "eval"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("pipeline") / "run"
    # interrupt pretraining half-way (as a kill would: a checkpoint in pretrain.partial/, no pretrain/ folder) ...
    assert main(["run", "--preset", "tiny", "--run", str(run), "--stop-after", "tokenizer"]) == 0
    from instructgpt.config import build_config
    from instructgpt.stages.pretrain import PretrainConfig, run as pretrain

    cfg = build_config(PretrainConfig, preset="tiny")
    partial = pretrain(dataclasses.replace(cfg, run=str(run), stop_after=cfg.max_steps // 2, progress=False))
    assert partial.name == "pretrain.partial" and not (run / "pretrain").exists()
    return run


def test_tiny_pipeline_end_to_end(tiny_run, capsys):
    # ... then the pipeline continues it and runs every later stage
    assert main(["run", "--preset", "tiny", "--run", str(tiny_run)]) == 0
    err = capsys.readouterr().err
    assert "pretrain     running (resuming)" in err
    metrics = [json.loads(x) for x in (tiny_run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics]
    assert steps == sorted(set(steps)) and steps[-1] > 0
    for name in STAGE_FOLDERS:
        assert (tiny_run / name / "igpt_complete.json").is_file(), name
        assert not (tiny_run / f"{name}.partial").exists(), name
    results = json.loads((tiny_run / "eval" / "results.json").read_text())
    assert set(results["models"]) >= {"pretrained", "pretrained_prompted", "sft", "ppo", "ppo_ptx", "dpo", "sft_best_of_n"}
    bon = results["models"]["sft_best_of_n"]  # the tiny preset's best of 2 SFT samples by the reward model
    assert bon["best_of_n"] == 2 and abs(bon["kl_from_sft"] - (math.log(2) - 0.5)) < 1e-6
    assert bon["pretrain_val_loss"] == results["models"]["sft"]["pretrain_val_loss"]  # the SFT model's weights
    # over-optimisation: best-of-1/2/4 from 4 SFT samples, and each RL policy at step 0 (SFT), its snapshot and its end
    oo = results["overoptimization"]
    assert [p["n"] for p in oo["best_of_n"]] == [1, 2, 4] and oo["prompts"] == 8 and oo["samples"] == 4
    assert set(oo["rl"]) == {"ppo", "ppo_ptx"} and all([p["step"] for p in v] == [0, 2, 4] for v in oo["rl"].values())
    assert all(math.isfinite(p["kl"]) and p["d"] == pytest.approx(math.sqrt(max(p["kl"], 0.0)), abs=1e-6) for v in oo["rl"].values() for p in v) and (tiny_run / "ppo" / "snapshots" / "step-2" / "config.json").is_file()
    assert oo["fit_best_of_n"] is None  # two points past d = 0 are too few to fit
    for name, m in results["models"].items():
        for key in METRICS:
            assert key in m, (name, key)
        assert 0.0 <= m["win_rate_vs_sft"] <= 1.0 and m["win_rate_ci95"][0] <= m["win_rate_vs_sft"] <= m["win_rate_ci95"][1]
        assert m["gold_score_mean"] is not None and m["pretrain_val_loss"] > 0
    for key in ("accuracy_train_labelers", "accuracy_heldout_labelers", "labeler_agreement"):
        assert results["reward_model"][key] is not None, key
    # the ceiling: the world's reference answers against SFT's (the tiny SFT model is weak, so they win most comparisons)
    ref = results["reference"]
    assert ref["gold_score_mean"] >= 0.9 and ref["n_comparisons"] == results["models"]["sft"]["n_comparisons"]
    assert ref["win_rate_ci95"][0] <= ref["win_rate_vs_sft"] <= ref["win_rate_ci95"][1] and ref["win_rate_vs_sft"] > 0.5
    sizes = results["sample_sizes"]
    assert sizes["winrate"] == results["models"]["sft"]["n_comparisons"] and sizes["harmful"] >= 8  # the tiny world's harmful set
    assert sizes["toxicity_respectful"] + sizes["toxicity_plain"] > 0 and sizes["closed_domain"] > 0
    # the paired gold gain over SFT: every held-out prompt of every set for the models, the win-rate set for SFT's resample
    n_all = len((tiny_run / "eval" / "responses" / "ppo.jsonl").read_text().splitlines())
    assert n_all > sizes["winrate"] + sizes["closed_domain"]
    for name in ("pretrained", "ppo", "ppo_ptx", "dpo", "sft_best_of_n"):
        g = results["models"][name]["gold_gain_vs_sft"]
        assert g["n"] == n_all and g["se"] > 0, (name, g)
        by = results["models"][name]["gold_gain_by_set"]
        assert set(by) >= {"winrate", "closed_domain", "false_premise", "toxicity", "harmful"}
        assert sum(v["n"] for v in by.values()) == n_all
        assert abs(sum(v["mean"] * v["n"] for v in by.values()) / n_all - g["mean"]) < 1e-4
    pre = results["models"]["pretrained"]
    assert abs(pre["gold_gain_vs_sft"]["mean"]) > 0 and results["models"]["sft"]["gold_gain_vs_sft"]["n"] == sizes["winrate"]
    for stage in STAGE_FOLDERS:
        assert stage in results["timings_s"] or stage == "eval"
        if stage != "world":  # every stage's completion record, and the results, hold its peak memory
            assert json.loads((tiny_run / stage / "igpt_complete.json").read_text())["peak_rss_mb"] > 50, stage
            assert results["peak_memory_mb"][stage]["peak_rss_mb"] > 50, stage
    assert all(r["peak_rss_mb"] > 50 for r in map(json.loads, (tiny_run / "sft" / "metrics.jsonl").read_text().splitlines()) if r["step"] > 0 and "loss" in r)
    page = (tiny_run / "eval" / "report.html").read_text()
    assert "Prompts behind each rate" in page and "Ceiling (dotted line)" in page and "gold gain over SFT, by set" in page
    # the null beside every win rate, the held-out-knowledge set, TruthfulQA's three rates, and a report a learner can read
    null = results["models"]["sft"]["win_rate_vs_sft"]
    assert all(m["win_rate_null"] == null for m in results["models"].values())
    assert sizes["novel"] > 0 and results["models"]["ppo"]["n_comparisons_novel"] == sizes["novel"]
    assert "novel" in results["models"]["ppo"]["gold_gain_by_set"] and "novel" in results["models"]["sft"]["gold_gain_by_set"]
    for name in ("sft", "ppo"):
        m = results["models"][name]
        assert 0 <= m["truthful_and_informative_rate"] <= min(m["truthful_rate"], m["informative_rate"])
        assert m["harmful_informative_rate"] is not None and m["closed_domain_informative_rate"] is not None
    assert "SFT vs its resample" in page or "null: SFT vs its resample" in page
    assert "The paper's claims, on this run" in page and "needs two or more seeds" in page
    assert "95% interval is about" in page and "mostly noise" in page
    assert "Reward over-optimisation" in page and "peak memory" in page
    # the machine's speed at the start of the run, beside the stage times
    host = results["host"]
    assert host and host[0]["device"] == "cpu" and host[0]["matmul_gflops"] > 0 and host[0]["threads"] >= 1
    assert "GFLOP/s" in page
    assert "Win rate against SFT" in page and "data:image/png;base64," in page and "http://" not in page.replace("http://www.w3.org", "")


def test_rerun_skips_completed_stages(tiny_run, capsys):
    before = (tiny_run / "eval" / "results.json").stat().st_mtime_ns
    assert main(["run", "--preset", "tiny", "--run", str(tiny_run)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("already complete, skipped") == len(STAGE_FOLDERS)
    assert "win vs SFT" in captured.out  # the final table is printed again
    assert (tiny_run / "eval" / "results.json").stat().st_mtime_ns == before


def test_run_refuses_a_different_preset_in_the_same_folder(tiny_run, capsys):
    assert main(["run", "--preset", "default", "--run", str(tiny_run)]) == 2
    assert "was started with preset tiny" in capsys.readouterr().err


def test_pipeline_config_file_tables_reach_the_stages(tmp_path, capsys):
    from instructgpt.cli import config_from_args
    from instructgpt.pipeline import RunConfig, stage_config
    from instructgpt.stages.pretrain import PretrainConfig

    f = tmp_path / "p.toml"
    f.write_text('preset = "tiny"\nseed = 3\n[pretrain]\nmax_steps = 7\n')
    cfg = config_from_args("run", RunConfig, ["--config", str(f)])
    assert cfg.preset == "tiny" and cfg.seed == 3
    sub = stage_config("pretrain", PretrainConfig, cfg, tmp_path / "r")
    assert sub.max_steps == 7 and sub.seed == 3 and sub.resume and sub.d_model == PretrainConfig.presets["tiny"]["d_model"]
    f.write_text('[pretrain]\nmax_stepz = 7\n')
    cfg = config_from_args("run", RunConfig, ["--config", str(f)])
    with pytest.raises(Exception, match="unknown key 'max_stepz'"):
        stage_config("pretrain", PretrainConfig, cfg, tmp_path / "r")


def _copy_until_rm(src, dst):
    import shutil

    assert main(["run", "--preset", "tiny", "--run", str(src), "--stop-after", "rm"]) == 0  # (done already in file order)

    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if d == str(src) and n in ("ppo", "ppo-ptx", "eval", "logs")])


def test_ppo_and_ppo_ptx_side_by_side(tiny_run, tmp_path, capsys):
    from instructgpt.stages.ppo import PPOConfig

    run = tmp_path / "run"
    _copy_until_rm(tiny_run, run)
    assert main(["run", "--preset", "tiny", "--run", str(run), "--side-by-side", "on", "--stop-after", "ppo-ptx"]) == 0
    err = capsys.readouterr().err
    assert err.count("side by side") == 2 and "already complete, skipped" not in err.split("> ppo ")[1]
    timings = json.loads((run / "timings.json").read_text())
    assert max(timings["ppo"], timings["ppo-ptx"]) <= timings["ppo+ppo-ptx"]
    for name in ("ppo", "ppo-ptx"):
        assert (run / name / "igpt_complete.json").is_file() and not (run / f"{name}.partial").exists()
        assert (run / "logs" / f"{name}.log").is_file() and timings[name] > 0  # the stage's warnings and errors
        steps = [json.loads(x)["step"] for x in (run / name / "metrics.jsonl").read_text().splitlines()]
        assert steps[-1] == PPOConfig.presets["tiny"]["steps"]
        log = (run / "logs" / f"{name}.log").read_text()  # and its progress bar, in whole lines
        assert "\r" not in log and f"{steps[-1]}/{steps[-1]}" in [ln for ln in log.splitlines() if ln.startswith(name + ":")][-1]


def test_skip_leaves_out_dpo_and_the_evaluation_compares_the_rest(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    _copy_until_rm(tiny_run, run)
    shutil.rmtree(run / "dpo", ignore_errors=True)  # (there when the whole pipeline ran first)
    assert main(["run", "--preset", "tiny", "--run", str(run), "--skip", "dpo"]) == 0
    assert not (run / "dpo").exists() and not (run / "dpo.partial").exists()
    models = json.loads((run / "eval" / "results.json").read_text())["models"]
    assert "dpo" not in models and {"sft", "ppo", "ppo_ptx"} <= set(models)
    capsys.readouterr()
    assert main(["run", "--preset", "tiny", "--run", str(run), "--skip", "rm"]) == 2
    assert capsys.readouterr().err.strip().endswith("--skip: 'rm' cannot be left out (only dpo, ppo, ppo-ptx, which no other stage needs)")
    assert main(["run", "--preset", "tiny", "--run", str(run), "--skip", "dpo", "--stop-after", "dpo"]) == 2
    assert "--stop-after: 'dpo' is not a stage of this run" in capsys.readouterr().err


def test_side_by_side_failure_is_one_line_per_stage(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    _copy_until_rm(tiny_run, run)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'preset = "tiny"\n[ppo]\nprompts = "{tmp_path / "missing.jsonl"}"\n')
    assert main(["run", "--config", str(cfg), "--run", str(run), "--side-by-side", "on"]) == 2
    err = capsys.readouterr().err
    assert "✗ ppo " in err and "✗ ppo-ptx " in err and err.count("missing.jsonl") >= 2
    assert not (run / "ppo").exists() and not (run / "ppo-ptx").exists() and not (run / "eval").exists()
    assert main(["run", "--preset", "tiny", "--run", str(run), "--side-by-side", "maybe"]) == 2
    assert "--side-by-side: must be auto, on or off, got 'maybe'" in capsys.readouterr().err


def test_a_second_run_on_the_same_folder_stops_at_once(tiny_run, capsys):
    import fcntl
    import os

    with open(tiny_run / ".igpt-run.lock", "a+") as held:  # as another igpt run would hold it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        assert main(["run", "--preset", "tiny", "--run", str(tiny_run)]) == 2
        assert f"{tiny_run} is in use by another igpt run (pid 4242)" in capsys.readouterr().err
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    assert main(["run", "--preset", "tiny", "--run", str(tiny_run), "--stop-after", "world"]) == 0
    assert (tiny_run / ".igpt-run.lock").read_text() == ""  # released, and no stale pid left behind
    assert os.path.exists(tiny_run / "world")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_side_by_side_children_stop_when_the_run_is_killed(tiny_run, tmp_path):
    """SIGKILL on igpt run (no chance to clean up): the kernel interrupts both children, which keep their checkpoints."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    run = tmp_path / "run"
    _copy_until_rm(tiny_run, run)

    def session(sid):
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # state, ppid, pgrp, session
                pids.append(int(stat.parent.name))
        return pids

    cmd = [sys.executable, "-m", "instructgpt.cli", "run", "--preset", "tiny", "--run", str(run), "--side-by-side", "on",
           "--stage-options", '{"ppo": {"steps": 400, "checkpoint_every": 1}}']
    p = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not ((run / "ppo.partial" / "checkpoint").exists() and (run / "ppo-ptx.partial" / "checkpoint").exists()):
            assert time.time() < deadline and p.poll() is None, "the RL stages did not start"
            time.sleep(0.2)
        assert len(session(p.pid)) >= 3  # igpt run and its two stages
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.time() + 60
        while session(p.pid) and time.time() < deadline:
            time.sleep(0.2)
        assert session(p.pid) == [], "the stages outlived igpt run"
    finally:
        for pid in session(p.pid):
            os.kill(pid, signal.SIGKILL)
    from instructgpt.rundir import has_checkpoint

    for name in ("ppo", "ppo-ptx"):  # (a kill between a checkpoint swap's two renames leaves the previous one, put back)
        assert has_checkpoint(run / f"{name}.partial") and not (run / name).exists()


def test_side_by_side_progress_line(tmp_path):
    from instructgpt.pipeline import _progress_line

    (tmp_path / "ppo.partial").mkdir()
    (tmp_path / "ppo.partial" / "metrics.jsonl").write_text('{"step": 0, "gold_score": 0.5}\n{"step": 1}\n{"step": 7, "kl": 0.1}\n')
    (tmp_path / "ppo-ptx.partial").mkdir()
    (tmp_path / "ppo-ptx.partial" / "metrics.jsonl").write_text('{"step": 3}\n{"step": 4, "trunc')  # being written
    line = _progress_line(["ppo", "ppo-ptx", "other"], tmp_path, {"ppo": 16, "ppo-ptx": 16})
    assert line == "ppo 7/16 · ppo-ptx 3/16 · other 0/?"
    (tmp_path / "ppo.partial").rename(tmp_path / "ppo")  # done, its process still exiting
    assert _progress_line(["ppo"], tmp_path, {"ppo": 16}) == "ppo 7/16"

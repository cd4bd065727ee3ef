"""Results over seeds: the aggregation maths, the claims' verdicts on fixed inputs, the reward model's agreement with the
gold judge by task family, and `igpt run --preset tiny --seeds 2` end to end (with an interrupted seed resumed)."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest

from instructgpt.errors import UserError
from instructgpt.pipeline import RunConfig, runs_stage
from instructgpt.rundir import STAGES
from instructgpt.evaluation import paired_gain, wilson_interval
from instructgpt.seeds import aggregate, claim_line, mean_sd, parse_seeds, pooled_gain, pooled_win_rate, significant, t975, wall_time


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("4, 7") == [4, 7]
    assert parse_seeds("5,") == [5]
    assert parse_seeds("10-14") == [10, 11, 12, 13, 14] and parse_seeds("0-2,7") == [0, 1, 2, 7]
    for bad in ("0", "-1", "a", "1,1", "1,-2", "", "3-1", "1-", "0-2,2"):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)


def test_mean_and_between_seed_sd():
    m = mean_sd([0.5, 0.6, None, 0.7])
    assert m["mean"] == pytest.approx(0.6) and m["sd"] == pytest.approx(0.1) and m["values"] == [0.5, 0.6, None, 0.7]
    assert mean_sd([0.3])["sd"] is None and mean_sd([None])["mean"] is None


def test_pooled_win_rate_is_the_wilson_interval_of_all_outcomes():
    rng = random.Random(0)
    seeds = [[rng.choice([0.0, 0.5, 1.0]) for _ in range(n)] for n in (200, 150, 180)]
    pooled = pooled_win_rate([(sum(o) / len(o), len(o)) for o in seeds])
    flat = [x for o in seeds for x in o]
    assert pooled["n"] == len(flat) and pooled["rate"] == pytest.approx(sum(flat) / len(flat))
    assert pooled["ci95"] == pytest.approx(list(wilson_interval(sum(flat), len(flat))))


def test_pooled_gain_equals_the_paired_gain_of_all_pairs_together():
    rng = random.Random(1)
    a = [[rng.random() for _ in range(n)] for n in (480, 300, 51)]
    b = [[x - 0.1 * k + rng.gauss(0, 0.2) for x in xs] for k, xs in enumerate(a)]  # the seeds' means differ
    pooled = pooled_gain([paired_gain(x, y) for x, y in zip(a, b)])
    flat = paired_gain([v for xs in a for v in xs], [v for ys in b for v in ys])
    assert pooled["n"] == flat["n"]
    assert pooled["mean"] == pytest.approx(flat["mean"], abs=1e-6) and pooled["se"] == pytest.approx(flat["se"], rel=1e-4)
    assert significant({"mean": 0.03, "se": 0.015}) and not significant({"mean": 0.029, "se": 0.015})
    assert significant({"mean": -0.1, "se": 0.02}, -1) and not significant({"mean": None, "se": None})


def _seed_result(seed: int, ppo_gain: float, ppo_win: float, harm: tuple[float, float, float], loss: tuple[float, float],
                 pre_win: float = 0.15, hall: tuple[float, float] = (0.95, 0.4)) -> dict:
    n = 200

    def gain(mean: float) -> dict:
        return {"mean": mean, "se": 0.015, "n": 480}

    model = lambda **kw: {"mode": "chat", "n_comparisons": n, "win_rate_null": 0.5, **kw}  # noqa: E731
    return {"config": {"seed": seed, "preset": "default"}, "judged_by": "heldout_labelers_and_gold_judge",
            "models": {
                "pretrained": model(mode="plain", win_rate_vs_sft=pre_win, hallucination_rate=hall[0], gold_gain_vs_sft=gain(-0.4)),
                "sft": model(win_rate_vs_sft=0.5, hallucination_rate=hall[1], harmful_compliance_rate=harm[0], truthful_and_informative_rate=0.5,
                             gold_gain_vs_sft=gain(0.0)),
                "ppo": model(win_rate_vs_sft=ppo_win, gold_gain_vs_sft=gain(ppo_gain), harmful_compliance_rate=harm[1],
                             harmful_vs_sft={"mean": harm[1] - harm[0], "se": 0.03, "n": 70}, truthful_and_informative_rate=0.6,
                             pretrain_val_loss=loss[0]),
                "ppo_ptx": model(win_rate_vs_sft=0.56, gold_gain_vs_sft=gain(0.05), harmful_compliance_rate=harm[2],
                                 harmful_vs_sft={"mean": harm[2] - harm[0], "se": 0.03, "n": 70}, truthful_and_informative_rate=0.45,
                                 pretrain_val_loss=loss[1]),
            },
            "reference": {"win_rate_vs_sft": 0.8}, "reward_model": {"accuracy_vs_gold": 0.6, "families_against_gold": []},
            "timings_s": {"pretrain": 100.0, "ppo": 50.0, "ppo-ptx": 60.0, "ppo+ppo-ptx": 61.0, "eval": 10.0}}


def test_claims_over_seeds_on_fixed_inputs():
    runs = [_seed_result(0, 0.05, 0.56, (0.20, 0.05, 0.04), (2.10, 2.00)),
            _seed_result(1, 0.01, 0.52, (0.25, 0.27, 0.10), (2.10, 2.00)),  # PPO's gain not significant, harm up
            _seed_result(2, 0.06, 0.58, (0.10, 0.02, 0.03), (2.00, 2.05), pre_win=0.25)]  # SFT < 80%, ptx's tax larger
    agg = aggregate(runs, [0, 1, 2], ["a", "b", "c"])
    v = {c["id"]: c for c in agg["claims"]}
    # the seed is the unit: one number per seed, a t interval with 2 degrees of freedom
    assert v["sft_beats_pretrained"]["holds"] and v["sft_beats_pretrained"]["seed_test"]["values"] == pytest.approx([0.35, 0.35, 0.25])
    assert v["sft_halves_hallucination"]["holds"] and v["sft_halves_hallucination"]["seeds_holding"] == 3
    g = v["ppo_gold_gain"]
    assert g["per_seed"] == [True, True, True] and g["seed_test"]["mean"] == pytest.approx(0.04)
    sd = math.sqrt((0.01 ** 2 + 0.03 ** 2 + 0.02 ** 2) / 2)
    assert g["seed_test"]["ci95"][0] == pytest.approx(0.04 - t975(2) * sd / math.sqrt(3)) and g["seed_test"]["ci95"][0] < 0
    assert not g["holds"] and g["pooled_holds"]  # pooled over 1,440 pairs it passes; over three seeds it does not
    assert v["ppo_ptx_gold_gain"]["holds"] and v["ppo_ptx_gold_gain"]["pooled"]["n"] == 1440
    w = agg["models"]["ppo"]["win_rate_pooled"]
    assert w["n"] == 600 and w["rate"] == pytest.approx((0.56 + 0.52 + 0.58) / 3)
    assert v["ppo_win_rate"]["seed_test"]["values"] == pytest.approx([0.06, 0.02, 0.08]) and not v["ppo_win_rate"]["holds"]
    assert v["ppo_harmful"]["per_seed"] == [True, False, True] and not v["ppo_harmful"]["holds"]
    assert v["ppo_ptx_harmful"]["holds"] and v["ppo_ptx_harmful"]["pooled"]["mean"] == pytest.approx((-0.16 - 0.15 - 0.07) / 3)
    assert v["ppo_truthful"]["holds"] and not v["ppo_ptx_truthful"]["holds"]
    assert v["ptx_alignment_tax"]["per_seed"] == [True, True, False] and not v["ptx_alignment_tax"]["holds"]
    line = claim_line(g, 3)
    assert line.startswith("✗") and "over 3 seeds (seed as the unit)" in line and "for these trained models: passes" in line
    assert "on every seed" in claim_line(v["sft_halves_hallucination"], 3)
    one = aggregate(runs[:1], [0], ["a"])  # one seed cannot test a claim about the recipe
    c1 = {c["id"]: c for c in one["claims"]}["ppo_gold_gain"]
    assert c1["holds"] is None and claim_line(c1, 1).startswith("?") and "needs two or more seeds" in claim_line(c1, 1)
    m = agg["models"]["ppo"]["harmful_compliance_rate"]
    assert m["values"] == [0.05, 0.27, 0.02] and m["sd"] == pytest.approx(math.sqrt(sum((x - 0.34 / 3) ** 2 for x in m["values"]) / 2))
    assert wall_time(runs[0]["timings_s"]) == 171.0  # PPO and PPO-ptx side by side count once


def test_reward_model_agreement_with_gold_by_family_flags_an_inverted_family():
    from instructgpt.stages.reward import gold_agreement

    class Judge:
        def score(self, rec, text):
            return type("G", (), {"score": float(len(text))})()  # longer is better, for the judge

    records = {f"p{i}": {"id": f"p{i}", "family": "harmful" if i < 3 else "capital_of"} for i in range(8)}
    items, scores = [], []
    for i in range(8):
        responses = ["a" * k for k in range(1, 5)]
        items.append({"prompt_id": f"p{i}", "responses": responses, "rankings": [{"pairs": [(3, 0)], "labeler": "x", "pool": "train"}]})
        # the reward model agrees with the judge on capitals and orders harmful requests' responses backwards
        scores.append([-k if i < 3 else k for k in range(4)])
    out = gold_agreement(items, scores, Judge(), records)
    by = out["accuracy_vs_gold_by_family"]
    assert by["harmful"] == {"rate": 0.0, "pairs": 18} and by["capital_of"] == {"rate": 1.0, "pairs": 30}
    assert out["families_against_gold"] == ["harmful"]
    assert out["accuracy_vs_gold"] == pytest.approx(30 / 48) and out["labelers_vs_gold"] == 1.0
    # a family with too few pairs to say is not flagged, nor one a little under 0.5 (chance, for two similar samples)
    assert gold_agreement(items[:1], scores[:1], Judge(), records)["families_against_gold"] == []
    from instructgpt.stages.reward import families_against_gold

    assert families_against_gold({"a": {"rate": 0.45, "pairs": 60}, "b": {"rate": 0.3, "pairs": 60}}) == ["b"]


def test_family_mix_of_the_comparison_prompts():
    from instructgpt.stages.label import LabelConfig, interleave_families, plan_prompts

    recs = [{"id": f"r{i:03d}", "family": "common" if i < 90 else "rare"} for i in range(100)]
    mixed = interleave_families(recs)
    assert sorted(r["id"] for r in mixed) == [r["id"] for r in recs]
    assert [r["family"] for r in mixed[:20]] == ["common", "rare"] * 10
    natural = plan_prompts(recs, LabelConfig(n_prompts=20, heldout_prompts=10, prompt_mix="natural"), [], [])
    families = plan_prompts(recs, LabelConfig(n_prompts=20, heldout_prompts=10, prompt_mix="families"), [], [])
    assert sum(p.record["family"] == "rare" for p in families) == 10 > sum(p.record["family"] == "rare" for p in natural)
    again = plan_prompts(list(reversed(recs)), LabelConfig(n_prompts=20, heldout_prompts=10, prompt_mix="families"), [], [])
    assert [p.record["id"] for p in again] == [p.record["id"] for p in families]  # a function of the seed only


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_tiny_run_over_two_seeds_resumes_and_aggregates(tmp_path, capsys):
    from instructgpt.cli import main
    from instructgpt.config import build_config
    from instructgpt.stages.pretrain import PretrainConfig, run as pretrain

    run = tmp_path / "seeds"
    # seed 0 finished, seed 1 interrupted in pretraining (a checkpoint in pretrain.partial/)
    assert main(["run", "--preset", "tiny", "--seeds", "2", "--run", str(run), "--stop-after", "tokenizer"]) == 0
    assert not (run / "eval").exists()
    assert main(["run", "--preset", "tiny", "--seed", "0", "--run", str(run / "seed-0")]) == 0
    cfg = build_config(PretrainConfig, preset="tiny")
    pretrain(dataclasses.replace(cfg, run=str(run / "seed-1"), seed=1, stop_after=cfg.max_steps // 2, progress=False))
    capsys.readouterr()
    assert main(["run", "--preset", "tiny", "--seeds", "2", "--run", str(run)]) == 0
    out = capsys.readouterr()
    assert "seed 1 (2 of 2)" in out.err and "pretrain     running (resuming)" in out.err
    for s in (0, 1):
        assert (run / f"seed-{s}" / "eval" / "results.json").is_file()
        assert json.loads((run / f"seed-{s}" / "eval" / "results.json").read_text())["config"]["seed"] == s
    agg = json.loads((run / "eval" / "results.json").read_text())
    assert agg["kind"] == "over_seeds" and agg["seeds"] == [0, 1]
    per = [json.loads((run / f"seed-{s}" / "eval" / "results.json").read_text()) for s in (0, 1)]
    for name in ("pretrained", "sft", "ppo", "ppo_ptx"):
        m = agg["models"][name]
        assert m["win_rate_vs_sft"]["values"] == [p["models"][name]["win_rate_vs_sft"] for p in per]
        assert m["win_rate_pooled"]["n"] == sum(p["models"][name]["n_comparisons"] for p in per)
    assert agg["models"]["ppo"]["harmful_vs_sft_pooled"]["n"] == sum(p["sample_sizes"]["harmful"] for p in per)
    ids = {c["id"] for c in agg["claims"]}
    assert {"sft_beats_pretrained", "ppo_gold_gain", "ppo_ptx_win_rate", "ppo_harmful", "ptx_alignment_tax"} <= ids
    assert all(len(c["per_seed"]) == 2 for c in agg["claims"])
    oo = agg["overoptimization"]  # each seed's curves, merged: best-of-1 is the mean of the seeds' SFT samples
    assert oo["seeds"] == 2 and oo["best_of_n"][0]["gold"] == pytest.approx(
        sum(p["overoptimization"]["best_of_n"][0]["gold"] for p in per) / 2, abs=1e-5) and set(oo["rl"]) == {"ppo", "ppo_ptx"}
    page = (run / "eval" / "report.html").read_text()
    assert "over seeds" in page and "The paper's claims" in page and "data:image/png;base64," in page
    assert "over-optimisation over seeds" in page
    assert "on the claimed side on" in out.out and "for these trained models), ppo:" in out.out
    # a rerun skips everything; another seed list in the same folder is refused
    assert main(["run", "--preset", "tiny", "--seeds", "2", "--run", str(run)]) == 0
    assert capsys.readouterr().err.count("already complete, skipped") == 2 * sum(runs_stage(s.folder, RunConfig()) for s in STAGES)
    assert main(["run", "--preset", "tiny", "--seeds", "3", "--run", str(run)]) == 2
    assert "was started with preset tiny and seeds [0, 1]" in capsys.readouterr().err
    assert main(["run", "--preset", "tiny", "--run", str(run)]) == 2
    assert "holds a run over seeds" in capsys.readouterr().err
    # igpt eval aggregates the same seed runs elsewhere, and gives the same figures
    other = tmp_path / "agg"
    assert main(["eval", "--seed-runs", f"{run / 'seed-0'},{run / 'seed-1'}", "--out", str(other)]) == 0
    again = json.loads((other / "results.json").read_text())
    assert again["models"] == agg["models"] and again["claims"] == agg["claims"]
    assert main(["eval", "--seed-runs", f"{run / 'seed-0'},{run / 'seed-0'}", "--out", str(tmp_path / "dup")]) == 2
    assert "share a seed" in capsys.readouterr().err and not (tmp_path / "dup").exists()

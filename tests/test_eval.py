"""Evaluation maths on fixed inputs, the probe and held-out loss measurements, and the report's escaping."""

from __future__ import annotations

import json
import math

import pytest

from instructgpt.evaluation import choice_logprobs, continuation_logprobs, heldout_ids, heldout_lm_loss, probe_accuracy, wilson_interval, win_rate


def test_wilson_interval_matches_hand_computation():
    # 60 wins of 100: p=0.6, z=1.96 -> centre (0.6 + 1.96^2/200) / (1 + 1.96^2/100) = 0.59617...
    lo, hi = wilson_interval(60, 100)
    z = 1.959964
    centre = (0.6 + z * z / 200) / (1 + z * z / 100)
    half = z * math.sqrt(0.6 * 0.4 / 100 + z * z / 40000) / (1 + z * z / 100)
    assert lo == pytest.approx(centre - half) and hi == pytest.approx(centre + half)
    assert lo == pytest.approx(0.502, abs=1e-3) and hi == pytest.approx(0.691, abs=1e-3)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0) and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_win_rate_counts_ties_as_half():
    rate, ci = win_rate([1, 1, 0, 0.5])
    assert rate == pytest.approx(0.625)
    assert ci[0] < 0.625 < ci[1]
    rate, ci = win_rate([1.0] * 50 + [0.0] * 50)
    assert rate == 0.5 and ci[0] == pytest.approx(1 - ci[1])
    assert math.isnan(win_rate([])[0])


def test_probe_accuracy_and_heldout_loss_on_a_tiny_model(tiny_model_dir):
    import torch

    from instructgpt.sampling import load_model

    model, tok = load_model(str(tiny_model_dir), torch.device("cpu"))
    lps = choice_logprobs(model, tok, "The capital of Alba is", [" Mira", " Toln city"])
    # the same numbers from a plain unpadded forward pass
    for choice, lp in zip([" Mira", " Toln city"], lps):
        pre = tok("The capital of Alba is", add_special_tokens=False)["input_ids"]
        cid = tok(choice, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([pre + cid])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        expect = sum(float(logp[len(pre) - 1 + i, t]) for i, t in enumerate(cid))
        assert lp == pytest.approx(expect, abs=1e-4)
    probes = [{"prefix": "The capital of Alba is", "choices": [" Mira", " Toln city"], "answer": int(lps[1] > lps[0])}]
    assert probe_accuracy(model, tok, probes) == 1.0
    # batched scoring (sequences of different lengths, left-padded together, in the caller's order) equals one at a time
    pairs = [("Alba", " is a country."), ("The capital of Alba is", " Mira"), ("Mira", " is"), ("Toln city lies in the north of", " Alba")]
    batched = continuation_logprobs(model, tok, pairs, batch_size=3)
    assert batched == pytest.approx([continuation_logprobs(model, tok, [p], batch_size=1)[0] for p in pairs], abs=1e-4)
    for (prefix, cont), lp in zip(pairs, batched):
        pre, cid = tok(prefix, add_special_tokens=False)["input_ids"], tok(cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([pre + cid])).logits[0, :-1].float(), -1)
        assert lp == pytest.approx(sum(float(logp[len(pre) - 1 + i, t]) for i, t in enumerate(cid)), abs=1e-4)
    many = [{"prefix": a, "choices": [b, " Mira"], "answer": 0} for a, b in pairs]
    assert probe_accuracy(model, tok, many, batch_size=1) == probe_accuracy(model, tok, many, batch_size=64)
    loss = heldout_lm_loss(model, heldout_ids(tok, ["The capital of Alba is Mira."] * 20, 200), seq_len=16)
    assert 0 < loss < 2 * math.log(len(tok))


def test_report_escapes_model_text_and_table_formats():
    from instructgpt.report.html import render
    from instructgpt.report.text import format_table

    m = {"win_rate_vs_sft": 0.6, "win_rate_ci95": [0.5, 0.7], "gold_score_mean": 0.8, "likert_mean": 5.0}
    results = {
        "judged_by": "heldout_labelers_and_gold_judge",
        "models": {"sft": {**m, "win_rate_vs_sft": 0.5}, "ppo_ptx": m},
        "samples": [{"id": "x", "category": "chat", "prompt": "<b>hi</b>", "answers": {"sft": "<script>alert(1)</script>", "ppo_ptx": "ok"}}],
        "reward_model": {"accuracy_train_labelers": 0.7, "accuracy_heldout_labelers": 0.69, "labeler_agreement": 0.73},
        "training_curves": {"ppo_ptx": {"reward": [[1, 0.1], [2, 0.3]], "kl": [[1, 0.0], [2, 0.1]]}},
        "config": {"preset": "tiny", "seed": 0},
    }
    page = render(results)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;hi&lt;/b&gt;" in page and page.count("data:image/png;base64,") == 3
    table = format_table(results)
    assert "ppo_ptx" in table and "0.60" in table and "[0.50,0.70]" in table and "0.690" in table
    assert "side by side" not in page
    results["timings_s"] = {"ppo": 111.0, "ppo-ptx": 120.0, "ppo+ppo-ptx": 120.0, "eval": 67.0}
    assert "ppo and ppo-ptx ran side by side" in render(results)


def test_paired_gold_gain_on_fixed_inputs():
    from instructgpt.evaluation import paired_gain
    from instructgpt.report.text import gain_summary

    g = paired_gain([0.5, 1.0, 0.25, 0.75], [0.5, 0.5, 0.5, 0.25])  # differences 0, 0.5, -0.25, 0.5
    assert g["n"] == 4 and g["mean"] == pytest.approx(0.1875)
    # sample sd of the differences: sqrt(((-.1875)^2 + .3125^2 + (-.4375)^2 + .3125^2) / 3) = 0.375; SE = 0.375 / 2
    assert g["se"] == pytest.approx(0.1875)
    assert paired_gain([], []) == {"mean": None, "se": None, "n": 0} and paired_gain([1.0], [0.0])["se"] is None
    results = {"models": {"sft": {"mode": "chat", "gold_gain_vs_sft": {"mean": -0.01, "se": 0.02, "n": 200}},
                          "pretrained": {"mode": "plain", "gold_gain_vs_sft": {"mean": -0.5, "se": 0.02, "n": 480}},
                          "ppo": {"mode": "chat", "gold_gain_vs_sft": {"mean": 0.041, "se": 0.015, "n": 480}}}}
    line = gain_summary(results)
    assert "all 480 held-out prompts" in line and "ppo +0.041 +- 0.015" in line and "second sample -0.010" in line
    assert "pretrained" not in line and gain_summary({"models": {"ppo": {"mode": "chat", "gold_gain_vs_sft": None}}}) == ""



def test_best_of_n_picks_the_reward_models_argmax_and_its_kl_formula():
    import numpy as np

    from instructgpt.overopt import bon_kl as best_of_n_kl
    from instructgpt.stages.evaluate import best_of_n

    class FakeRM:  # scores a response by its length, so the argmax is known
        def score_texts(self, prompts, responses):
            assert len(prompts) == len(responses)
            return [float(len(r)) for r in responses]

    samples = [["aa", "b", "cccc"], ["a", "bbbb", "cc"], ["aaa", "bb", "c"]]  # samples[k][i]
    assert best_of_n(FakeRM(), ["p0", "p1", "p2"], samples) == ["aaa", "bbbb", "cccc"]
    assert best_of_n(FakeRM(), ["p"], [["x"], ["y"]]) == ["x"]  # equal scores: the first sample
    # KL(best-of-n || pi) for a continuous pi: the max of n uniforms has density n u^(n-1); integrate its log-ratio
    for n in (1, 2, 4, 16, 64):
        u = np.linspace(1e-9, 1.0, 2_000_001)
        dens = n * u ** (n - 1)
        kl = float(np.trapezoid(dens * np.log(np.maximum(dens, 1e-300)), u))
        assert best_of_n_kl(n) == pytest.approx(kl, abs=2e-4)
    assert best_of_n_kl(1) == 0.0


def _tiny_rm(model_dir, out, seed):
    import torch
    from transformers import AutoModelForSequenceClassification

    from instructgpt.tokenizer import load_tokenizer

    torch.manual_seed(seed)
    rm = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1)
    rm.config.reward_bias, rm.config.reward_std = 0.0, 1.0
    rm.save_pretrained(str(out))
    load_tokenizer(model_dir).save_pretrained(str(out))
    (out / "igpt_complete.json").write_text("{}")
    return out


def test_without_a_world_a_judge_other_than_the_training_reward_model_decides_the_win_rates(tiny_model_dir, tmp_path):
    """Own prompts, no world: the win rates are the --judge's verdicts (recomputed here from its scores of the saved
    responses), the training reward model's mean score is reported beside them as the proxy, and the metrics a world
    would provide are absent rather than NaN."""
    import shutil

    from instructgpt.cli import main
    from instructgpt.reward_model import load_reward_model

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "sft")
    (run / "sft" / "igpt_complete.json").write_text("{}")
    _tiny_rm(tiny_model_dir, run / "rm", seed=1)
    judge = _tiny_rm(tiny_model_dir, tmp_path / "judge", seed=2)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about item {i}."}) + "\n" for i in range(12)))
    assert main(["eval", "--run", str(run), "--prompts", str(prompts), "--judge", str(judge), "--models", f"other={tiny_model_dir}",
                 "--n-winrate", "12", "--max-new-tokens", "6", "--no-report"]) == 0
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["judged_by"] == "judge_reward_model" and results["judge"] == str(judge)
    said = {name: [json.loads(x)["response"] for x in (run / "eval" / "responses" / f"{name}.jsonl").read_text().splitlines()]
            for name in ("sft", "other")}
    referee, proxy = load_reward_model(judge), load_reward_model(run / "rm")
    prompts_ = [f"Tell me about item {i}." for i in range(12)]
    j = {name: referee.score_texts(prompts_, said[name]) for name in ("sft", "other")}
    wins = [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in zip(j["other"], j["sft"])]
    other = results["models"]["other"]
    assert other["win_rate_vs_sft"] == pytest.approx(sum(wins) / len(wins))
    assert other["judge_score_mean"] == pytest.approx(sum(j["other"]) / len(j["other"]), abs=1e-5)
    assert other["rm_score_mean"] == pytest.approx(sum(proxy.score_texts(prompts_, said["other"])) / 12, abs=1e-5)
    assert other["pretrain_val_loss"] is None and other["probe_accuracy"] is None


class _LetterJudge:
    """A stand-in causal LM judge: at the last position it favours the letter of the response that contains 'good'
    (by 3 nats) and, whatever the responses, the letter A (by 1 nat: a position bias)."""

    def __init__(self, tok):
        self.tok = tok
        self.a, self.b = (tok(x, add_special_tokens=False)["input_ids"][0] for x in ("A", "B"))

    def __call__(self, input_ids, attention_mask, position_ids):
        import torch

        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], len(self.tok))
        for i, row in enumerate(input_ids):
            text = self.tok.decode(row[attention_mask[i].bool()])
            first, second = text.split("[Response A]")[1].split("[Response B]")
            second = second.split("Which response")[0]
            diff = 1.0 + (3.0 if "good" in first else 0.0) - (3.0 if "good" in second else 0.0)
            logits[i, -1, self.a], logits[i, -1, self.b] = diff, 0.0
        return type("Out", (), {"logits": logits})()

    def forward(self, input_ids, attention_mask, position_ids):  # the signature the judge inspects
        return self(input_ids, attention_mask, position_ids)


def test_a_language_model_judge_compares_in_both_orders_so_its_position_bias_cancels(tiny_tokenizer_dir):
    import math

    from instructgpt.lm_judge import PairwiseJudge, outcomes
    from instructgpt.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer_dir)
    judge = PairwiseJudge(_LetterJudge(tok), tok, "cpu", batch_size=2)
    prompts = ["Say something.", [{"role": "user", "content": "And now?"}], "Once more."]
    a, b = ["a good answer", "same", "a bad answer"], ["a bad answer", "same", "a good answer"]
    pref = judge.preference(prompts, a, b)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = (sig(4.0) + 1 - sig(-2.0)) / 2  # good first: A by 3 + 1; good second: A by -3 + 1
    assert pref[0] == pytest.approx(want, abs=1e-6) and pref[2] == pytest.approx(1 - want, abs=1e-6)
    assert pref[1] == pytest.approx(0.5, abs=1e-9)  # identical answers: the bias toward A cancels exactly
    back = judge.preference(prompts, b, a)
    assert all(x == pytest.approx(1 - y, abs=1e-9) for x, y in zip(pref, back))
    assert outcomes([want, 0.5, 1 - want]) == [1.0, 0.5, 0.0]
    first = judge.first_better(prompts, a, b)  # one order alone keeps the bias: equal answers are not a tie
    assert first[1] == pytest.approx(sig(1.0), abs=1e-6)


def test_without_a_world_a_causal_lm_can_judge_the_win_rates(tiny_model_dir, tmp_path):
    """--judge with a causal-LM folder: the pairwise judge decides, in both orders, and the results say so."""
    import shutil

    from instructgpt.cli import main
    from instructgpt.lm_judge import load_judge, outcomes

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "sft")
    (run / "sft" / "igpt_complete.json").write_text("{}")
    _tiny_rm(tiny_model_dir, run / "rm", seed=1)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about item {i}."}) + "\n" for i in range(8)))
    assert main(["eval", "--run", str(run), "--prompts", str(prompts), "--judge", str(tiny_model_dir), "--models", f"other={tiny_model_dir}",
                 "--n-winrate", "8", "--max-new-tokens", "6"]) == 0
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["judged_by"] == "judge_language_model" and results["judge"] == str(tiny_model_dir)
    said = {name: [json.loads(x)["response"] for x in (run / "eval" / "responses" / f"{name}.jsonl").read_text().splitlines()]
            for name in ("sft", "other")}
    pref = load_judge(str(tiny_model_dir), "cpu").preference([f"Tell me about item {i}." for i in range(8)], said["other"], said["sft"])
    other = results["models"]["other"]
    assert other["win_rate_vs_sft"] == pytest.approx(sum(outcomes(pref)) / 8)
    assert other["judge_score_mean"] == pytest.approx(sum(pref) / 8, abs=1e-5) and other["rm_score_mean"] is not None
    assert "comparing each answer with SFT's in both orders" in (run / "eval" / "report.html").read_text()

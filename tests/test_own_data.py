"""`igpt run` on your own model and data: tiny random GPT-2, Qwen2, GPT-NeoX and Llama models with a base tokenizer (EOS
only: no pad token, no chat template), the HH sample as JSONL, as a parquet file of TRL's prompt/chosen/rejected and as a
dataset saved with ``save_to_disk``; the judge reward model never reads a prompt the training reward model read; an
interrupted run resumes; every missing or malformed input is one line naming the option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructgpt.cli import main

HH = Path(__file__).parent / "data" / "hh_harmless_96.jsonl"
# the tiny preset, with a judge share and a held-out prompt share large enough for a 96-line sample
SHARES = ["--judge-share", "0.3", "--heldout-share", "0.25"]


def _base_tokenizer(folder: Path) -> None:
    """A byte-level BPE with nothing but an end-of-text token, as a base model's tokenizer is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [json.loads(x)["chosen"] for x in HH.read_text().splitlines()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    assert fast.pad_token is None and not fast.chat_template
    fast.save_pretrained(folder)


def _model(arch: str, folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

    _base_tokenizer(folder)
    small = dict(vocab_size=400, eos_token_id=0, bos_token_id=0)
    config = {
        "gpt2": lambda: GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=512, **small),
        "qwen2": lambda: Qwen2Config(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                                     intermediate_size=64, max_position_embeddings=512, **small),
        "neox": lambda: GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                      max_position_embeddings=512, **small),
        "llama": lambda: LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                                     intermediate_size=64, max_position_embeddings=512, **small),
    }[arch]()
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def _trl_rows() -> list[dict]:
    """The HH sample in TRL's prompt/chosen/rejected shape (strings), as public preference sets are published."""
    from instructgpt.data.preferences import SkipReport, read_comparisons

    out = []
    for c in read_comparisons(HH, skips=SkipReport()):
        text = "\n\n".join(f"{m['role']}: {m['content']}" for m in c.prompt) if not isinstance(c.prompt, str) else c.prompt
        out.append({"prompt": text, "chosen": c.responses[0], "rejected": c.responses[1]})
    return out


def _source(kind: str, tmp: Path) -> str:
    if kind == "jsonl":
        return str(HH)
    import datasets

    rows = _trl_rows()
    if kind == "parquet":
        datasets.Dataset.from_list(rows).to_parquet(tmp / "prefs.parquet")
        return str(tmp / "prefs.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp / "prefs_ds"))
    return f"{tmp / 'prefs_ds'}[train]"


def _corpus(tmp: Path) -> str:
    path = tmp / "corpus.txt"
    path.write_text("\n\n".join(json.loads(x)["chosen"] for x in HH.read_text().splitlines()), encoding="utf-8")
    return str(path)


# (architecture, where the data comes from, SFT on it?, a pretraining corpus for PPO-ptx?)
CASES = [("gpt2", "jsonl", True, False), ("qwen2", "parquet", True, False), ("neox", "disk", False, False), ("llama", "jsonl", False, True)]


@pytest.mark.parametrize("arch,kind,sft,ptx", CASES, ids=[c[0] for c in CASES])
def test_run_on_your_own_model_and_data(arch, kind, sft, ptx, tmp_path, capsys, one_thread):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    model = _model(arch, tmp_path / "model")
    data = _source(kind, tmp_path)
    run = tmp_path / "run"
    argv = ["run", "--preset", "tiny", "--model", str(model), "--preferences", data, "--prompts", data, "--run", str(run), *SHARES]
    argv += ["--sft-data", data] if sft else []
    argv += ["--ptx-corpus", _corpus(tmp_path)] if ptx else []
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "has no chat template, so igpt's is used" in err and "no pad token apart from EOS" in err
    stages = ["rm", "judge", "dpo", "ppo", "eval"] + ["sft"] * sft + ["ppo-ptx"] * ptx
    for name in stages:
        assert (run / name / "igpt_complete.json").is_file(), name
    for name in ("world", "tokenizer", "pretrain", "comparisons") + (() if sft else ("sft",)) + (() if ptx else ("ppo-ptx",)):
        assert not (run / name).exists(), name
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["judged_by"] == "judge_reward_model" and results["judge"] == str(run / "judge")
    ind = results["judge_independence"]
    assert ind["shared_prompts"] == 0 and ind["judge_prompts"] > 0 and ind["reward_model_prompts"] > ind["judge_prompts"]
    want = {"sft", "dpo", "ppo"} | ({"ppo_ptx"} if ptx else set())
    assert set(results["models"]) == want
    n_eval = results["models"]["sft"]["n_comparisons"]
    assert n_eval > 0
    for name, m in results["models"].items():
        assert 0 <= m["win_rate_vs_sft"] <= 1 and m["judge_score_mean"] is not None and m["rm_score_mean"] is not None, name
        assert m["n_comparisons"] == n_eval and m["pretrain_val_loss"] is None and m["gold_score_mean"] is None
    assert results["models"]["sft"]["path"] == (str(run / "sft") if sft else str(model))
    table = capsys.readouterr().out + err
    assert "halluc." not in table  # no world: its columns are left out, not shown as nan or '-'
    # every output is a plain Hugging Face folder with the chat template its training used
    sft_dir = run / "sft" if sft else model
    for name in ["ppo"] + ["ppo-ptx"] * ptx + ["dpo"]:
        AutoModelForCausalLM.from_pretrained(run / name)
        assert AutoTokenizer.from_pretrained(run / name).chat_template, name
    for name in ("rm", "judge"):
        AutoModelForSequenceClassification.from_pretrained(run / name)
    if sft:
        assert AutoTokenizer.from_pretrained(sft_dir).chat_template
    page = (run / "eval" / "report.html").read_text()
    assert "not trained against" in page and "0 of them shared" in page


def test_the_judge_never_reads_a_prompt_the_reward_model_read(tmp_path, one_thread):
    """The judge's share and the reward model's are disjoint by prompt, together they are every usable comparison's
    prompt, and the judge share is about the share asked for; each folder records what it read."""
    from instructgpt.data.preferences import SkipReport, read_comparisons
    from instructgpt.stages.reward import judge_part, prompt_fingerprints

    comps = read_comparisons(HH, skips=SkipReport())
    judge, rest = judge_part(comps, 0.3, as_judge=True), judge_part(comps, 0.3, as_judge=False)
    a, b = set(prompt_fingerprints(judge)), set(prompt_fingerprints(rest))
    assert a and b and not a & b and a | b == set(prompt_fingerprints(comps))
    assert 0.15 < len(judge) / len(comps) < 0.45
    assert judge_part(comps, 0.0, as_judge=False) == comps

    model = _model("gpt2", tmp_path / "model")
    run = tmp_path / "run"
    assert main(["run", "--preset", "tiny", "--model", str(model), "--preferences", str(HH), "--prompts", str(HH),
                 "--run", str(run), "--stop-after", "judge", *SHARES]) == 0
    seen = {name: set((run / name / "prompts_seen.txt").read_text().split()) for name in ("rm", "judge")}
    assert seen["judge"] == a and seen["rm"] == b
    logged = {name: json.loads((run / name / "metrics.jsonl").read_text().splitlines()[0]) for name in ("rm", "judge")}
    held = {name: json.loads((run / name / "metrics.jsonl").read_text().splitlines()[-1])["eval_items"] for name in ("rm", "judge")}
    assert logged["judge"]["train_comparisons"] + held["judge"] == len(judge)
    assert logged["rm"]["train_comparisons"] + held["rm"] == len(rest)


def test_an_interrupted_run_resumes_and_keeps_to_its_inputs(tmp_path, capsys, one_thread):
    model = _model("llama", tmp_path / "model")
    run = tmp_path / "run"
    argv = ["run", "--preset", "tiny", "--model", str(model), "--preferences", str(HH), "--prompts", str(HH), "--run", str(run), *SHARES]
    cfg = tmp_path / "stop.toml"
    cfg.write_text("[ppo]\nstop_after = 2\n")  # PPO stops half-way, as if killed: its checkpoint stays in ppo.partial/
    assert main(argv + ["--config", str(cfg)]) == 0
    assert (run / "ppo.partial").is_dir() and not (run / "ppo").exists()
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "rm           already complete" in err and "ppo          running (resuming)" in err
    steps = [json.loads(x)["step"] for x in (run / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4
    first = json.loads((run / "eval" / "results.json").read_text())
    # igpt eval --run alone evaluates the run again as the run did: its held-out prompts, its judge, its SFT model
    assert main(["eval", "--run", str(run), "--preset", "tiny", "--overwrite"]) == 0
    again = json.loads((run / "eval" / "results.json").read_text())
    assert again["judge"] == first["judge"] and list(again["models"]) == list(first["models"]) == ["sft", "dpo", "ppo"]
    assert [m["win_rate_vs_sft"] for m in again["models"].values()] == [m["win_rate_vs_sft"] for m in first["models"].values()]
    assert again["models"]["sft"]["path"] == str(model)
    # the folder holds a run on these inputs: other preferences are refused in one line
    other = tmp_path / "other.jsonl"
    other.write_text(HH.read_text())
    assert main(["run", "--preset", "tiny", "--model", str(model), "--preferences", str(other), "--prompts", str(HH),
                 "--run", str(run), *SHARES]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"other inputs (--preferences was {HH})" in err[0]


def _one_line(argv: list[str], capsys, fragment: str) -> None:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("igpt run: error: ") and fragment in err[0], err


def test_missing_and_malformed_inputs_are_one_line_naming_the_option(tmp_path, capsys):
    model = _model("gpt2", tmp_path / "model")
    run = tmp_path / "run"
    base = ["run", "--preset", "tiny", "--run", str(run)]
    _one_line(base + ["--preferences", str(HH)], capsys, "--preferences: needs --model")
    _one_line(base + ["--model", str(model), "--prompts", str(HH)], capsys, "--preferences: give the comparisons")
    _one_line(base + ["--model", str(model), "--preferences", str(HH)], capsys, "--prompts: give PPO's prompts")
    _one_line(base + ["--model", str(tmp_path / "nope"), "--preferences", str(HH), "--prompts", str(HH)], capsys, "--model")
    _one_line(base + ["--model", str(model), "--preferences", str(tmp_path / "nope.jsonl"), "--prompts", str(HH)], capsys,
              "--preferences: ")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(HH.read_text().splitlines()[0] + "\n" + '{"prompt": "a", "chosen": 3, "rejected": "b"}\n')
    _one_line(base + ["--model", str(model), "--preferences", str(bad), "--prompts", str(HH)], capsys, f"--preferences: {bad}:2:")
    _one_line(base + ["--model", str(model), "--preferences", str(HH), "--prompts", str(bad)], capsys, f"--prompts: {bad}:2:")
    _one_line(base + ["--model", str(model), "--preferences", str(HH), "--prompts", str(HH), "--sft-data", str(bad)], capsys,
              f"--sft-data: {bad}:2:")
    _one_line(base + ["--model", str(model), "--preferences", str(HH), "--prompts", str(HH), "--stop-after", "pretrain"], capsys,
              "--stop-after: 'pretrain' is not a stage of this run")
    assert not run.exists()  # nothing was started


def test_the_one_gpu_config_reaches_every_stage_of_a_run_on_your_own_model(tmp_path):
    """docs/configs/one-gpu-0.5b.toml as igpt run's --config: each stage gets its table over the gpu preset (the
    default with --model), the judge trains as the reward model does, and the wiring names the inputs and the shares."""
    from instructgpt.cli import config_from_args
    from instructgpt.config import read_config_file
    from instructgpt.pipeline import RunConfig, _stage_configs

    path = Path(__file__).resolve().parents[1] / "docs" / "configs" / "one-gpu-0.5b.toml"
    tables = read_config_file(path)
    cfg = config_from_args("run", RunConfig, ["--model", "org/model", "--preferences", "prefs", "--prompts", "prompts",
                                              "--sft-data", "demos", "--config", str(path)])
    assert cfg.preset == ""  # resolved by run(): gpu with --model
    import dataclasses

    configs = {name: sub for name, _, sub in _stage_configs(dataclasses.replace(cfg, preset="gpu"), tmp_path)}
    assert list(configs) == ["sft", "rm", "judge", "dpo", "ppo", "eval"]
    for stage, table in (("sft", "sft"), ("rm", "rm"), ("judge", "rm"), ("dpo", "dpo"), ("ppo", "ppo")):
        for key, value in tables[table].items():
            assert getattr(configs[stage], key) == value, (stage, key)
    sft = str(tmp_path / "sft")
    assert configs["sft"].model == "org/model" and configs["sft"].data == "demos" and configs["sft"].ptx_fraction == 0.0
    assert configs["rm"].model == sft and configs["rm"].judge_share == 0.2 and not configs["rm"].as_judge
    assert configs["judge"].as_judge and configs["judge"].out == str(tmp_path / "judge") and configs["dpo"].judge_share == 0.2
    assert configs["ppo"].policy == sft and configs["ppo"].heldout_share == 0.1 and configs["ppo"].ptx_coef == 0.0
    assert configs["eval"].prompts == "prompts" and configs["eval"].heldout_share == 0.1 and configs["eval"].judge == str(tmp_path / "judge")
    assert configs["eval"].n_winrate == 1000  # the gpu preset's


def test_several_seeds_on_your_own_data(tmp_path, capsys, one_thread):
    """--seeds on your own data: each seed its own reward model, judge and policies, the report over seeds, the claims
    in terms of the judge, and no column a world would fill."""
    model = _model("gpt2", tmp_path / "model")
    run = tmp_path / "run"
    assert main(["run", "--preset", "tiny", "--model", str(model), "--preferences", str(HH), "--prompts", str(HH), "--run", str(run),
                 "--seeds", "2", *SHARES]) == 0
    out = capsys.readouterr().out
    for seed in (0, 1):
        results = json.loads((run / f"seed-{seed}" / "eval" / "results.json").read_text())
        assert results["judge"] == str(run / f"seed-{seed}" / "judge") and results["judge_independence"]["shared_prompts"] == 0
        assert list(results["models"]) == ["sft", "dpo", "ppo"]
    agg = json.loads((run / "eval" / "results.json").read_text())
    assert agg["seeds"] == [0, 1] and agg["judged_by"] == "judge_reward_model"
    assert agg["models"]["ppo"]["judge_score_mean"]["mean"] is not None
    assert [c["id"] for c in agg["claims"]] == ["ppo_win_rate"] and "the judge prefers PPO" in agg["claims"][0]["claim"]
    table = out[out.index("over 2 seeds"):]
    assert "judge" in table and "RM" in table and "halluc." not in table and "gold" not in table.split("\n")[1]

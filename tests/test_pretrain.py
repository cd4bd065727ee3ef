"""Foundation and step 1: tokenizer, config/CLI, run folders, pretraining, resume, DDP, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_torchrun
from instructgpt.cli import main
from instructgpt.config import build_config
from instructgpt.errors import UserError
from instructgpt.stages.pretrain import PretrainConfig
from instructgpt.stages.pretrain import run as pretrain

TINY = dict(d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, d_ff=64, seq_len=32, batch_size=4, lr=3e-3, warmup_steps=2,
            eval_every=5, eval_batches=2, sample_every=0, checkpoint_every=5, progress=False, tensorboard=False)


def cfg(corpus, tok, out, **kw) -> PretrainConfig:
    return PretrainConfig(**{**TINY, "corpus": str(corpus), "tokenizer": str(tok), "out": str(out), **kw})


def test_tokenizer_round_trip_and_chat_template(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    text = "The capital of Alba is Mira. Ünïcode ✓ 中文 too."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Alba?"}, {"role": "assistant", "content": "Mira."}]
    rendered = tok.apply_chat_template(msgs, tokenize=False)
    assert rendered == "<|system|>Be brief.<|end|><|user|>Capital of Alba?<|end|><|assistant|>Mira.<|end|>"
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>") and rendered.startswith(prompt)
    ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=False)
    assert tok.decode(ids) == rendered
    for t in ("<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert tok.pad_token_id != tok.eos_token_id


def test_igpt_tokenizer_command(toy_corpus, tmp_path):
    assert main(["tokenizer", "--corpus", str(toy_corpus), "--out", str(tmp_path / "tok"), "--vocab-size", "300"]) == 0
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(str(tmp_path / "tok"))) == 300
    assert (tmp_path / "tok" / "igpt_config.yaml").is_file()


def test_pretraining_lowers_loss_and_saves_hf_folder(toy_corpus, tiny_tokenizer_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = pretrain(cfg(toy_corpus, tiny_tokenizer_dir, tmp_path / "pt", max_steps=60, batch_size=8, lr=1e-2, eval_every=20))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert losses[-1] < losses[0] - 1.0
    entropy = rows[0]["unigram_entropy"]
    assert vals[-1] < entropy, (vals, entropy)
    assert not (tmp_path / "pt.partial").exists() and not (out / "checkpoint").exists()
    # loads with no code of ours and reproduces our logits
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    ids = torch.tensor([tok("The capital of Alba is")["input_ids"]])
    from instructgpt.models import load_causal_lm

    ours = load_causal_lm(out)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ours(ids).logits, atol=1e-6)


def test_progress_bar_in_a_log_file_writes_whole_lines(toy_corpus, tiny_tokenizer_dir, tmp_path, capsys):
    """Standard error that is not a terminal (a log file, nohup, a scheduler) gets the bar as separate lines, at most
    one per 30 seconds plus the first and the last, not one carriage-return redraw per step."""
    pretrain(cfg(toy_corpus, tiny_tokenizer_dir, tmp_path / "pt", max_steps=12, progress=True))
    err = capsys.readouterr().err
    assert "\r" not in err
    bars = [ln for ln in err.splitlines() if ln.startswith("pretrain")]
    assert 2 <= len(bars) <= 3, bars
    assert "12/12" in bars[-1] and "loss=" in bars[-1]


def test_progress_lines_in_a_log_file_do_not_repeat_the_closing_redraw():
    import io

    from instructgpt.train import _LogLines

    out = io.StringIO()
    log = _LogLines(out)
    log.write("\rppo:   0%|          | 0/20 [00:00<?, ?step/s]")
    log.write("\rppo: 100%|##########| 20/20 [02:12<00:00,  6.70s/step, kl=0.25]")
    log.write("\rppo: 100%|##########| 20/20 [02:12<00:00,  6.64s/step, kl=0.25]\n")  # tqdm's close
    log.write("\rrm:   0%|          | 0/25 [00:00<?, ?step/s]\x1b[A")
    assert out.getvalue().splitlines() == ["ppo:   0%|          | 0/20 [00:00<?, ?step/s]",
                                           "ppo: 100%|##########| 20/20 [02:12<00:00,  6.70s/step, kl=0.25]",
                                           "rm:   0%|          | 0/25 [00:00<?, ?step/s]"]


def test_resume_equals_uninterrupted(toy_corpus, tiny_tokenizer_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    full = pretrain(cfg(toy_corpus, tiny_tokenizer_dir, tmp_path / "a", max_steps=10, dropout=0.1))
    part = pretrain(cfg(toy_corpus, tiny_tokenizer_dir, tmp_path / "b", max_steps=10, dropout=0.1, stop_after=5))
    assert part.name == "b.partial" and not (tmp_path / "b").exists()
    with pytest.raises(UserError, match="--resume"):
        pretrain(cfg(toy_corpus, tiny_tokenizer_dir, tmp_path / "b", max_steps=10, dropout=0.1))
    resumed = pretrain(cfg(toy_corpus, tiny_tokenizer_dir, tmp_path / "b", max_steps=10, dropout=0.1, resume=True))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(x)["step"] for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated rows after resume


def test_gradient_accumulation_four_by_one_equals_one_by_four(toy_corpus, tiny_tokenizer_dir, tmp_path):
    """One step over 4 sequences is the same step whether they come as one micro-batch or as four accumulated ones."""
    import torch
    from safetensors.torch import load_file

    base = {**TINY, "corpus": str(toy_corpus), "tokenizer": str(tiny_tokenizer_dir), "max_steps": 3, "eval_every": 0,
            "checkpoint_every": 0, "sample_every": 0, "cache_dir": str(tmp_path / "cache")}
    one = pretrain(PretrainConfig(**{**base, "batch_size": 4, "grad_accum": 1, "out": str(tmp_path / "one")}))
    four = pretrain(PretrainConfig(**{**base, "batch_size": 1, "grad_accum": 4, "out": str(tmp_path / "four")}))
    a, b = load_file(str(one / "model.safetensors")), load_file(str(four / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)

    def steps(folder, key):
        return [r[key] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if key in r]

    assert steps(one, "loss") == pytest.approx(steps(four, "loss"), rel=1e-5) and len(steps(one, "loss")) == 3
    # the gradient before clipping (Adam and clipping would hide a wrongly scaled one in the weights)
    assert steps(one, "grad_norm") == pytest.approx(steps(four, "grad_norm"), rel=1e-4)


def _ddp_script(tmp_path: Path) -> Path:
    script = tmp_path / "ddp_run.py"
    script.write_text(
        "import sys, json\n"
        "from instructgpt.stages.pretrain import PretrainConfig, run\n"
        "kw = json.loads(sys.argv[1])\n"
        "run(PretrainConfig(**kw))\n"
    )
    return script


def test_ddp_two_processes_equals_single_process(toy_corpus, tiny_tokenizer_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    base = {**TINY, "corpus": str(toy_corpus), "tokenizer": str(tiny_tokenizer_dir), "max_steps": 4, "eval_every": 0, "checkpoint_every": 0,
            "cache_dir": str(tmp_path / "cache")}
    single = pretrain(PretrainConfig(**{**base, "batch_size": 8, "out": str(tmp_path / "single")}))
    run_torchrun(_ddp_script(tmp_path), 29533, json.dumps({**base, "batch_size": 4, "out": str(tmp_path / "ddp")}))
    a, b = load_file(str(single / "model.safetensors")), load_file(str(tmp_path / "ddp" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


def test_config_file_flags_and_presets(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[pretrain]\nlr = 0.01\nmax_steps = 7\n")
    from instructgpt.cli import config_from_args

    c = config_from_args("pretrain", PretrainConfig, ["--config", str(f), "--preset", "tiny", "--max-steps", "9"])
    assert c.lr == 0.01 and c.max_steps == 9 and c.d_model == PretrainConfig.presets["tiny"]["d_model"]
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.02\n")
    assert config_from_args("pretrain", PretrainConfig, ["--config", str(y)]).lr == 0.02
    with pytest.raises(UserError, match="unknown key 'lrr'.*did you mean 'lr'"):
        build_config(PretrainConfig, file_values={"lrr": 1}, file_source=str(y))
    with pytest.raises(UserError, match="--max-steps must be int"):
        build_config(PretrainConfig, overrides={"max_steps": "ten"})


@pytest.mark.parametrize(
    "args, message",
    [
        (["--corpus", "missing.txt"], "missing.txt: corpus not found"),
        (["--lr", "abc"], "--lr must be float"),
        (["--max-steps", "0"], "--max-steps: must be >= 1, got 0"),
        (["--nonsense", "1"], "unrecognized arguments: --nonsense"),
        (["--config", "nope.toml"], "config file not found: nope.toml"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--corpus", "BAD_JSONL"], "bad.jsonl:2: not valid JSON"),
        (["--corpus", "NO_TEXT"], "notext.jsonl:1: expected an object with a string field 'text'"),
        (["--tokenizer", "/nonexistent/tok"], "cannot load tokenizer from /nonexistent/tok"),
        (["--d-model", "30", "--n-heads", "4"], "--d-model (30) must divide by --n-heads (4)"),
    ],
)
def test_bad_input_gives_one_line_error(args, message, toy_corpus, tiny_tokenizer_dir, tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (tmp_path / "notext.jsonl").write_text('{"body": "x"}\n')
    args = [a.replace("BAD_JSONL", str(tmp_path / "bad.jsonl")).replace("NO_TEXT", str(tmp_path / "notext.jsonl")) for a in args]
    base = {"--corpus": str(toy_corpus), "--tokenizer": str(tiny_tokenizer_dir), "--out": str(tmp_path / "o")}
    for k, v in base.items():
        if k not in args:
            args += [k, v]
    code = main(["pretrain", "--preset", "tiny", "--no-progress", *args] if "--preset" not in args else ["pretrain", "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_output_exists_is_refused(toy_corpus, tiny_tokenizer_dir, tmp_path):
    (tmp_path / "pt").mkdir()
    with pytest.raises(UserError, match="output exists"):
        pretrain(cfg(toy_corpus, tiny_tokenizer_dir, tmp_path / "pt", max_steps=2))


def test_help_lists_every_option_with_default(capsys):
    import dataclasses

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(PretrainConfig):
        assert "--" + f.name.replace("_", "-") in out
    assert "(default: 0.002" in out
    assert main([]) == 0 and "pretrain" in capsys.readouterr().out


def test_generate_command(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "The capital of"}\n{"messages": [{"role": "user", "content": "Hi"}]}\n')
    out = tmp_path / "gen.jsonl"
    assert main(["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "5"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["response"], str) for r in rows)

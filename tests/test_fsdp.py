"""Sharded training (``--sharding fsdp``: FSDP2 under torchrun, 2 processes, gloo on CPU) in every trainer: the same
training as one process (or, for PPO, as the same processes replicated), resume from per-process shards, LoRA under
sharding, and gathered outputs that are ordinary model folders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_torchrun
from test_ddp_stages import _comparison_files, ppo_prompts, ppo_rm_dir  # noqa: F401 (fixtures)
from test_ppo import prompts_file  # noqa: F401 (fixture)
from test_pretrain import TINY
from test_sft import _demos

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = """import sys, json
from instructgpt.stages.{module} import {cls}, run
run({cls}(**json.loads(sys.argv[1])))
"""


def _launch(tmp_path: Path, module: str, cls: str, port: int, kw: dict) -> None:
    script = tmp_path / f"run_{module}.py"
    script.write_text(SCRIPT.format(module=module, cls=cls))
    run_torchrun(script, port, json.dumps(kw))


def _close(a: Path, b: Path, name: str = "model.safetensors", atol: float = 1e-5) -> None:
    x, y = load_file(str(a / name)), load_file(str(b / name))
    assert x.keys() == y.keys(), set(x) ^ set(y)
    for k in x:
        assert torch.allclose(x[k], y[k], atol=atol, rtol=1e-4), k


def _rows(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_pretraining_sharded_equals_one_process_and_resumes_from_its_shards(toy_corpus, tiny_tokenizer_dir, tmp_path):
    from instructgpt.stages.pretrain import PretrainConfig, run

    base = {**TINY, "corpus": str(toy_corpus), "tokenizer": str(tiny_tokenizer_dir), "max_steps": 4, "eval_every": 2,
            "checkpoint_every": 1, "sample_every": 2, "cache_dir": str(tmp_path / "cache")}
    single = run(PretrainConfig(**{**base, "batch_size": 8, "out": str(tmp_path / "single")}))
    kw = {**base, "batch_size": 4, "sharding": "fsdp"}
    _launch(tmp_path, "pretrain", "PretrainConfig", 29601, {**kw, "out": str(tmp_path / "fsdp")})
    _close(single, tmp_path / "fsdp")
    assert [round(r["loss"], 4) for r in _rows(single)[1:]] == [round(r["loss"], 4) for r in _rows(tmp_path / "fsdp")[1:]]
    # the samples come from the gathered weights on the main process
    assert len((tmp_path / "fsdp" / "samples.jsonl").read_text().splitlines()) == 2

    # interrupted after step 2, each process wrote its own shards; resumed on 2 processes it ends where the whole run did
    _launch(tmp_path, "pretrain", "PretrainConfig", 29602, {**kw, "out": str(tmp_path / "split"), "stop_after": 2})
    ck = tmp_path / "split.partial" / "checkpoint"
    assert sorted(p.name for p in ck.glob("*.safetensors")) == [
        "model.rank0.safetensors", "model.rank1.safetensors", "optimizer-model.rank0.safetensors",
        "optimizer-model.rank1.safetensors", "rng.safetensors"]
    with pytest.raises(Exception, match="holds the shards of 2 processes"):  # not on another number of processes
        run(PretrainConfig(**{**base, "batch_size": 8, "out": str(tmp_path / "split"), "resume": True}))
    _launch(tmp_path, "pretrain", "PretrainConfig", 29603, {**kw, "out": str(tmp_path / "split"), "resume": True})
    x, y = load_file(str(tmp_path / "fsdp" / "model.safetensors")), load_file(str(tmp_path / "split" / "model.safetensors"))
    assert all(torch.equal(x[k], y[k]) for k in x)


def test_sft_sharded_equals_one_process(tiny_model_dir, toy_corpus, tmp_path):
    """With an odd number of micro-batches (a process runs a zero-weight one), the pretraining mix, and validation split
    unevenly across the processes (the short one runs an extra forward and ignores it)."""
    from instructgpt.stages.sft import SFTConfig, run

    data = _demos(tmp_path / "d.jsonl", n=52)
    kw = dict(model=str(tiny_model_dir), data=str(data), epochs=1, batch_tokens=128, lr=3e-3, warmup_steps=1, val_fraction=0.15,
              dropout=0.0, samples=1, max_new_tokens=4, checkpoint_every=0, progress=False, tensorboard=False, select_by="val_loss",
              ptx_fraction=0.26, ptx_corpus=str(toy_corpus), ptx_seq_len=16, cache_dir=str(tmp_path / "cache"))
    single = run(SFTConfig(**kw, out=str(tmp_path / "single"), grad_accum=2))
    _launch(tmp_path, "sft", "SFTConfig", 29604, {**kw, "out": str(tmp_path / "fsdp"), "sharding": "fsdp"})
    _close(single, tmp_path / "fsdp")
    a, b = _rows(single), _rows(tmp_path / "fsdp")
    assert [round(x["loss"], 4) for x in a if "loss" in x] == [round(x["loss"], 4) for x in b if "loss" in x]
    assert [round(x["val_loss"], 4) for x in a if "val_loss" in x] == [round(x["val_loss"], 4) for x in b if "val_loss" in x]


def test_reward_model_and_dpo_sharded_equal_one_process(tiny_model_dir, tmp_path):
    from instructgpt.stages.dpo import DPOConfig
    from instructgpt.stages.dpo import run as dpo_run
    from instructgpt.stages.reward import RewardConfig
    from instructgpt.stages.reward import run as rm_run

    train, held, demos = _comparison_files(tmp_path)
    kw = dict(data=[str(train)], eval_data=[str(held)], model=str(tiny_model_dir), epochs=2, lr=1e-3, warmup_steps=1, eval_every=2,
              checkpoint_every=100, empty_responses="keep", progress=False, tensorboard=False)
    single = rm_run(RewardConfig(**kw, demonstrations=str(demos), batch_size=8, out=str(tmp_path / "rm1")))
    _launch(tmp_path, "reward", "RewardConfig", 29605, {**kw, "demonstrations": str(demos), "batch_size": 4,
                                                          "out": str(tmp_path / "rm2"), "sharding": "fsdp"})
    _close(single, tmp_path / "rm2")
    a, b = _rows(single)[-1], _rows(tmp_path / "rm2")[-1]
    for key in ("accuracy_all", "reward_bias", "reward_std"):
        assert a[key] == pytest.approx(b[key], abs=1e-4), key

    single = dpo_run(DPOConfig(**kw, batch_size=8, out=str(tmp_path / "dpo1")))
    _launch(tmp_path, "dpo", "DPOConfig", 29606, {**kw, "batch_size": 4, "out": str(tmp_path / "dpo2"), "sharding": "fsdp"})
    _close(single, tmp_path / "dpo2")
    a, b = _rows(single), _rows(tmp_path / "dpo2")
    assert [round(x["loss"], 5) for x in a if "loss" in x] == [round(x["loss"], 5) for x in b if "loss" in x]
    assert a[-1]["margin"] == pytest.approx(b[-1]["margin"], abs=1e-5)  # the held-out evaluation, run by both processes


def _ppo_kw(tiny_model_dir: Path, rm: Path, prompts: Path, corpus: Path, tmp_path: Path, **kw) -> dict:
    from instructgpt.config import build_config
    from instructgpt.stages.ppo import PPOConfig

    cfg = build_config(PPOConfig, preset="tiny", overrides=dict(
        policy=str(tiny_model_dir), reward_model=str(rm), prompts=str(prompts), ptx_coef=1.0, ptx_corpus=str(corpus),
        ptx_per_episode=0.5, ptx_seq_len=16, cache_dir=str(tmp_path / "cache"), steps=3, batch_size=4, minibatch_size=2,
        grad_accum=2, ppo_epochs=2, max_new_tokens=8, lr=1e-3, eval_every=3, val_tokens=256, sample_every=3, n_samples=2,
        checkpoint_every=1, save_policy_every=2, progress=False, tensorboard=False, **kw))
    return dataclasses.asdict(cfg)


def test_ppo_sharded_equals_replicated_on_the_same_processes(tiny_model_dir, ppo_rm_dir, ppo_prompts, toy_corpus, tmp_path):
    """PPO-ptx with a reward model and a value model, sharded on 2 processes against replicated (DDP) on 2 processes:
    the same rollouts (every process samples from the gathered weights, with its own seed, as each replica does), the
    same losses, and the same policy and value weights. (Two processes never equal one in PPO: each process samples and
    shuffles with its own seed; see test_ddp_stages.)"""
    kw = _ppo_kw(tiny_model_dir, ppo_rm_dir, ppo_prompts, toy_corpus, tmp_path)
    _launch(tmp_path, "ppo", "PPOConfig", 29607, {**kw, "out": str(tmp_path / "ddp"), "sharding": "ddp"})
    _launch(tmp_path, "ppo", "PPOConfig", 29608, {**kw, "out": str(tmp_path / "fsdp"), "sharding": "fsdp"})
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    _close(ddp, fsdp)
    _close(ddp, fsdp, "value/model.safetensors")
    _close(ddp / "snapshots" / "step-2", fsdp / "snapshots" / "step-2")
    a, b = _rows(ddp), _rows(fsdp)
    for key in ("score", "kl", "policy_loss", "value_loss", "ptx_loss", "response_len"):
        assert [round(r[key], 3) for r in a[1:]] == [round(r[key], 3) for r in b[1:]], key
    assert a[-1]["pretrain_val_loss"] == pytest.approx(b[-1]["pretrain_val_loss"], abs=1e-4)


def test_lora_ppo_under_sharding_completes_with_plain_and_adapter_folders(tiny_model_dir, ppo_rm_dir, ppo_prompts, toy_corpus, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kw = _ppo_kw(tiny_model_dir, ppo_rm_dir, ppo_prompts, toy_corpus, tmp_path, lora_r=4, save_adapter=True)
    _launch(tmp_path, "ppo", "PPOConfig", 29609, {**kw, "out": str(tmp_path / "lora"), "sharding": "fsdp", "lr": 1e-2})
    out = tmp_path / "lora"
    rows = _rows(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[-1]["kl"] > 0  # the adapters moved the policy from its base
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    rebuilt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(out / "adapter")).eval()
    x = torch.randint(0, 300, (2, 9))
    torch.testing.assert_close(merged(x).logits, rebuilt(x).logits, rtol=1e-4, atol=1e-4)
    AutoModelForSequenceClassification.from_pretrained(str(out / "value"))


@pytest.mark.parametrize("name", ["one-gpu-0.5b", "eight-gpu-8b"])
def test_the_documented_gpu_configs_are_valid_for_every_stage_they_set(name):
    from instructgpt.cli import config_from_args
    from instructgpt.config import read_config_file
    from instructgpt.stages.dpo import DPOConfig
    from instructgpt.stages.ppo import PPOConfig
    from instructgpt.stages.reward import RewardConfig
    from instructgpt.stages.sft import SFTConfig

    path = Path(__file__).resolve().parents[1] / "docs" / "configs" / f"{name}.toml"
    tables = read_config_file(path)
    classes = {"sft": SFTConfig, "rm": RewardConfig, "dpo": DPOConfig, "ppo": PPOConfig}
    assert set(tables) == set(classes)
    for stage, cls in classes.items():
        cfg = config_from_args(stage, cls, ["--config", str(path)])
        for key, value in tables[stage].items():
            assert getattr(cfg, key) == value, (stage, key)
        if name.startswith("eight"):
            assert cfg.sharding == "fsdp" and cfg.gradient_checkpointing


def test_dry_run_under_sharding_divides_the_state_and_counts_the_samplers_copy(tiny_model_dir, prompts_file, monkeypatch, capsys):
    from instructgpt.config import build_config
    from instructgpt.memory import estimate
    from instructgpt.stages import ppo
    from instructgpt.stages.ppo import PPOConfig

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    for sharding in ("ddp", "fsdp"):
        cfg = build_config(PPOConfig, preset="tiny", overrides=dict(policy=str(tiny_model_dir), reward_model=str(tiny_model_dir),
                                                                   prompts=str(prompts_file), out="/nonexistent/ppo", dry_run=True, ptx_coef=0.0,
                                                                   sharding=sharding))
        ppo.run(cfg)
    ddp, fsdp = capsys.readouterr().out.split("igpt ppo")[1:]
    assert "2 processes, ddp" in ddp and "2 processes, fsdp" in fsdp and "replica" in fsdp and "replica" not in ddp
    one = estimate([("policy", str(tiny_model_dir), True, False)], 64, 64, False, 2, "ddp")[0]
    two = estimate([("policy", str(tiny_model_dir), True, False)], 64, 64, False, 2, "fsdp")[0]
    assert two.weights == one.weights / 2 and two.optimizer == one.optimizer / 2 and two.activations == one.activations

"""The shared training loop: several trained parts, their schedules, clipping, the NaN policy, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import math

import pytest

from instructgpt.config import TrainConfig
from instructgpt.errors import UserError


@dataclasses.dataclass
class LoopConfig(TrainConfig):
    stage = "loop-test"


def _setup(tmp_path, **kw):
    import torch

    from instructgpt.train import Dist, Loop, Part, build_optimizer

    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 1)
    opt_a = build_optimizer(a, 1e-2, weight_decay=0.0)
    opt_b = build_optimizer(b, 3e-2, weight_decay=0.0)
    cfg = LoopConfig(**{"lr": 1e-2, "lr_schedule": "linear", "min_lr_ratio": 0.0, "warmup_steps": 1, "grad_clip": 0.5,
                        "checkpoint_every": 2, "progress": False, "tensorboard": False, **kw})
    parts = {"a": Part(a, opt_a), "b": Part(b, opt_b, clip=list(b.parameters()), lr=3e-2)}
    return Loop("test", cfg, Dist(device=torch.device("cpu")), tmp_path, parts, 4), a, b


def _train(loop, a, b, x):
    """Each step: two updates of both parts (the shape of a PPO step), then advance and checkpoint."""
    seen = []
    while loop.running:
        lr = loop.begin_step()
        seen.append((lr, [g["lr"] for g in loop.parts["b"].opt.param_groups]))
        for _ in range(2):
            loop.accumulate((a, b), [x[:4], x[4:]], lambda xs: (a(xs).pow(2).mean() + b(xs).pow(2).mean()) / 2)
            norms = loop.update()
            assert set(norms) == {"a", "b"} and all(n > 0 for n in norms.values())
        loop.advance()
        loop.log_step({"loss": 0.0}, "loss")
        loop.checkpoint({"mine": loop.step * 10})
    loop.close()
    return seen


def test_parts_follow_one_schedule_each_at_its_own_peak(tmp_path):
    import torch

    loop, a, b = _setup(tmp_path)
    seen = _train(loop, a, b, torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))
    from instructgpt.train import lr_at

    for step, (lr, b_lrs) in enumerate(seen):
        assert lr == lr_at(step, 4, 1e-2, 1, 0.0, "linear")
        assert b_lrs == [lr * 3e-2 / 1e-2] * len(b_lrs)
    assert loop.finished and loop.step == 4


def test_resume_with_two_parts_equals_uninterrupted(tmp_path):
    import torch

    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    loop, a, b = _setup(tmp_path / "full")
    _train(loop, a, b, x)
    loop, a1, b1 = _setup(tmp_path / "cut", stop_after=2)
    _train(loop, a1, b1, x)
    assert not loop.finished
    loop, a2, b2 = _setup(tmp_path / "cut", resume=True)
    assert loop.step == 2 and loop.state["mine"] == 20
    _train(loop, a2, b2, x)
    for m, m2 in ((a, a2), (b, b2)):
        assert all(torch.equal(p, q) for p, q in zip(m.parameters(), m2.parameters()))


def test_clipping_is_per_part_over_its_own_parameters(tmp_path):
    import torch

    loop, a, b = _setup(tmp_path, grad_clip=1e-3)
    before = [p.detach().clone() for p in b.parameters()]
    loop.begin_step()
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    loop.accumulate((a, b), [x], lambda xs: a(xs).pow(2).mean() * 1000 + b(xs).pow(2).mean())
    grads_b = torch.cat([p.grad.flatten() for p in b.parameters()])
    norms = loop.update()
    assert norms["b"] == pytest.approx(float(grads_b.norm()), rel=1e-5)
    assert norms["a"] > 100 * norms["b"]  # a's large gradient does not shrink b's clipping budget
    assert not any(torch.equal(p, q) for p, q in zip(before, b.parameters()))
    loop.close()


def test_a_non_finite_gradient_in_one_part_updates_no_part(tmp_path):
    import torch

    loop, a, b = _setup(tmp_path)
    before = [p.detach().clone() for m in (a, b) for p in m.parameters()]
    loop.begin_step()
    x = torch.randn(8, 4)
    loop.accumulate((a, b), [x], lambda xs: a(xs).pow(2).mean() + b(xs).pow(2).mean() * float("nan"))
    with pytest.raises(UserError, match="b gradient norm became nan at step 1"):
        loop.update()
    assert all(torch.equal(p, q) for p, q in zip(before, [p for m in (a, b) for p in m.parameters()]))
    assert math.isnan(float(next(b.parameters()).grad.sum()))
    loop.close()


def test_peak_memory_counts_from_the_stage_start():
    import sys

    import numpy as np

    from instructgpt.rundir import peak_memory, reset_peak_memory

    reset_peak_memory()
    before = peak_memory()["peak_rss_mb"]
    block = np.ones(40_000_000)  # 305 MiB, touched
    grown = peak_memory()["peak_rss_mb"]
    del block
    assert grown - before > 250
    if sys.platform.startswith("linux"):  # the high-water mark can be reset there: a new stage does not inherit the old peak
        reset_peak_memory()
        assert peak_memory()["peak_rss_mb"] < grown - 250


@pytest.mark.parametrize("mode", ["train, residual dropout 0.2", "eval (dropout off, as the RL stages hold it)"])
def test_activation_checkpointing_gives_the_same_gradients(tiny_model_dir, mode):
    import torch

    from instructgpt.models import enable_gradient_checkpointing, enable_residual_dropout, load_causal_lm
    from instructgpt.train import lm_loss

    x = torch.randint(0, 200, (3, 24), generator=torch.Generator().manual_seed(0))

    def grads(checkpointing: bool) -> dict:
        model = load_causal_lm(str(tiny_model_dir))
        if mode.startswith("train"):
            enable_residual_dropout(model, 0.2)
            model.train()
        else:
            model.eval()
        if checkpointing:
            enable_gradient_checkpointing(model)
        calls, mlp = [], model.model.layers[0].mlp
        forward = mlp.forward
        mlp.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
        torch.manual_seed(1)  # the same dropout masks, replayed by the recomputation
        loss = lm_loss(model, x[:, :-1], x[:, 1:])
        assert len(calls) == 1
        loss.backward()
        assert len(calls) == (2 if checkpointing else 1)  # checkpointed: the layer ran again in the backward pass
        with torch.no_grad():  # passes without gradients (sampling, scoring) still use the cache
            out = model(input_ids=x[:, :4], use_cache=True)
        assert out.past_key_values is not None
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    a, b = grads(False), grads(True)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k


def test_activation_checkpointing_on_a_model_without_it_is_one_line():
    import torch

    from instructgpt.models import enable_gradient_checkpointing

    with pytest.raises(UserError, match="--gradient-checkpointing: Linear does not support"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_dry_run_prints_the_memory_estimate_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    import json

    from instructgpt.cli import main
    from instructgpt.memory import activation_bytes, count_from_config, estimate
    from instructgpt.models import load_causal_lm

    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}.", "response": f"{i}."}) + "\n" for i in range(4)))
    out = tmp_path / "sft"
    assert main(["sft", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    n = sum(p.numel() for p in load_causal_lm(str(tiny_model_dir)).parameters())
    assert f"{n:,}" in printed and "AdamW" in printed and "activation checkpointing off" in printed
    assert not out.exists() and not (tmp_path / "sft.partial").exists()
    # the arithmetic: fp32 weights, the same again for gradients, twice for AdamW's moments; checkpointing keeps less
    (m,) = estimate([("model", str(tiny_model_dir), True, False)], tokens=512, seq_len=128, checkpointing=False)
    assert m.params == n == count_from_config(str(tiny_model_dir))[0]
    assert (m.weights, m.grads, m.optimizer) == (4.0 * n, 4.0 * n, 8.0 * n)
    config = count_from_config(str(tiny_model_dir))[1]
    assert activation_bytes(config, 512, 128, True) < activation_bytes(config, 512, 128, False)
    (frozen,) = estimate([("reference", str(tiny_model_dir), False, False)], tokens=512, seq_len=128, checkpointing=False)
    assert frozen.total == 4.0 * n

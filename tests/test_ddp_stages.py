"""Data-parallel (torchrun, 2 processes, gloo on CPU) runs of the reward-model and PPO stages.

Each test writes a small launcher script that calls the stage's ``run`` and starts it with
``python -m torch.distributed.run --nproc_per_node 2`` (as the pretraining and SFT DDP tests do), then checks the output
folder, the metrics written by rank 0 alone, and what the two ranks did.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from conftest import CAPITALS, NAMES, run_torchrun, toy_documents


pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- reward model
def _comparison_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """24 training comparisons with K = 2, 3 or 4 responses (so comparisons carry 1, 3 or 6 pairs and each must weigh the
    same in the loss whichever rank has it), 6 held-out ones and 8 demonstrations."""
    rng = random.Random(3)
    rows, held, demos = [], [], []
    for i in range(24):
        j = i % 8
        quality = [f"The capital of {NAMES[j]} is {CAPITALS[j]}.", CAPITALS[j], f"The capital of {NAMES[j]} is {CAPITALS[(j + 3) % 8]}.",
                   f"What is the capital of {NAMES[rng.randrange(8)]}?", "no"]  # best first
        picked = rng.sample(range(len(quality)), 2 + i % 3)
        responses = [quality[q] for q in picked]
        ranking = sorted(range(len(picked)), key=lambda k: picked[k])
        rows.append({"prompt": f"What is the capital of {NAMES[j]}?", "responses": responses, "ranking": ranking, "labeler": f"l{i % 3}"})
        if i < 6:
            held.append({"prompt": f"Tell me the capital of {NAMES[j]}.", "responses": responses, "ranking": ranking})
        if i < 8:
            demos.append({"messages": [{"role": "user", "content": f"Name the capital of {NAMES[j]}."},
                                       {"role": "assistant", "content": quality[0]}]})
    return (_write_jsonl(tmp_path / "train.jsonl", rows), _write_jsonl(tmp_path / "held.jsonl", held),
            _write_jsonl(tmp_path / "demos.jsonl", demos))


def test_reward_model_ddp_two_processes_equal_one_process_with_the_same_global_batch(tiny_model_dir, tmp_path):
    """2 processes x 4 comparisons per step == 1 process x 8 comparisons == 1 process x 4 comparisons x 2 accumulated
    micro-batches: the same weights, losses, training accuracies (a share of the step's pairs, whichever rank or
    micro-batch holds them), held-out evaluation and reward bias, over two epochs.

    The learning rate is kept small: Adam turns float rounding differences between mathematically equal runs (even
    single-process batch 8 vs accumulation 2 x 4) into weight differences that grow with the step size."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from instructgpt.reward_model import load_reward_model
    from instructgpt.stages.reward import RewardConfig, run

    train, held, demos = _comparison_files(tmp_path)
    kw = dict(data=[str(train)], eval_data=[str(held)], demonstrations=str(demos), model=str(tiny_model_dir), epochs=2,
              lr=1e-3, warmup_steps=1, eval_every=2, checkpoint_every=100, empty_responses="keep", progress=False,
              tensorboard=False)
    single = run(RewardConfig(**kw, batch_size=8, out=str(tmp_path / "single")))
    accum = run(RewardConfig(**kw, batch_size=4, grad_accum=2, out=str(tmp_path / "accum")))
    script = tmp_path / "ddp_rm.py"
    script.write_text("import sys, json\nfrom instructgpt.stages.reward import RewardConfig, run\nrun(RewardConfig(**json.loads(sys.argv[1])))\n")
    r = run_torchrun(script, 29561, json.dumps({**kw, "batch_size": 4, "out": str(tmp_path / "ddp")}))
    ddp = tmp_path / "ddp"
    assert (ddp / "igpt_complete.json").is_file() and not (tmp_path / "ddp.partial").exists()
    assert r.stdout.count("reward model: ") == 1  # the summary is printed by rank 0 only

    # the same final weights
    w = {name: load_file(str(p / "model.safetensors")) for name, p in (("single", single), ("accum", accum), ("ddp", ddp))}
    assert w["ddp"].keys() == w["single"].keys()
    for k in w["single"]:
        assert torch.allclose(w["single"][k], w["ddp"][k], atol=1e-5, rtol=1e-4), k
        assert torch.allclose(w["accum"][k], w["ddp"][k], atol=1e-5, rtol=1e-4), k
    init = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1).state_dict()
    assert not torch.allclose(init["model.layers.0.mlp.up_proj.weight"], w["ddp"]["model.layers.0.mlp.up_proj.weight"])  # it trained

    # the same metrics, one row per step: a header row, 2 epochs x 3 steps of 8 comparisons, the final row
    m = {name: _rows(p / "metrics.jsonl") for name, p in (("single", single), ("accum", accum), ("ddp", ddp))}
    assert [x["step"] for x in m["ddp"]] == [0, 1, 2, 3, 4, 5, 6, 6]
    assert [x["step"] for x in m["ddp"] if "loss" in x] == [1, 2, 3, 4, 5, 6]
    assert sum(1 for x in m["ddp"] if x.get("final")) == 1 and m["ddp"][0]["train_comparisons"] == 24
    for other in ("single", "accum"):
        assert [x["step"] for x in m[other]] == [x["step"] for x in m["ddp"]]
        assert [round(x["loss"], 4) for x in m[other] if "loss" in x] == [round(x["loss"], 4) for x in m["ddp"] if "loss" in x]
        assert [round(x["acc"], 4) for x in m[other] if "acc" in x] == [round(x["acc"], 4) for x in m["ddp"] if "acc" in x]
        assert [x["grad_norm"] for x in m[other] if "loss" in x] == pytest.approx([x["grad_norm"] for x in m["ddp"] if "loss" in x], rel=1e-3)
        evals = lambda rows: [(x["step"], x["eval_accuracy_all"]) for x in rows if "eval_accuracy_all" in x]  # noqa: E731
        assert evals(m[other]) == evals(m["ddp"]) and [s for s, _ in evals(m["ddp"])] == [2, 4]
    fs, fd = m["single"][-1], m["ddp"][-1]
    assert fd["accuracy_all"] == pytest.approx(fs["accuracy_all"]) and fd["reward_bias"] == pytest.approx(fs["reward_bias"], abs=1e-4)

    # the saved folder loads with no code of ours and with ours, and scores as the single-process model does
    hf = AutoModelForSequenceClassification.from_pretrained(str(ddp))
    assert hf.config.num_labels == 1 and hf.config.reward_bias == pytest.approx(json.loads((ddp / "reward_stats.json").read_text())["reward_bias"])
    prompts, answers = ["What is the capital of Alba?", "hi"], ["The capital of Alba is Mira.", "Toln"]
    got = load_reward_model(ddp, torch.device("cpu")).score_texts(prompts, answers)
    assert got == pytest.approx(load_reward_model(single, torch.device("cpu")).score_texts(prompts, answers), abs=1e-4)


def test_dpo_ddp_two_processes_equal_one_process_with_the_same_global_batch(tiny_model_dir, tmp_path):
    """DPO on the reward model's comparisons: 2 processes x 4 comparisons per step == 1 process x 8 == 1 process x 4 x 2
    accumulated: the same weights, losses, training accuracies and margins, and the same held-out evaluation."""
    import torch
    from safetensors.torch import load_file

    from instructgpt.stages.dpo import DPOConfig, run

    train, held, _ = _comparison_files(tmp_path)
    kw = dict(data=[str(train)], eval_data=[str(held)], model=str(tiny_model_dir), epochs=2, lr=1e-3, warmup_steps=1, eval_every=2,
              checkpoint_every=100, empty_responses="keep", progress=False, tensorboard=False)
    single = run(DPOConfig(**kw, batch_size=8, out=str(tmp_path / "single")))
    accum = run(DPOConfig(**kw, batch_size=4, grad_accum=2, out=str(tmp_path / "accum")))
    script = tmp_path / "ddp_dpo.py"
    script.write_text("import sys, json\nfrom instructgpt.stages.dpo import DPOConfig, run\nrun(DPOConfig(**json.loads(sys.argv[1])))\n")
    r = run_torchrun(script, 29567, json.dumps({**kw, "batch_size": 4, "out": str(tmp_path / "ddp")}))
    ddp = tmp_path / "ddp"
    assert (ddp / "igpt_complete.json").is_file() and r.stdout.count("dpo model: ") == 1  # rank 0 alone reports
    w = {name: load_file(str(p / "model.safetensors")) for name, p in (("single", single), ("accum", accum), ("ddp", ddp))}
    for k in w["single"]:
        assert torch.allclose(w["single"][k], w["ddp"][k], atol=1e-5, rtol=1e-4), k
        assert torch.allclose(w["accum"][k], w["ddp"][k], atol=1e-5, rtol=1e-4), k
    m = {name: _rows(p / "metrics.jsonl") for name, p in (("single", single), ("accum", accum), ("ddp", ddp))}
    assert [x["step"] for x in m["ddp"] if "loss" in x] == [1, 2, 3, 4, 5, 6]
    for other in ("single", "accum"):
        for key in ("loss", "acc", "margin"):
            assert [round(x[key], 4) for x in m[other] if "loss" in x] == [round(x[key], 4) for x in m["ddp"] if "loss" in x], key
        evals = lambda rows: [(x["step"], round(x["eval_margin"], 4)) for x in rows if "eval_margin" in x]  # noqa: E731
        assert evals(m[other]) == evals(m["ddp"]) and [s for s, _ in evals(m["ddp"])] == [0, 2, 4]
    assert m["ddp"][-1]["final"] and m["ddp"][-1]["margin"] == pytest.approx(m["single"][-1]["margin"], abs=1e-4)
    assert m["ddp"][-1]["margin"] > 0  # it learned the labelers' order


# ---------------------------------------------------------------------------------------------- PPO
PPO_SCRIPT = """\
import json, os, sys
import torch
from instructgpt import train
from instructgpt.stages import ppo

kw, record = json.loads(sys.argv[1]), sys.argv[2]
rank = int(os.environ["RANK"])
seen, modules = [], {}


class RecordingStream(ppo.PromptStream):
    # the prompt indices this rank actually sampled, step by step
    def next(self):
        idx = super().next()
        seen.append(idx)
        return idx


_init = train.Loop.__init__


def init(self, name, cfg, d, work, parts, *args, **kwargs):
    # keep the trained modules (PolicyModule, ValueModule) to compare the two replicas after the run
    modules.update({type(p.model).__name__: p.model for p in parts.values()})
    _init(self, name, cfg, d, work, parts, *args, **kwargs)


ppo.PromptStream, train.Loop.__init__ = RecordingStream, init
ppo.run(ppo.PPOConfig(**kw))
torch.save({name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()},
           f"{record}/weights{rank}.pt")
with open(f"{record}/prompts{rank}.json", "w") as f:
    json.dump(seen, f)
"""


@pytest.fixture(scope="module")
def ppo_prompts(tmp_path_factory) -> Path:
    """20 prompts (3 steps x 8 global prompts cross into the second epoch), half plain text, half chat messages."""
    rows = [{"prompt": doc[:30]} if i % 2 else {"messages": [{"role": "user", "content": doc[:25]}]}
            for i, doc in enumerate(toy_documents(20, seed=2))]
    return _write_jsonl(tmp_path_factory.mktemp("ddp_prompts") / "prompts.jsonl", rows)


@pytest.fixture(scope="module")
def ppo_rm_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A reward-model folder as step 3 writes it (sequence classification, reward_bias, reward_std)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from instructgpt.tokenizer import load_tokenizer

    torch.manual_seed(2)
    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    rm.config.reward_bias, rm.config.reward_std = 0.3, 1.5
    out = tmp_path_factory.mktemp("ddp_rm")
    rm.save_pretrained(str(out))
    load_tokenizer(tiny_model_dir).save_pretrained(str(out))
    return out


def test_ppo_ddp_two_processes(tiny_model_dir, ppo_rm_dir, ppo_prompts, toy_corpus, tmp_path):
    """PPO-ptx with a reward model and a separate value model on 2 processes: it completes, rank 0 alone writes one
    metrics row and one sample table per step and a loadable model folder, the ranks sample disjoint halves of the
    single-process global batch of prompts, and the two replicas end with identical policy and value weights.

    Why not "2 processes == 1 process with the same global batch", as for SFT and the reward model: that equality
    does not hold for PPO by design. (1) Each rank samples its responses with its own seed (``_seed(seed, step, rank)``)
    and one generator over its own batch, so 2 x 4 rollouts are not the 8 rollouts one process would sample; at
    temperature > 0 (required) the episodes, and everything computed from them, differ. (2) Each rank shuffles its own
    episodes into its own minibatches (the permutation seed depends on the rank too). (3) The policy and value losses are
    token means over each rank's minibatch, and DDP averages those per-rank means, which differs from one token mean
    over the union whenever the ranks' responses have different lengths. What does hold exactly is tested below: the
    global prompt batch, the shared ptx data order, synchronised replicas and single-writer outputs.
    """
    import torch
    from safetensors.torch import load_file

    from instructgpt.config import build_config
    from instructgpt.models import load_causal_lm
    from instructgpt.stages.ppo import PPOConfig, PromptStream, encode_records, load_prompt_records
    from instructgpt.tokenizer import load_tokenizer

    steps, per_rank = 3, 4
    cfg = build_config(PPOConfig, preset="tiny", overrides=dict(
        policy=str(tiny_model_dir), reward_model=str(ppo_rm_dir), prompts=str(ppo_prompts), out=str(tmp_path / "ppo"),
        ptx_coef=1.0, ptx_corpus=str(toy_corpus), ptx_per_episode=0.5, ptx_seq_len=16, cache_dir=str(tmp_path / "cache"),
        steps=steps, batch_size=per_rank, minibatch_size=2, grad_accum=2, ppo_epochs=2, max_new_tokens=8, lr=1e-3,
        target_kl=0.5, kl_horizon=100, eval_every=steps, val_tokens=256, sample_every=1, n_samples=2, checkpoint_every=1,
        progress=False, tensorboard=False))
    script = tmp_path / "ddp_ppo.py"
    script.write_text(PPO_SCRIPT)
    record = tmp_path / "record"
    record.mkdir()
    run_torchrun(script, 29562, json.dumps(dataclasses.asdict(cfg)), str(record))
    out = tmp_path / "ppo"
    assert (out / "igpt_complete.json").is_file() and not (tmp_path / "ppo.partial").exists()
    assert not (out / "checkpoint").exists()

    # one metrics row per step, from rank 0 only, counting the episodes of both ranks
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(steps + 1))
    assert [r["episodes"] for r in rows[1:]] == [2 * per_rank * s for s in range(1, steps + 1)]
    assert all("score" in r and "kl" in r and "ptx_loss" in r for r in rows[1:]) and "pretrain_val_loss" in rows[-1]
    samples = _rows(out / "samples.jsonl")
    assert [s["step"] for s in samples] == list(range(1, steps + 1)) and all(len(s["samples"]) == 2 for s in samples)

    # the ranks sampled different prompts: rank r took items r, r+2, ... of the global batch one process would take
    # with batch_size 8 (the same stream, crossing into the second epoch of the 20 prompts at step 3)
    got = [json.loads((record / f"prompts{r}.json").read_text()) for r in (0, 1)]
    one = PromptStream(20, 2 * per_rank, seed=cfg.seed)
    for step in range(steps):
        glob = one.next()
        assert got[0][step] == glob[0::2] and got[1][step] == glob[1::2], step
        assert not set(got[0][step]) & set(got[1][step])
    # rank 0's samples are rank 0's prompts (the decoded prompt text of its first rows)
    tok = load_tokenizer(tiny_model_dir)
    prompt_ids = encode_records(tok, load_prompt_records(cfg, None), cfg.max_prompt_len)
    for s in samples:
        want = [tok.decode(prompt_ids[i], skip_special_tokens=True) for i in got[0][s["step"] - 1][:2]]
        assert [x["prompt"] for x in s["samples"]] == want

    # the replicas stayed in sync (gradients all-reduced on the last micro-batch, ptx included), and rank 0 saved them
    w0, w1 = (torch.load(record / f"weights{r}.pt") for r in (0, 1))
    assert set(w0) == set(w1) == {"PolicyModule", "ValueModule"}
    for name in w0:
        for k in w0[name]:
            assert torch.equal(w0[name][k], w1[name][k]), (name, k)
    saved = load_file(str(out / "model.safetensors"))
    for k in saved:
        assert torch.equal(saved[k], w0["PolicyModule"]["lm." + k]), k
    value_saved = load_file(str(out / "value" / "model.safetensors"))
    assert all(torch.equal(v, w0["ValueModule"]["model." + k]) for k, v in value_saved.items())

    # a loadable Hugging Face folder, and PPO moved it away from the starting policy
    policy = load_causal_lm(out).eval()
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert any(not torch.allclose(start[k], saved[k]) for k in start)
    ids = torch.tensor([prompt_ids[0]])
    with torch.no_grad():
        assert torch.isfinite(policy(input_ids=ids).logits).all()


TOKEN_WEIGHT_SCRIPT = r'''
import json, sys
import torch
from instructgpt.rl import global_explained_variance, global_stats, minibatch_tokens
from instructgpt.train import in_process_group


def body(d):
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1, bias=False)
    model = torch.nn.parallel.DistributedDataParallel(lin)
    # rank 0 has 2 real tokens, rank 1 has 5: a per-rank mean would weigh rank 0's tokens 2.5x more
    x = torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(1))[d.rank]
    mask = torch.zeros(7)
    mask[: 2 if d.rank == 0 else 5] = 1.0
    n = minibatch_tokens(mask, d)
    loss = (model(x).squeeze(-1) * mask).sum() / n
    loss.backward()
    vals = torch.randn(2, 7, generator=torch.Generator().manual_seed(2))
    rets = torch.randn(2, 7, generator=torch.Generator().manual_seed(3))
    ev = global_explained_variance(vals[d.rank : d.rank + 1], rets[d.rank : d.rank + 1], mask[None], d)
    vmean = float(global_stats(vals[d.rank : d.rank + 1], mask[None], d)[0])
    if d.rank == 0:
        json.dump({"grad": lin.weight.grad.tolist(), "n": float(n), "ev": ev, "value_mean": vmean}, open(sys.argv[1], "w"))


in_process_group("cpu", body)
'''


def test_ppo_losses_and_statistics_cover_every_rank(tmp_path):
    """Each rank divides its token sum by (all tokens / world size): DDP's average is then the mean over all tokens; the
    logged explained variance and value mean are over every rank's tokens too."""
    script = tmp_path / "tokens.py"
    script.write_text(TOKEN_WEIGHT_SCRIPT)
    run_torchrun(script, 29563, str(tmp_path / "out.json"))
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["n"] == 3.5
    import torch

    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1, bias=False)
    xs = torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(1))
    masks = torch.zeros(2, 7)
    masks[0, :2] = 1.0
    masks[1, :5] = 1.0
    ((lin(xs).squeeze(-1) * masks).sum() / masks.sum()).backward()  # one process, the global token mean
    assert torch.allclose(torch.tensor(got["grad"]), lin.weight.grad, atol=1e-6)
    from instructgpt import rl

    vals = torch.randn(2, 7, generator=torch.Generator().manual_seed(2))
    rets = torch.randn(2, 7, generator=torch.Generator().manual_seed(3))
    assert abs(got["ev"] - rl.explained_variance(vals, rets, masks)) < 1e-5
    assert abs(got["value_mean"] - float(rl.masked_mean(vals, masks))) < 1e-5

"""DPO and IPO on the reward model's comparisons: the losses, one forward per response, and learning on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from instructgpt.errors import UserError


def test_dpo_and_ipo_losses_against_hand_computed_values():
    import torch

    from instructgpt.reward_model import ranking_loss

    # comparison A: K=3 ranked 0 > 1 > 2 with implicit rewards 1.0, 0.5, -0.2; comparison B: K=2, response 1 better
    rewards = torch.tensor([1.0, 0.5, -0.2, 0.3, -0.1])
    pairs = torch.tensor([[0, 1], [0, 2], [1, 2], [4, 3]])
    group = torch.tensor([0, 0, 0, 1])

    def nls(x: float) -> float:
        return math.log1p(math.exp(-x))

    dpo, st = ranking_loss(rewards, pairs, group, 2)
    want_a = (nls(0.5) + nls(1.2) + nls(0.7)) / 3
    assert float(dpo) == pytest.approx((want_a + nls(-0.4)) / 2, rel=1e-6)
    assert st == {"acc": pytest.approx(0.75), "pairs": 4}
    # IPO with beta 0.1: the log-ratio differences h are diff / beta = 5, 12, 7 and -4; the target 1 / (2 beta) = 5
    ipo, _ = ranking_loss(rewards, pairs, group, 2, ipo_beta=0.1)
    assert float(ipo) == pytest.approx(((0 + 49 + 4) / 3 + 81) / 2, rel=1e-5)


def _ranked(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _perturbed_policy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model with noise added to its weights, so that it differs from the reference."""
    import torch

    from instructgpt.models import load_causal_lm, save_model
    from instructgpt.tokenizer import load_tokenizer

    model = load_causal_lm(str(tiny_model_dir))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    save_model(model, load_tokenizer(tiny_model_dir), tmp_path / "noisy")
    return tmp_path / "noisy"


def test_a_k_way_ranking_loss_is_the_mean_of_its_pairs_losses_computed_one_by_one(tiny_model_dir, tmp_path):
    import torch
    import torch.nn.functional as F

    from instructgpt.models import load_causal_lm
    from instructgpt.reward_model import flatten_comparisons, ranking_loss
    from instructgpt.stages.dpo import ResponseEncoder, implicit_rewards
    from instructgpt.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    policy, ref = load_causal_lm(str(_perturbed_policy(tiny_model_dir, tmp_path))), load_causal_lm(str(tiny_model_dir))
    encode = ResponseEncoder(tok, 0)
    prompt = "Tell me about the river."
    responses = ["It is long and wide.", "Rivers.", "The river runs to the sea past three old towns.", "No."]
    ranking = [2, 0, 3, 1]  # best first
    pairs = [(ranking[a], ranking[b]) for a in range(4) for b in range(a + 1, 4)]
    beta = 0.5
    seqs, flat_pairs, groups = flatten_comparisons([([encode(prompt, r) for r in responses], pairs)])
    rewards = implicit_rewards(policy, ref, seqs, beta, tok.pad_token_id, torch.device("cpu"))
    loss, st = ranking_loss(rewards, torch.tensor(flat_pairs), torch.tensor(groups), 1)
    one_by_one = []
    for i, j in pairs:  # each pair on its own: two responses, two forwards per model
        r = implicit_rewards(policy, ref, [encode(prompt, responses[i]), encode(prompt, responses[j])], beta, tok.pad_token_id,
                             torch.device("cpu"))
        one_by_one.append(float(-F.logsigmoid(r[0] - r[1]).detach()))
    assert st["pairs"] == 6 and len(seqs) == 4  # six pairs, four responses: one forward per response
    assert float(loss.detach()) == pytest.approx(sum(one_by_one) / 6, rel=1e-5)
    assert float(rewards.detach().abs().max()) > 1e-3  # the policy differs from the reference, so the check is not 6 x log 2


def _preference_rows(n: int, offset: int) -> list[dict]:
    """Prompts about different things; the labelers always prefer the polite answer to the rude one."""
    rows = []
    for i in range(offset, offset + n):
        rows.append({"prompt": f"Tell me about item {i}.", "responses": [f"Item {i} is fine, thank you.", "Go away, idiot."],
                     "ranking": [0, 1], "labeler": f"l{i % 3}"})
    return rows


def test_dpo_raises_the_implicit_reward_margin_on_held_out_pairs(tiny_model_dir, tmp_path):
    from instructgpt.stages.dpo import DPOConfig, run

    train = _ranked(tmp_path / "train.jsonl", _preference_rows(48, 0))
    held = _ranked(tmp_path / "held.jsonl", _preference_rows(12, 1000))
    out = run(DPOConfig(data=[str(train)], eval_data=[str(held)], model=str(tiny_model_dir), out=str(tmp_path / "dpo"), beta=0.1,
                        lr=3e-3, epochs=3, batch_size=8, warmup_steps=0, eval_every=0, progress=False, tensorboard=False))
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    first, final = rows[0], rows[-1]
    assert first["eval_margin"] == pytest.approx(0.0, abs=1e-6) and first["eval_accuracy_all"] == 0.5  # policy = reference
    assert final["final"] and final["margin"] > 0.05 and final["accuracy_all"] == 1.0
    assert (out / "model.safetensors").is_file() and (out / "igpt_complete.json").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(out))  # a plain model folder


def test_ipo_trains_and_bad_input_is_one_line(tiny_model_dir, tmp_path):
    from instructgpt.stages.dpo import DPOConfig, run

    train = _ranked(tmp_path / "train.jsonl", _preference_rows(16, 0))
    out = run(DPOConfig(data=[str(train)], model=str(tiny_model_dir), out=str(tmp_path / "ipo"), loss="ipo", beta=0.5, lr=3e-3,
                        epochs=2, batch_size=8, val_fraction=0.0, progress=False, tensorboard=False))
    final = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["final"] and math.isfinite(final["train_comparisons"])
    # the pairwise shapes igpt rm reads (prompt/chosen/rejected and Anthropic HH dialogues) train DPO the same way
    pairwise = _ranked(tmp_path / "pairs.jsonl", [
        {"prompt": f"Tell me about item {i}.", "chosen": f"Item {i} is fine, thank you.", "rejected": "Go away, idiot."} for i in range(6)
    ] + [{"chosen": f"\n\nHuman: Hi {i}\n\nAssistant: Hello, how can I help?", "rejected": f"\n\nHuman: Hi {i}\n\nAssistant: What."}
         for i in range(6)])
    out = run(DPOConfig(data=[str(pairwise)], model=str(tiny_model_dir), out=str(tmp_path / "pairs"), batch_size=4, val_fraction=0.0,
                        progress=False, tensorboard=False))
    assert [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()][0]["train_comparisons"] == 12
    with pytest.raises(UserError, match="--model"):
        run(DPOConfig(data=[str(train)], out=str(tmp_path / "x")))
    with pytest.raises(UserError, match=r"--beta"):
        DPOConfig(beta=0.0)

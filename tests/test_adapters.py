"""LoRA adapters in every trainer: what trains, the reference from the base with the adapters off, merged and adapter
saves that load with no code of ours, resume, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from instructgpt.errors import UserError
from test_dpo import _preference_rows, _ranked
from test_ppo import one_thread, prompts_file, tiny_cfg, tiny_rm_dir  # noqa: F401 (fixtures)
from test_reward import _rm_cfg
from test_sft import _cfg as _sft_cfg
from test_sft import _demos


def _configs():
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig, Qwen2Config

    small = dict(vocab_size=64)
    return {
        "gpt2": (GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, **small), {"c_attn", "c_proj", "c_fc"}),
        "qwen2": (Qwen2Config(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64, **small),
                  {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
        "neox": (GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, **small),
                 {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}),
        "opt": (OPTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32, **small),
                {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}),
        "llama": (LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64, **small),
                  {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    }


@pytest.mark.parametrize("arch", ["gpt2", "qwen2", "neox", "opt", "llama"])
def test_each_architecture_adapts_its_own_projections_and_the_base_comes_back_exactly(arch):
    """The default targets are the decoder layers' projections whatever they are called; only the adapters train; with
    the adapters off the model computes exactly what it did before; the merged weights compute what the adapted model
    does."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from instructgpt.adapters import BaseView, add_lora, adapters_off, linear_names, merged_state_dict

    config, want = _configs()[arch]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    assert set(linear_names(model)) == want
    x = torch.randint(0, 64, (2, 10))
    before = model(x).logits.detach().clone()
    plain = AutoModelForCausalLM.from_config(config).eval()
    plain.load_state_dict(model.state_dict())
    add_lora(model, SimpleNamespace(lora_r=4, lora_alpha=8.0, lora_dropout=0.0, lora_targets=[]))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".lora_" in n for n in trained)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # as if trained: B starts at zero
    adapted = model(x).logits.detach()
    assert not torch.allclose(adapted, before)
    with adapters_off(model):
        assert torch.equal(model(x).logits, before)
    assert torch.equal(BaseView(model)(x).logits, before) and torch.equal(model(x).logits, adapted)  # switched back on
    plain.load_state_dict(merged_state_dict(model))
    torch.testing.assert_close(plain(x).logits, adapted, rtol=1e-4, atol=1e-4)


def test_lora_ppo_raises_its_reward_with_the_base_as_reference_and_saves_plain_folders(tiny_model_dir, prompts_file, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from instructgpt.adapters import BaseView, add_lora, reference
    from instructgpt.episodes import build_episodes
    from instructgpt.policy import sequence_logprobs
    from instructgpt.stages import ppo

    from instructgpt.models import load_causal_lm, save_model
    from instructgpt.tokenizer import load_tokenizer

    # A random tiny model's output layer is too small for adapters inside the layers to move its near-uniform output, and
    # a random quarter of the vocabulary has no common direction to move it in. So: a larger output layer, and a reward
    # for the tokens on one side of a direction in the hidden space, which the adapters can learn to point along.
    lm = load_causal_lm(tiny_model_dir)
    with torch.no_grad():
        lm.lm_head.weight.mul_(8.0)
    start = tmp_path / "start"
    save_model(lm, load_tokenizer(tiny_model_dir), start)
    side = lm.lm_head.weight.detach() @ torch.randn(lm.config.hidden_size, generator=torch.Generator().manual_seed(0)) > 0
    chosen = set(torch.nonzero(side).flatten().tolist())

    def reward(prompts, responses):
        return [sum(t in chosen for t in r) / max(1, len(r)) for r in responses]

    cfg = tiny_cfg(start, prompts_file, tmp_path / "lora", steps=8, batch_size=16, minibatch_size=4, lr=1e-2, value_lr=1e-3,
                   value_head_on_policy=True, checkpoint_every=0, sample_every=0, kl_coef=0.02, lora_r=8, lora_alpha=16.0,
                   save_adapter=True, eval_every=0)
    out = ppo.run(cfg, reward_fn=reward)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    scores = [r["score"] for r in rows if "score" in r]
    assert sum(scores[-3:]) / 3 > scores[0] + 0.1, scores
    assert abs(next(r for r in rows if r["step"] == 1)["kl"]) < 1e-3  # the adapters start at zero: policy = reference
    assert next(r for r in rows if r["step"] == 8)["kl"] > 0.01  # and the policy moved away from its base

    # the saved folder is a plain causal LM (adapters merged), and the adapter folder rebuilds the same model through peft
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert not any("lora" in k for k in load_file(str(out / "model.safetensors")))
    rebuilt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(start)), str(out / "adapter")).eval()
    base = AutoModelForCausalLM.from_pretrained(str(start)).eval()
    x = torch.randint(0, 300, (2, 12))
    torch.testing.assert_close(merged(x).logits, rebuilt(x).logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(merged(x).logits, base(x).logits, atol=1e-3)
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(start)

    # the reference of an adapted policy is its own base with the adapters off: the base model's log-probs exactly
    policy = add_lora(AutoModelForCausalLM.from_pretrained(str(start)).eval(), cfg)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    ref = reference(policy, lambda: pytest.fail("an adapted policy must not load a second copy"))
    assert isinstance(ref, BaseView)
    ep = build_episodes([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14, 15]], [True, False], 0, torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(sequence_logprobs(ref, ep, 1.0), sequence_logprobs(base, ep, 1.0))
        assert not torch.allclose(sequence_logprobs(policy, ep, 1.0), sequence_logprobs(base, ep, 1.0))


def test_lora_ppo_with_a_reward_model_shares_its_trunk_with_the_value_adapter_and_resumes_exactly(tiny_model_dir, tiny_rm_dir,
                                                                                                   prompts_file, tmp_path):
    """The value model is a second adapter with its own head on the reward model's trunk, which scores with the adapter
    off; a checkpoint holds only what trains; an interrupted run resumes to the same weights."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from instructgpt.stages import ppo

    common = dict(reward_model=str(tiny_rm_dir), steps=2, checkpoint_every=1, lr=1e-2, value_lr=1e-2, lora_r=4, eval_every=0,
                  val_tokens=0, sample_every=0, save_policy_every=0)
    full = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "full", **common))
    part = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "split", stop_after=1, **common))
    saved = load_file(str(part / "checkpoint" / "policy.safetensors"))
    assert saved and all(".lora_" in k for k in saved)  # the frozen base is not checkpointed
    value_saved = load_file(str(part / "checkpoint" / "value.safetensors"))
    assert {k for k in value_saved if ".lora_" not in k} == {"own_head.weight", "bias"}
    resumed = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "split", resume=True, **common))
    for name in ("model.safetensors", "value/model.safetensors"):
        a, b = load_file(str(full / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # the value folder is a plain sequence classifier whose trunk moved (its adapter merged) and whose head is the value head
    rm = load_file(str(Path(tiny_rm_dir) / "model.safetensors"))
    value = load_file(str(full / "value" / "model.safetensors"))
    assert not torch.equal(value["score.weight"], rm["score.weight"])
    assert not torch.equal(value["model.layers.0.self_attn.q_proj.weight"], rm["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(value["model.embed_tokens.weight"], rm["model.embed_tokens.weight"])
    AutoModelForSequenceClassification.from_pretrained(str(full / "value"))


def test_lora_sft_trains_only_the_projections_and_lowers_the_loss(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from instructgpt.stages.sft import run

    data = _demos(tmp_path / "d.jsonl", n=80)
    out = run(_sft_cfg(tiny_model_dir, data, tmp_path / "sft", lora_r=8, lr=1e-2, samples=0, select_by="last", epochs=2))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert vals[-1] < rows[0]["initial_val_loss"] - 0.2
    base, tuned = load_file(str(Path(tiny_model_dir) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert base.keys() == tuned.keys()
    moved = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert moved and all(k.endswith("_proj.weight") and ".layers." in k for k in moved)  # norms and embeddings frozen


def test_lora_reward_model_trains_its_head_and_its_adapter_folder_loads_in_peft(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from instructgpt.stages import reward

    out = reward.run(_rm_cfg(tmp_path, tiny_model_dir, tmp_path / "rm", lora_r=4, save_adapter=True, eval_every=0))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["loss"] > rows[-2]["loss"]
    merged = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    torch.manual_seed(5)
    rebuilt = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1),
                                        str(out / "adapter")).eval()
    x = torch.randint(3, 300, (3, 9))
    torch.testing.assert_close(merged(x).logits, rebuilt(x).logits, rtol=1e-4, atol=1e-4)


def test_lora_dpo_starts_at_the_reference_and_learns(tiny_model_dir, tmp_path):
    from instructgpt.stages.dpo import DPOConfig, run

    train = _ranked(tmp_path / "train.jsonl", _preference_rows(48, 0))
    held = _ranked(tmp_path / "held.jsonl", _preference_rows(12, 1000))
    out = run(DPOConfig(data=[str(train)], eval_data=[str(held)], model=str(tiny_model_dir), out=str(tmp_path / "dpo"), beta=0.1,
                        lr=2e-2, epochs=3, batch_size=8, warmup_steps=0, eval_every=0, progress=False, tensorboard=False, lora_r=8))
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["eval_margin"] == pytest.approx(0.0, abs=1e-6)
    assert rows[-1]["final"] and rows[-1]["margin"] > 0.05


def test_adapter_options_are_one_line_errors(tiny_model_dir, tmp_path, toy_corpus):
    from instructgpt.stages import pretrain
    from instructgpt.stages.pretrain import PretrainConfig
    from instructgpt.stages.sft import run

    data = _demos(tmp_path / "d.jsonl", n=20)
    with pytest.raises(UserError, match="--save-adapter needs adapters"):
        run(_sft_cfg(tiny_model_dir, data, tmp_path / "a", save_adapter=True))
    with pytest.raises(UserError, match="--load-in-4bit: 4-bit QLoRA needs a CUDA GPU"):
        run(_sft_cfg(tiny_model_dir, data, tmp_path / "b", lora_r=4, load_in_4bit=True))
    with pytest.raises(UserError, match=r"--lora-targets: c_attn is not a module .* q_proj, k_proj"):
        run(_sft_cfg(tiny_model_dir, data, tmp_path / "c", lora_r=4, lora_targets=["c_attn"]))
    with pytest.raises(UserError, match="pretrained from scratch has no base to adapt"):
        pretrain.run(PretrainConfig(corpus=str(toy_corpus), tokenizer=str(tiny_model_dir), out=str(tmp_path / "p"), lora_r=4,
                                    progress=False, tensorboard=False))
    for name in "abcp":
        assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.partial").exists()


def test_dry_run_counts_adapter_state_only(tiny_model_dir):
    from instructgpt.memory import estimate

    full = estimate([("model", str(tiny_model_dir), True, False)], 64, 64, False)[0]
    lora = estimate([("model", str(tiny_model_dir), True, False)], 64, 64, False, lora_r=2)[0]
    assert lora.weights == full.weights and lora.activations == full.activations
    # 2 layers x r 2 x (q 32+32, k 32+16, v 32+16, o 32+32, gate 32+64, up 32+64, down 64+32), as many as peft makes
    assert lora.trained_params == 2 * 2 * 512 and lora.grads == 4 * lora.trained_params and lora.optimizer == 2 * lora.grads
    from types import SimpleNamespace

    from instructgpt.adapters import add_lora
    from instructgpt.models import load_causal_lm

    model = add_lora(load_causal_lm(tiny_model_dir), SimpleNamespace(lora_r=2, lora_alpha=4.0, lora_dropout=0.0, lora_targets=[]))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == lora.trained_params

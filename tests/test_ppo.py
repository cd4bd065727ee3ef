"""PPO stage: batch layout and masking, scoring passes, a toy reward that PPO must raise, exact resume, outputs, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from instructgpt import episodes, policy
from instructgpt.config import build_config
from instructgpt.errors import UserError
from instructgpt.stages import ppo
from instructgpt.stages.ppo import PPOConfig

TARGET = lambda t: t % 4 == 0  # noqa: E731  the toy reward's "chosen tokens": a quarter of the vocabulary


def toy_reward(prompts, responses):
    """Fraction of the response's tokens that are chosen tokens."""
    return [sum(TARGET(t) for t in r) / max(1, len(r)) for r in responses]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the threads fight; restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    from conftest import toy_documents

    p = tmp_path_factory.mktemp("ppo_prompts") / "prompts.jsonl"
    with open(p, "w") as f:
        for i, doc in enumerate(toy_documents(40, seed=1)):
            row = {"prompt": doc[:30]} if i % 2 else {"messages": [{"role": "user", "content": doc[:25]}]}
            f.write(json.dumps(row) + "\n")
    return p


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A reward model folder as step 3 writes it: sequence classification, num_labels 1, reward_bias and reward_std."""
    from transformers import AutoModelForSequenceClassification

    from instructgpt.tokenizer import load_tokenizer

    torch.manual_seed(1)
    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    rm.config.reward_bias = 0.5
    rm.config.reward_std = 2.0
    out = tmp_path_factory.mktemp("rm")
    rm.save_pretrained(str(out))
    load_tokenizer(tiny_model_dir).save_pretrained(str(out))
    return out


def tiny_cfg(tiny_model_dir, prompts_file, out, **kw) -> PPOConfig:
    values = dict(policy=str(tiny_model_dir), prompts=str(prompts_file), out=str(out), ptx_coef=0.0, progress=False, tensorboard=False,
                  no_eos_penalty=0.0)
    values.update(kw)
    return build_config(PPOConfig, preset="tiny", overrides=values)


def _lm(path):
    from instructgpt.models import load_causal_lm

    return load_causal_lm(path).eval()


# ---------------------------------------------------------------------------------------------- layout and masking
def test_truncate_after_first_stop_token():
    assert episodes.truncate_after_stop([5, 6, 2, 7, 2], {2}) == ([5, 6, 2], True)
    assert episodes.truncate_after_stop([5, 6, 7], {2}) == ([5, 6, 7], False)


def test_episode_layout_masks_padding_and_matches_a_left_padded_forward(tiny_model_dir):
    from instructgpt.sampling import left_pad, position_ids_from_mask

    model = _lm(tiny_model_dir)
    prompts = [[10, 11, 12, 13], [20, 21]]
    responses = [[30, 31], [40, 41, 42, 43]]
    ep = episodes.build_episodes(prompts, responses, [True, False], pad_id=1, device="cpu")
    assert ep.input_ids.tolist() == [[10, 11, 12, 13, 30, 31], [20, 21, 40, 41, 42, 43]]
    assert ep.mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert ep.gather_pos[0, :2].tolist() == [3, 4] and ep.gather_pos[1].tolist() == [1, 2, 3, 4]
    with torch.no_grad():
        lp = policy.sequence_logprobs(model, ep, temperature=0.7)
        # reference: the same sequences left-padded with an attention mask and mask-derived positions
        ids, mask = left_pad([p + r for p, r in zip(prompts, responses)], pad_id=1)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits / 0.7
        logp = torch.log_softmax(logits.float(), -1)
    W = ids.shape[1]
    for i, (p, r) in enumerate(zip(prompts, responses)):
        start = W - len(p) - len(r)
        expect = [float(logp[i, start + len(p) - 1 + t, r[t]]) for t in range(len(r))]
        assert torch.allclose(lp[i, : len(r)], torch.tensor(expect), atol=1e-4)
    # a sub-batch is trimmed to its own longest sequence and response
    sub = ep.select(torch.tensor([0]))
    assert sub.input_ids.shape == (1, 6) and sub.mask.shape == (1, 2)


def test_sampler_logprobs_are_the_training_logprobs(tiny_model_dir):
    """PPO reuses the sampler's log-probs as the old log-probs: a training-layout forward must reproduce them."""
    from instructgpt.sampling import SamplingParams, TorchSampler

    model = _lm(tiny_model_dir)
    prompts = [[10, 11, 12, 13, 14], [20, 21], [30, 31, 32]]
    r = TorchSampler(model, pad_token_id=1).generate(prompts, SamplingParams(max_new_tokens=6, temperature=0.9, seed=3, stop_token_ids=[0]))
    ep = episodes.build_episodes(prompts, r.response_ids, r.finished, 1, "cpu")
    with torch.no_grad():
        lp = policy.sequence_logprobs(model, ep, 0.9)
    for i, old in enumerate(r.logprobs):
        assert torch.allclose(lp[i, : len(old)], torch.tensor(old), atol=1e-4)


def test_reward_scorer_reads_the_last_real_token_with_bias_and_scale(tiny_rm_dir):
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_rm_dir)).eval()
    scorer = policy.RewardScorer(rm)
    ep = episodes.build_episodes([[10, 11, 12], [20]], [[30], [40, 41, 42, 43]], [True, True], 1, "cpu")
    with torch.no_grad():
        got = scorer(ep.input_ids, ep.seq_len)
        for i, seq in enumerate([[10, 11, 12, 30], [20, 40, 41, 42, 43]]):
            raw = rm(input_ids=torch.tensor([seq])).logits[0, 0]
            assert abs(float(got[i]) - (float(raw) + 0.5) / 2.0) < 1e-4


def test_value_model_from_reward_model_starts_at_the_normalised_reward(tiny_rm_dir, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from instructgpt.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    value = policy.build_value_module(str(tiny_rm_dir), "cpu", tok)
    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_rm_dir)).eval()
    ep = episodes.build_episodes([[10, 11, 12]], [[30, 31]], [True], 1, "cpu")
    with torch.no_grad():
        v = value(ep.input_ids, ep.gather_pos)
        s = policy.RewardScorer(rm)(ep.input_ids[:, :4], torch.tensor([4]))  # the prefix ending where V's last position reads
    assert abs(float(v[0, 1]) - float(s[0])) < 1e-4
    zero = policy.build_value_module(str(tiny_model_dir), "cpu", tok)  # from a causal LM: zero head
    with torch.no_grad():
        assert torch.allclose(zero(ep.input_ids, ep.gather_pos), torch.zeros(1, 2))


def test_prompt_stream_is_exact_and_rank_disjoint():
    a = episodes.PromptStream(10, 3, seed=1)
    seen = a.next() + a.next()
    b = episodes.PromptStream(10, 3, seed=1)
    b.load_state({"epoch": 0, "pos": 3})
    assert b.next() == seen[3:]
    r0, r1 = episodes.PromptStream(10, 2, 0, 0, 2), episodes.PromptStream(10, 2, 0, 1, 2)
    x, y = r0.next(), r1.next()
    assert not set(x) & set(y) and len(x) == len(y) == 2
    c = episodes.PromptStream(4, 3, seed=0)
    got = c.next() + c.next()  # crosses into the second epoch
    assert sorted(got[:4]) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------- training
def test_ppo_raises_a_toy_reward(tiny_model_dir, prompts_file, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "toy", steps=8, batch_size=16, minibatch_size=4, lr=1e-2,
                   value_lr=1e-3, value_head_on_policy=True, checkpoint_every=0, sample_every=4, kl_coef=0.02)
    out = ppo.run(cfg, reward_fn=toy_reward)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    scores = [r["score"] for r in rows if "score" in r]
    assert len(scores) == 8
    assert sum(scores[-2:]) / 2 > scores[0] + 0.1, scores  # a random model starts near 0.25
    first = next(r for r in rows if r["step"] == 1)
    assert abs(first["kl"]) < 1e-3  # the policy starts as the reference
    for key in ("reward", "kl", "beta", "entropy", "clipfrac", "value_clipfrac", "value_loss", "policy_loss",
                "explained_variance", "response_len", "approx_kl", "lr", "value_lr", "time_sample", "time_train"):
        assert key in first, key
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["step"] == 4 and {"prompt", "response", "score", "kl"} <= set(samples[0]["samples"][0])
    assert (out / "model.safetensors").is_file() and (out / "igpt_complete.json").is_file()


def _weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def test_resume_equals_uninterrupted_training(tiny_model_dir, tiny_rm_dir, prompts_file, toy_corpus, tmp_path):
    """All trainable models, optimisers, prompt position, ptx data position and the adaptive KL state come back."""
    common = dict(reward_model=str(tiny_rm_dir), ptx_corpus=str(toy_corpus), ptx_coef=1.0, ptx_per_episode=0.5, target_kl=0.5,
                  kl_horizon=100, steps=2, checkpoint_every=1, cache_dir=str(tmp_path / "cache"), lr=1e-3, no_eos_penalty=1.0,
                  val_tokens=256, eval_every=2, grad_accum=2)
    full = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "full", **common))
    part = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "split", stop_after=1, **common))
    assert part.name.endswith(".partial") and (part / "checkpoint").is_dir()
    resumed = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "split", resume=True, **common))
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows_a = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [0, 1, 2]
    assert rows_a[-1]["beta"] == rows_b[-1]["beta"] and rows_a[-1]["beta"] != rows_a[1]["beta"]  # adaptive beta moved
    assert rows_a[-1]["ptx_loss"] == rows_b[-1]["ptx_loss"] and "pretrain_val_loss" in rows_a[-1]
    # the policy-gradient norm before the pretraining term is added, beside the whole update's
    assert rows_a[1]["rl_grad_norm"] > 0 and rows_a[1]["rl_grad_norm"] != rows_a[1]["grad_norm"]
    v = full / "value"
    assert (v / "model.safetensors").is_file() and json.loads((v / "config.json").read_text())["reward_std"] == 1.0


def test_gradient_accumulation_four_by_one_equals_one_by_four(tiny_model_dir, tiny_rm_dir, prompts_file, tmp_path):
    """A minibatch of 4 episodes gives the same update as one micro-batch or as four accumulated ones (the losses are
    means over the minibatch's tokens, however it is split). One step: the next rollouts would sample from weights that
    differ in the last bits, and sampling is not continuous."""
    common = dict(reward_model=str(tiny_rm_dir), steps=1, batch_size=8, minibatch_size=4, ppo_epochs=2, eval_every=0,
                  sample_every=0, checkpoint_every=0, lr=1e-3, val_tokens=0)
    one = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "one", grad_accum=1, **common))
    four = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "four", grad_accum=4, **common))
    a, b = _weights(one), _weights(four)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    ra, rb = ([json.loads(x) for x in (f / "metrics.jsonl").read_text().splitlines()][-1] for f in (one, four))
    for key in ("grad_norm", "policy_loss", "value_loss", "approx_kl"):
        assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-7), key
    assert ra["grad_norm"] > 0


def test_a_sampler_with_other_numbers_gets_its_old_logprobs_recomputed(tiny_model_dir, tiny_rm_dir, prompts_file, tmp_path,
                                                                       monkeypatch):
    """The sampler protocol: a backend that says its log-probs are not the training model's (another engine, a server)
    has PPO's old log-probs recomputed by a forward pass, and is handed the updated weights after every step."""
    import instructgpt.sampling as sampling

    made = []

    class OtherNumbers:
        def __init__(self, inner, exact):
            self.inner, self.logprobs_are_exact, self.updates = inner, exact, 0

        def generate(self, prompt_ids, params):
            roll = self.inner.generate(prompt_ids, params)
            roll.logprobs = [[-5.0] * len(lp) for lp in roll.logprobs]  # not the policy's numbers
            return roll

        def update_weights(self, model):
            self.updates += 1
            self.inner.update_weights(model)

    real = sampling.make_sampler
    common = dict(reward_model=str(tiny_rm_dir), steps=2, eval_every=0, sample_every=0, checkpoint_every=0, lr=1e-3,
                  val_tokens=0)
    plain = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "plain", **common))
    for exact in (False, True):
        monkeypatch.setattr(sampling, "make_sampler", lambda *a, **k: made.append(OtherNumbers(real(*a, **k), exact)) or made[-1])
        out = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / f"other-{exact}", **common))
        a, b = _weights(plain), _weights(out)
        close = all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4) for k in a)
        assert close is (not exact), exact  # recomputed: the same training; taken as they are: another one
    assert [m.updates for m in made] == [2, 2]


def test_non_finite_reward_stops_and_keeps_the_last_good_checkpoint(tiny_model_dir, prompts_file, tmp_path):
    calls = {"n": 0}

    def bad_reward(prompts, responses):
        calls["n"] += 1
        return [float("nan") if calls["n"] == 2 else 0.5] * len(responses)

    cfg = tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "nan", steps=3, checkpoint_every=1, value_head_on_policy=True)
    with pytest.raises(UserError, match="reward-model score became nan at step 2"):
        ppo.run(cfg, reward_fn=bad_reward)
    state = json.loads((tmp_path / "nan.partial" / "checkpoint" / "state.json").read_text())
    assert state["state"]["step"] == 1


def test_output_folder_follows_the_ptx_coefficient(tmp_path, tiny_model_dir, tiny_rm_dir):
    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    (run / "rm").mkdir()
    base = dict(run=str(run), prompts="p.jsonl", ptx_corpus="c.txt")
    assert ppo.resolve_paths(PPOConfig(**base))["out"] == run / "ppo-ptx"
    assert ppo.resolve_paths(PPOConfig(ptx_coef=0.0, **base))["out"] == run / "ppo"


def test_user_errors_are_one_line(tmp_path, tiny_model_dir, prompts_file):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2"):
        ppo.run(tiny_cfg(tiny_model_dir, bad, tmp_path / "o"), reward_fn=toy_reward)
    with pytest.raises(UserError, match="--reward-model"):
        ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "o"))
    with pytest.raises(UserError, match="--ptx-corpus"):
        ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "o", ptx_coef=1.0), reward_fn=toy_reward)
    with pytest.raises(UserError, match="--minibatch-size"):
        ppo.validate(PPOConfig(batch_size=8, minibatch_size=3))
    with pytest.raises(UserError, match="--temperature"):
        ppo.validate(PPOConfig(temperature=0.0))


def test_cli_help_lists_the_options(capsys):
    from instructgpt.cli import main

    with pytest.raises(SystemExit):
        main(["ppo", "--help"])
    text = capsys.readouterr().out
    for flag in ("--ptx-coef", "--kl-coef", "--target-kl", "--value-head-on-policy", "--ppo-epochs", "--no-eos-penalty"):
        assert flag in text
    assert math.isclose(PPOConfig().kl_coef, 0.02) and PPOConfig().lam == 0.95 and PPOConfig().adam_eps == 1e-5


def test_adaptive_kl_horizon_note_when_the_controller_cannot_act():
    """Ziegler et al.'s horizon (10,000 episodes) leaves beta where it started in a CPU-sized run: PPO says so, once."""
    short = build_config(PPOConfig, "default", overrides={"target_kl": 1.0, "steps": 60})
    note = ppo.kl_horizon_note(short)
    assert note is not None and "at most x1.04" in note and "--kl-horizon 480" in note and "1920 episodes" in note
    assert "3840 episodes" in ppo.kl_horizon_note(short, world_size=2)  # every rank's episodes count
    assert ppo.kl_horizon_note(build_config(PPOConfig, "default", overrides={"target_kl": 1.0, "steps": 60, "kl_horizon": 480})) is None
    assert ppo.kl_horizon_note(build_config(PPOConfig, "default", overrides={"steps": 60})) is None  # fixed beta: nothing to say
    # the controller itself: with the suggested horizon, 60 steps of KL far above target double beta at least
    from instructgpt.rl import kl_controller

    ctl = kl_controller(0.02, 1.0, 480)
    for _ in range(60):
        ctl.update(4.0, 32)
    assert ctl.beta >= 0.04


def test_activation_checkpointing_trains_the_same_policy_and_value_model(tiny_model_dir, tiny_rm_dir, prompts_file, toy_corpus, tmp_path):
    """PPO-ptx with --gradient-checkpointing (both trained models, held in eval mode to keep dropout off) ends with the
    weights of the run without it."""
    common = dict(reward_model=str(tiny_rm_dir), ptx_corpus=str(toy_corpus), ptx_coef=1.0, ptx_per_episode=0.5, steps=2, lr=1e-3,
                  cache_dir=str(tmp_path / "cache"), val_tokens=0, eval_every=0)
    plain = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "plain", **common))
    ckpt = ppo.run(tiny_cfg(tiny_model_dir, prompts_file, tmp_path / "ckpt", gradient_checkpointing=True, **common))
    a, b = _weights(plain), _weights(ckpt)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    va, vb = (_weights(p / "value") for p in (plain, ckpt))
    assert all(torch.allclose(va[k], vb[k], atol=1e-5, rtol=1e-4) for k in va)

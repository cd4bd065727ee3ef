"""The rollout engine: log-probs equal a full forward pass's, stop handling, both engines, batching, texts."""

from __future__ import annotations

import pytest


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(n_kv_heads: int = 2, vocab: int = 300):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=n_kv_heads, max_position_embeddings=128, tie_word_embeddings=True,
                      bos_token_id=0, eos_token_id=0, pad_token_id=1)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _prompts(lengths, vocab=300, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab, (n,), generator=g).tolist() for n in lengths]


STOPS = list(range(2, 14))  # frequent enough that some rows stop early and some do not


@pytest.mark.parametrize("engine", ["static", "hf"])
@pytest.mark.parametrize("temperature,top_p,top_k", [(0.7, 1.0, 0), (1.3, 0.9, 0), (1.0, 1.0, 20)])
def test_logprobs_equal_full_forward(engine, temperature, top_p, top_k):
    from instructgpt.sampling import SamplingParams, TorchSampler, forward_logprobs

    model = _model()
    prompts = _prompts([3, 11, 1, 19, 6, 2, 8])  # mixed lengths: left padding
    sampler = TorchSampler(model, pad_token_id=1, engine=engine, batch_size=4)  # two batches
    r = sampler.generate(prompts, SamplingParams(max_new_tokens=16, temperature=temperature, top_p=top_p, top_k=top_k, seed=1,
                                                 stop_token_ids=STOPS))
    assert [len(p) for p in r.prompt_ids] == [3, 11, 1, 19, 6, 2, 8]
    for ids, fin in zip(r.response_ids, r.finished):
        assert 1 <= len(ids) <= 16
        assert fin == (ids[-1] in STOPS) and not any(t in STOPS for t in ids[:-1])
    assert any(r.finished) and not all(r.finished)
    ref = forward_logprobs(model, prompts, r.response_ids, pad_token_id=1, temperature=temperature)
    for got, want in zip(r.logprobs, ref):
        assert len(got) == len(want)
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4


def test_grouped_query_attention_and_many_rows():
    """More rows than one prefill group, grouped-query attention, rows dropped from the batch as they finish."""
    from instructgpt.sampling import SamplingParams, TorchSampler, forward_logprobs

    model = _model(n_kv_heads=1)
    prompts = _prompts([1 + (i * 7) % 23 for i in range(40)], seed=3)
    r = TorchSampler(model, pad_token_id=1, engine="static").generate(
        prompts, SamplingParams(max_new_tokens=12, temperature=1.0, seed=0, stop_token_ids=STOPS))
    ref = forward_logprobs(model, prompts, r.response_ids, pad_token_id=1)
    worst = max(abs(a - b) for got, want in zip(r.logprobs, ref) for a, b in zip(got, want))
    assert worst < 1e-4 and sum(r.finished) >= 10


def test_engines_agree_greedy_and_seeded_sampling_is_reproducible():
    from instructgpt.sampling import SamplingParams, TorchSampler, static_engine_supported

    model = _model()
    assert static_engine_supported(model)
    prompts = _prompts([4, 9, 2])
    greedy = SamplingParams(max_new_tokens=10, temperature=0.0, stop_token_ids=STOPS)
    a = TorchSampler(model, 1, engine="static").generate(prompts, greedy)
    b = TorchSampler(model, 1, engine="hf").generate(prompts, greedy)
    assert a.response_ids == b.response_ids
    p = SamplingParams(max_new_tokens=10, temperature=1.0, seed=5, stop_token_ids=STOPS)
    s = TorchSampler(model, 1)
    assert s.generate(prompts, p).response_ids == s.generate(prompts, p).response_ids


def test_sampler_restores_training_mode_and_fills_texts(tiny_model_dir):
    from instructgpt.sampling import SamplingParams, TorchSampler, encode_prompt, load_model
    from instructgpt.tokenizer import stop_token_ids

    model, tok = load_model(str(tiny_model_dir))
    model.train()
    sampler = TorchSampler(model, tok.pad_token_id, tokenizer=tok)
    ids = [encode_prompt(tok, "Hello there."), encode_prompt(tok, [{"role": "user", "content": "How are you?"}])]
    r = sampler.generate(ids, SamplingParams(max_new_tokens=5, temperature=0.8, seed=0, stop_token_ids=stop_token_ids(tok)))
    assert model.training and len(r.texts) == 2 and all(isinstance(t, str) for t in r.texts)


def test_inverse_cdf_sampling_matches_the_distribution():
    import torch

    from instructgpt.sampling import sample_from_probs

    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).repeat(20000, 1)
    freq = torch.bincount(sample_from_probs(probs, torch.Generator().manual_seed(0)), minlength=4).float() / 20000
    assert freq[1] == 0 and torch.allclose(freq, probs[0], atol=0.015)


def test_static_engine_refuses_other_architectures():
    from transformers import GPT2Config, GPT2LMHeadModel

    from instructgpt.sampling import SamplingParams, TorchSampler

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()
    r = TorchSampler(model, 0).generate([[3, 4, 5]], SamplingParams(max_new_tokens=3, seed=0))  # auto: generic engine
    assert len(r.response_ids[0]) == 3
    with pytest.raises(ValueError):
        TorchSampler(model, 0, engine="static").generate([[3, 4]], SamplingParams(max_new_tokens=2))


def test_nucleus_filter_keeps_the_same_tokens_as_a_full_sort(monkeypatch):
    """Top-p looks among the top 64 logits first and sorts the whole vocabulary only when a row's nucleus reaches
    beyond them; either way it keeps the smallest prefix of the sorted distribution whose mass reaches top_p."""
    import torch

    from instructgpt import sampling

    def full_sort(logits, top_p):
        s, idx = torch.sort(logits, descending=True, dim=-1)
        p = torch.softmax(s, dim=-1)
        s = s.masked_fill((p.cumsum(-1) - p) > top_p, float("-inf"))
        return torch.full_like(logits, float("-inf")).scatter(-1, idx, s)

    gen = torch.Generator().manual_seed(0)
    peaked = torch.randn(32, 3000, generator=gen) * 8  # nuclei of a few tokens: the partial sort
    flat = torch.randn(32, 3000, generator=gen) * 0.5  # nuclei of thousands: the full sort
    mixed = torch.cat([peaked[:16], flat[:16]])
    small = torch.randn(8, 40, generator=gen) * 3  # a vocabulary smaller than 64
    for logits in (peaked, flat, mixed, small):
        for top_p in (0.5, 0.9, 0.95):
            fast = sampling._filter_logits(logits, 0, top_p)
            ref = full_sort(logits, top_p)
            assert torch.equal(torch.isinf(fast), torch.isinf(ref))
            assert torch.equal(fast[~torch.isinf(fast)], logits[~torch.isinf(fast)])  # kept logits are untouched
    expected = full_sort(peaked, 0.9)

    def no_sort(*a, **k):
        raise AssertionError("a peaked distribution needs no full sort")

    monkeypatch.setattr(torch, "sort", no_sort)
    assert torch.equal(torch.isinf(sampling._filter_logits(peaked, 0, 0.9)), torch.isinf(expected))


def test_prompts_fit_a_learned_position_context_and_rotary_models_are_not_cut():
    """GPT-2-style models have no position past their context: prompts keep their last tokens so that the response fits,
    and a --max-new-tokens that leaves no room is one line; rotary models (Llama, Qwen2) have no such limit."""
    from transformers import GPT2Config, LlamaConfig

    from instructgpt.errors import UserError
    from instructgpt.memory import hard_context
    from instructgpt.sampling import fit_context

    gpt2 = GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    llama = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                        max_position_embeddings=32)
    assert hard_context(gpt2) == 32 and hard_context(llama) == 0
    prompts = [list(range(30)), [1, 2, 3]]
    assert fit_context(prompts, 32, 8) == [list(range(6, 30)), [1, 2, 3]]
    assert fit_context(prompts, 0, 8) == prompts and fit_context(prompts, 64, 8) == prompts
    with pytest.raises(UserError, match="--max-new-tokens: 32 leaves no room for a prompt in the model's context of 32 tokens"):
        fit_context(prompts, 32, 32)

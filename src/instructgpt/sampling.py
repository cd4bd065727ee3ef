"""The rollout engine: batched sampling with a KV cache over left-padded prompts.

It knows nothing about text: prompts come in as token ids, and out come response ids (cut after the first stop token,
which is kept), per-token log-probs and a ``finished`` flag. The log-prob of each sampled token is taken from
``log_softmax(logits / temperature)`` over the whole vocabulary, exactly what a training forward pass computes, so PPO's
old log-probs can come straight from sampling. Top-k / top-p only narrow what is sampled. ``Sampler`` is the small
interface another backend (for example vLLM on GPUs) implements to replace ``TorchSampler``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence


@dataclass
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: Sequence[int] = ()


@dataclass
class Rollout:
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]  # cut after the first stop token (kept)
    logprobs: list[list[float]]
    finished: list[bool]  # True when the response ended with a stop token
    texts: list[str] = field(default_factory=list)


class Sampler(Protocol):
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> Rollout: ...


def left_pad(seqs: list[list[int]], pad_id: int, device: Any = None) -> tuple[Any, Any]:
    """Left-pad token lists into (input_ids, attention_mask) tensors."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def position_ids_from_mask(mask: Any) -> Any:
    """Positions count real tokens only, so a left-padded prompt sees the same positions as an unpadded one."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _filter_logits(logits: Any, top_k: int, top_p: float) -> Any:
    import torch

    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        cum = probs.cumsum(-1)
        drop = (cum - probs) > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def _forward_kwargs(model: Any) -> tuple[str, bool]:
    """The name of the KV-cache argument (``cache`` in transformers 5, ``past_key_values`` before) and whether
    ``logits_to_keep`` is accepted (so prefill computes logits for the last position only)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def _cache_of(out: Any) -> Any:
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


class TorchSampler:
    """Batched sampling with the model's own KV cache; one forward pass for the prompts, then one per new token."""

    def __init__(self, model: Any, pad_token_id: int, device: Any = None, batch_size: int = 64):
        self.model = model
        self.pad_id = int(pad_token_id)
        self.device = device if device is not None else next(model.parameters()).device
        self.batch_size = batch_size

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> Rollout:
        out = Rollout([], [], [], [])
        gen = None
        if params.seed is not None:
            import torch

            gen = torch.Generator(device=self.device).manual_seed(params.seed)
        for s in range(0, len(prompt_ids), self.batch_size):
            chunk = prompt_ids[s : s + self.batch_size]
            r = self._generate_batch(chunk, params, gen)
            out.prompt_ids += r.prompt_ids
            out.response_ids += r.response_ids
            out.logprobs += r.logprobs
            out.finished += r.finished
        return out

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, gen: Any) -> Rollout:
        import torch

        model = self.model
        was_training = model.training
        model.eval()
        stop = torch.tensor(sorted(set(params.stop_token_ids)) or [-1], device=self.device)
        B = len(prompts)
        ids, mask = left_pad(prompts, self.pad_id, self.device)
        pos = position_ids_from_mask(mask)
        new_tokens = torch.full((B, params.max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)
        new_logps = torch.zeros((B, params.max_new_tokens), dtype=torch.float32, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        lengths = torch.full((B,), params.max_new_tokens, dtype=torch.long, device=self.device)
        temp = max(params.temperature, 1e-6)
        cache_kw, keep = _forward_kwargs(model)
        extra = {"logits_to_keep": 1} if keep else {}
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
            past = _cache_of(out)
            logits = out.logits[:, -1, :].float()
            next_pos = pos[:, -1:] + 1
            for t in range(params.max_new_tokens):
                scaled = logits / temp
                logp_all = torch.log_softmax(scaled, dim=-1)
                if params.temperature <= 0:
                    tok = scaled.argmax(-1)
                else:
                    probs = torch.softmax(_filter_logits(scaled, params.top_k, params.top_p), dim=-1)
                    tok = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
                tok = torch.where(done, torch.full_like(tok, self.pad_id), tok)
                new_tokens[:, t] = tok
                new_logps[:, t] = logp_all.gather(-1, tok.unsqueeze(-1)).squeeze(-1).masked_fill(done, 0.0)
                hit = torch.isin(tok, stop) & ~done
                lengths = torch.where(hit, torch.full_like(lengths, t + 1), lengths)
                done = done | hit
                if bool(done.all()) or t == params.max_new_tokens - 1:
                    break
                mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=self.device)], dim=1)
                out = model(input_ids=tok.unsqueeze(-1), attention_mask=mask, position_ids=next_pos, use_cache=True, **{cache_kw: past})
                past = _cache_of(out)
                logits = out.logits[:, -1, :].float()
                next_pos = next_pos + 1
        if was_training:
            model.train()
        toks, lps, lens, fin = new_tokens.tolist(), new_logps.tolist(), lengths.tolist(), done.tolist()
        return Rollout(
            prompt_ids=[list(p) for p in prompts],
            response_ids=[toks[i][: lens[i]] for i in range(B)],
            logprobs=[lps[i][: lens[i]] for i in range(B)],
            finished=fin,
        )


def decode_responses(tok: Any, rollout: Rollout, stop_token_ids: Sequence[int] = ()) -> list[str]:
    """Response texts without the final stop token or special tokens."""
    stops = set(stop_token_ids)
    texts = []
    for ids in rollout.response_ids:
        if ids and ids[-1] in stops:
            ids = ids[:-1]
        texts.append(tok.decode(ids, skip_special_tokens=True))
    rollout.texts = texts
    return texts


def load_model(path: str, device: Any = None) -> tuple[Any, Any]:
    """Load a model folder (or hub id) and its tokenizer for sampling, in eval mode."""
    from .models import load_causal_lm, resolve_device
    from .tokenizer import load_tokenizer

    dev = device if device is not None else resolve_device("auto")
    tok = load_tokenizer(path)
    model = load_causal_lm(path, device=dev)
    model.eval()
    return model, tok


def encode_prompt(tok: Any, prompt: str | list[dict], chat: bool = True) -> list[int]:
    """Token ids of a prompt: chat messages (or a user string with ``chat``) through the chat template, else raw text."""
    if isinstance(prompt, list):
        return list(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
    if chat:
        return list(tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False))
    return tok(prompt, add_special_tokens=False)["input_ids"]


def stream_chat(
    model: Any,
    tok: Any,
    messages: list[dict],
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.95,
    top_k: int = 0,
    seed: int | None = None,
) -> Iterator[str]:
    """Sample one chat reply token by token, yielding text pieces as they become printable."""
    import torch

    from .tokenizer import stop_token_ids

    stops = set(stop_token_ids(tok, getattr(model, "generation_config", None)))
    prompt = encode_prompt(tok, messages)
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
    model.eval()
    ids = torch.tensor([prompt], device=dev)
    pos = torch.arange(len(prompt), device=dev).unsqueeze(0)
    out_ids: list[int] = []
    shown = ""
    cache_kw, keep = _forward_kwargs(model)
    extra = {"logits_to_keep": 1} if keep else {}
    with torch.inference_mode():
        out = model(input_ids=ids, position_ids=pos, use_cache=True, **extra)
        past = _cache_of(out)
        for t in range(max_new_tokens):
            logits = out.logits[:, -1, :].float() / max(temperature, 1e-6)
            if temperature <= 0:
                nxt = int(logits.argmax(-1))
            else:
                probs = torch.softmax(_filter_logits(logits, top_k, top_p), dim=-1)
                nxt = int(torch.multinomial(probs, 1, generator=gen))
            if nxt in stops:
                break
            out_ids.append(nxt)
            text = tok.decode(out_ids, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # wait for a whole UTF-8 character
                if len(text) > len(shown):
                    yield text[len(shown) :]
                shown = text
            out = model(
                input_ids=torch.tensor([[nxt]], device=dev),
                position_ids=torch.tensor([[len(prompt) + t]], device=dev),
                use_cache=True,
                **{cache_kw: past},
            )
            past = _cache_of(out)

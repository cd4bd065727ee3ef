"""The rollout engine: batched sampling with a KV cache over left-padded prompts.

It knows nothing about text: prompts come in as token ids, and out come response ids (cut after the first stop token,
which is kept), per-token log-probs and a ``finished`` flag (and the texts, when the sampler was given a tokenizer).
The log-prob of each sampled token is taken from ``log_softmax(logits / temperature)`` over the whole vocabulary, exactly
what a training forward pass computes (``forward_logprobs``), so PPO's old log-probs can come straight from sampling.
Top-k / top-p only narrow what is sampled. Greedy decoding (temperature 0) reports temperature-1 log-probs.

``Sampler`` is the small interface another backend (for example vLLM on GPUs) implements to replace ``TorchSampler``.
``TorchSampler`` has two engines:

- ``static`` (Llama-architecture models, used automatically for them): one preallocated KV cache for prompt and response,
  fused QKV and gate/up projections, our own masks and rotary positions around the model's own norms, projections and
  rotary module, and rows that finished are dropped from the batch as they accumulate. Several times less per-step
  overhead than the generic path.
- ``hf``: any causal LM through its own forward and cache (``cache=`` in transformers 5, ``past_key_values=`` before).
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
    """What generates rollouts, made by ``make_sampler`` at every call site.

    ``logprobs_are_exact``: its log-probs are the training model's own numbers (the same weights and the same maths), so
    PPO may take them as the old log-probs; a backend whose numbers differ (another engine, quantised weights, a server)
    says False, and PPO recomputes them with a forward pass. ``update_weights(model)``: take the trained weights before
    the next rollout (nothing to do for a sampler that samples from the training model itself)."""

    logprobs_are_exact: bool

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> Rollout: ...

    def update_weights(self, model: Any) -> None: ...


def make_sampler(model: Any, tok: Any, *, batch_size: int = 64, device: Any = None, decode: bool = False,
                 engine: str = "auto") -> Sampler:
    """The sampler for ``model`` (``tok`` gives the padding id; ``decode``: fill ``Rollout.texts`` too). One place to
    add another backend."""
    return TorchSampler(model, tok.pad_token_id, device, batch_size, tokenizer=tok if decode else None, engine=engine)


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


_NUCLEUS_K = 64  # top-p looks for the nucleus among this many logits before sorting the whole vocabulary


def _filter_logits(logits: Any, top_k: int, top_p: float) -> Any:
    import torch

    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        # a trained model's nucleus is a handful of tokens: look among the top 64 first (a partial sort), and sort the
        # whole vocabulary only when some row's nucleus reaches beyond them
        k = min(_NUCLEUS_K, logits.shape[-1])
        top_logits, idx = torch.topk(logits, k, dim=-1)
        probs = (top_logits - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
        cum = probs.cumsum(-1)
        if k == logits.shape[-1] or not bool((cum[..., -1] > top_p).all()):
            top_logits, idx = torch.sort(logits, descending=True, dim=-1)
            probs = torch.softmax(top_logits, dim=-1)
            cum = probs.cumsum(-1)
        drop = (cum - probs) > top_p  # keep the smallest prefix whose mass reaches top_p
        top_logits = top_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, top_logits)
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


def _unwrap(model: Any) -> Any:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


class _Picker:
    """Turns one step's logits into sampled tokens and their log-probs under ``log_softmax(logits / temperature)``."""

    def __init__(self, params: SamplingParams, gen: Any):
        self.p, self.gen = params, gen
        self.greedy = params.temperature <= 0
        self.temp = 1.0 if self.greedy else float(params.temperature)
        self.filtered = bool(params.top_k) or params.top_p < 1.0

    def __call__(self, logits: Any) -> tuple[Any, Any]:
        import torch

        scaled = logits.float()
        if self.temp != 1.0:
            scaled = scaled / self.temp
        logp_all = torch.log_softmax(scaled, dim=-1)
        if self.greedy:
            tok = scaled.argmax(-1)
        else:
            probs = torch.softmax(_filter_logits(scaled, self.p.top_k, self.p.top_p), dim=-1) if self.filtered else logp_all.exp()
            tok = sample_from_probs(probs, self.gen)
        return tok, logp_all.gather(-1, tok.unsqueeze(-1)).squeeze(-1)


def sample_from_probs(probs: Any, gen: Any = None) -> Any:
    """One token per row by inverse-CDF sampling: the same distribution as ``torch.multinomial(probs, 1)``, an order of
    magnitude faster on CPU. A zero-probability token is never drawn (its CDF step is empty)."""
    import torch

    cdf = probs.double().cumsum(-1)
    u = torch.rand((probs.shape[0], 1), generator=gen, device=probs.device, dtype=torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


# ---------------------------------------------------------------------------------------------- static-cache engine
def static_engine_supported(model: Any) -> bool:
    """True for Llama-architecture models whose projections are plain ``nn.Linear`` layers (no adapters or hooks)."""
    import torch

    m = _unwrap(model)
    cfg = getattr(m, "config", None)
    if getattr(cfg, "model_type", None) != "llama" or not hasattr(m, "model") or not hasattr(m, "lm_head"):
        return False
    core = m.model
    if not all(hasattr(core, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return False
    for layer in core.layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attn is None or mlp is None or not hasattr(mlp, "act_fn"):
            return False
        for lin in (getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj")):
            if type(lin) is not torch.nn.Linear or lin._forward_hooks or lin._forward_pre_hooks:
                return False
        for lin in (getattr(mlp, n, None) for n in ("gate_proj", "up_proj")):
            if type(lin) is not torch.nn.Linear or lin._forward_hooks or lin._forward_pre_hooks:
                return False
        if not hasattr(attn, "o_proj") or not hasattr(mlp, "down_proj"):
            return False
    return True


def _fuse(linears: list[Any]) -> tuple[Any, Any]:
    import torch

    w = torch.cat([lin.weight for lin in linears], 0)
    bs = [lin.bias for lin in linears]
    if all(b is None for b in bs):
        return w, None
    return w, torch.cat([b if b is not None else torch.zeros(lin.weight.shape[0], dtype=w.dtype, device=w.device) for b, lin in zip(bs, linears)])


def _fast_norm(module: Any) -> Any:
    """Llama's RMSNorm as one fused op for fp32 weights (the same formula), else the module itself."""
    import torch
    import torch.nn.functional as F

    w = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", None)
    if type(module).__name__ != "LlamaRMSNorm" or not hasattr(F, "rms_norm") or w is None or eps is None or w.dtype != torch.float32:
        return module
    return lambda x: F.rms_norm(x, (x.shape[-1],), w, eps)


class _StaticDecoder:
    """A Llama forward over a preallocated KV cache: the model's own modules for everything but attention bookkeeping.

    Rows are expected in order of prompt length. They are handled in groups of ``group`` consecutive rows, and a group
    attends only from its first real prompt token on, so short prompts do not pay for the padding of long ones.
    """

    def __init__(self, model: Any, batch: int, max_len: int, device: Any, group: int = 16):
        import torch

        m = _unwrap(model)
        self.m, self.core, cfg = m, m.model, m.config
        self.layers = list(self.core.layers[: cfg.num_hidden_layers])
        self.H, self.KVH = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.H
        dtype = self.core.embed_tokens.weight.dtype
        shape = (len(self.layers), batch, self.KVH, max_len, self.hd)
        self.K = torch.zeros(shape, dtype=dtype, device=device)
        self.V = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.zeros((batch, max_len), dtype=torch.bool, device=device)  # which cache slots hold real tokens
        self.qkv = [_fuse([l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj]) for l in self.layers]
        self.gate_up = [_fuse([l.mlp.gate_proj, l.mlp.up_proj]) for l in self.layers]
        self.norms = [(_fast_norm(l.input_layernorm), _fast_norm(l.post_attention_layernorm)) for l in self.layers]
        self.final_norm = _fast_norm(self.core.norm)
        self.attn_kw = {"enable_gqa": True} if self.H != self.KVH else {}
        self.group = group
        self.first = [0] * batch  # first cache slot each row attends to
        self.groups = [(0, batch, 0)]  # (first row, end row, first slot)

    def _regroup(self) -> None:
        n = len(self.first)
        self.groups = [(r, min(n, r + self.group), min(self.first[r : r + self.group])) for r in range(0, n, self.group)]

    def keep_rows(self, rows: Any) -> None:
        """Drop finished rows: keep only ``rows`` (ascending indices into the current batch) in the cache."""
        self.K, self.V, self.valid = self.K[:, rows], self.V[:, rows], self.valid[rows]
        self.first = [self.first[i] for i in rows.tolist()]
        self._regroup()

    def prefill(self, ids: Any, mask: Any, pos: Any) -> Any:
        """Fill the cache with left-padded prompts (rows sorted by length); returns each row's last-position logits."""
        import torch

        P = ids.shape[1]
        self.valid[:, :P] = mask.bool()
        self.first = [P - max(1, n) for n in mask.sum(-1).tolist()]
        self._regroup()
        return torch.cat([self._run(ids[a:b, s:], pos[a:b, s:], s, a, b) for a, b, s in self.groups])

    def step(self, tok: Any, pos: Any, slot: int) -> Any:
        """One new token per row (B,) at positions ``pos`` (B, 1), written to cache ``slot``; returns the next logits."""
        self.valid[:, slot] = True
        return self._run(tok.unsqueeze(-1), pos, slot, None, None)

    def _run(self, ids: Any, pos: Any, start: int, r0: int | None, r1: int | None) -> Any:
        """Prefill rows [r0, r1) (their tokens attend causally to each other; the rows' slots before ``start`` are
        padding), or, with ``r0`` None, decode one token for every row against all of its cached slots."""
        import torch
        import torch.nn.functional as F

        B, n = ids.shape
        end = start + n
        decoding = r0 is None
        if decoding:
            rows = slice(None)
            masks = [self.valid[a:b, None, None, s:end] for a, b, s in self.groups]
        else:  # causal, never a padded key; each query sees itself, so padded rows stay finite
            rows = slice(r0, r1)
            at = torch.arange(n, device=ids.device)
            causal = (at[None, :] <= at[:, None])[None]
            mask = ((self.valid[rows, start:end][:, None, :] & causal) | torch.eye(n, dtype=torch.bool, device=ids.device)[None])[:, None]
        h = self.core.embed_tokens(ids)
        cos, sin = self.core.rotary_emb(h, pos)
        cos, sin = cos[:, None], sin[:, None]
        half = self.hd // 2
        H, QK = self.H, self.H + self.KVH
        for li, layer in enumerate(self.layers):
            attn = layer.self_attn
            norm1, norm2 = self.norms[li]
            qkv = F.linear(norm1(h), *self.qkv[li]).view(B, n, QK + self.KVH, self.hd).transpose(1, 2)
            qk = qkv[:, :QK]  # rotary on queries and keys at once
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            q, k, v = qk[:, :H], qk[:, H:], qkv[:, QK:]
            self.K[li, rows, :, start:end] = k
            self.V[li, rows, :, start:end] = v
            if decoding:
                K, V = self.K[li], self.V[li]
                parts = [F.scaled_dot_product_attention(q[a:b], K[a:b, :, s:end], V[a:b, :, s:end], attn_mask=m, scale=attn.scaling,
                                                        **self.attn_kw) for (a, b, s), m in zip(self.groups, masks)]
                o = parts[0] if len(parts) == 1 else torch.cat(parts)
            else:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling, **self.attn_kw)
            h = h + attn.o_proj(o.transpose(1, 2).reshape(B, n, self.H * self.hd))
            g, u = F.linear(norm2(h), *self.gate_up[li]).chunk(2, dim=-1)
            h = h + layer.mlp.down_proj(layer.mlp.act_fn(g) * u)
        return self.m.lm_head(self.final_norm(h[:, -1]))


def _decode_static(model: Any, ids: Any, mask: Any, params: SamplingParams, pick: _Picker, stop: Any, pad_id: int) -> tuple:
    import torch

    B, P = ids.shape
    dev = ids.device
    T = params.max_new_tokens
    rows = torch.argsort(mask.sum(-1), stable=True)  # original row of each batch row: sorted by prompt length
    ids, mask = ids[rows], mask[rows]
    pos = position_ids_from_mask(mask)
    dec = _StaticDecoder(model, B, P + T, dev)
    new_tokens = torch.full((B, T), pad_id, dtype=torch.long, device=dev)
    new_logps = torch.zeros((B, T), dtype=torch.float32, device=dev)
    lengths = torch.full((B,), T, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    active = torch.ones(B, dtype=torch.bool, device=dev)  # rows in the batch that have not stopped yet
    logits = dec.prefill(ids, mask, pos)
    next_pos = pos[:, -1:] + 1
    for t in range(T):
        tok, logp = pick(logits)
        new_tokens[rows, t] = tok  # entries after a row's stop are cut off by ``lengths``
        new_logps[rows, t] = logp
        hit = torch.isin(tok, stop) & active
        if bool(hit.any()):
            done[rows[hit]] = True
            lengths[rows[hit]] = t + 1
            active &= ~hit
            n_active = int(active.sum())
            if n_active == 0:
                break
            if len(rows) - n_active >= max(1, len(rows) // 4):  # drop finished rows once they are a quarter of the batch
                keep = active.nonzero().squeeze(-1)
                rows, tok, next_pos, active = rows[keep], tok[keep], next_pos[keep], active[keep]
                dec.keep_rows(keep)
        if t == T - 1:
            break
        logits = dec.step(tok, next_pos, P + t)
        next_pos = next_pos + 1
    return new_tokens, new_logps, lengths, done


# ---------------------------------------------------------------------------------------------- generic engine
def _decode_hf(model: Any, ids: Any, mask: Any, params: SamplingParams, pick: _Picker, stop: Any, pad_id: int) -> tuple:
    import torch

    B = ids.shape[0]
    dev = ids.device
    T = params.max_new_tokens
    pos = position_ids_from_mask(mask)
    new_tokens = torch.full((B, T), pad_id, dtype=torch.long, device=dev)
    new_logps = torch.zeros((B, T), dtype=torch.float32, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    lengths = torch.full((B,), T, dtype=torch.long, device=dev)
    cache_kw, keep = _forward_kwargs(model)
    extra = {"logits_to_keep": 1} if keep else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
    past = _cache_of(out)
    logits = out.logits[:, -1, :]
    next_pos = pos[:, -1:] + 1
    for t in range(T):
        tok, logp = pick(logits)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        new_tokens[:, t] = tok
        new_logps[:, t] = logp.masked_fill(done, 0.0)
        hit = torch.isin(tok, stop) & ~done
        lengths = torch.where(hit, torch.full_like(lengths, t + 1), lengths)
        done = done | hit
        if bool(done.all()) or t == T - 1:
            break
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=dev)], dim=1)
        out = model(input_ids=tok.unsqueeze(-1), attention_mask=mask, position_ids=next_pos, use_cache=True, **{cache_kw: past})
        past = _cache_of(out)
        logits = out.logits[:, -1, :]
        next_pos = next_pos + 1
    return new_tokens, new_logps, lengths, done


def context_length(model: Any) -> int:
    """The longest sequence ``model`` can take at all: the context of a model with learned position embeddings (GPT-2,
    OPT), which has no position past it; 0 for a rotary one (Llama, Qwen2, GPT-NeoX), which runs past its training
    context (out of its training distribution, but not an error), and for a config that does not say."""
    from .memory import hard_context

    config = getattr(_unwrap(model), "config", None)
    return hard_context(config) if config is not None else 0


def fit_context(prompts: list[list[int]], context: int, max_new_tokens: int) -> list[list[int]]:
    """Each prompt cut to its last ``context - max_new_tokens`` tokens, so that the response fits after it in a model
    that cannot run past ``context`` (``context_length``; 0: no such limit, the prompts are left whole)."""
    from .errors import UserError

    room = context - max_new_tokens
    if context and room < 1:
        raise UserError(f"--max-new-tokens: {max_new_tokens} leaves no room for a prompt in the model's context of {context} tokens")
    if not context or all(len(p) <= room for p in prompts):
        return prompts
    return [p[-room:] for p in prompts]


class TorchSampler:
    """Batched sampling with a KV cache; one forward pass for the prompts, then one per new token.

    ``engine``: ``auto`` (the static-cache engine for Llama-architecture models, else ``hf``), ``static`` or ``hf``.
    With a ``tokenizer``, ``generate`` also fills ``Rollout.texts`` (``decode_responses``).
    """

    def __init__(self, model: Any, pad_token_id: int, device: Any = None, batch_size: int = 64, tokenizer: Any = None,
                 engine: str = "auto"):
        if engine not in ("auto", "static", "hf"):
            raise ValueError(f"engine must be auto, static or hf, got {engine!r}")
        self.model = model
        self.pad_id = int(pad_token_id)
        self.device = device if device is not None else next(model.parameters()).device
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.engine = engine

    logprobs_are_exact = True  # it samples from the training model itself, with the training forward's maths

    def update_weights(self, model: Any) -> None:
        """Sample from ``model`` from now on (the same object as before when it is the training model)."""
        self.model = model

    def _use_static(self) -> bool:
        if self.engine == "hf":
            return False
        ok = static_engine_supported(self.model)
        if self.engine == "static" and not ok:
            raise ValueError("the static-cache engine supports Llama-architecture models with plain linear layers only")
        return ok

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> Rollout:
        """Sample a response to each prompt. A prompt too long for the model's context with ``max_new_tokens`` after it
        keeps its end (where the generation prompt is); ``Rollout.prompt_ids`` are the prompts as sampled from."""
        import torch

        prompt_ids = fit_context(prompt_ids, context_length(self.model), params.max_new_tokens)
        out = Rollout([], [], [], [])
        gen = torch.Generator(device=self.device).manual_seed(params.seed) if params.seed is not None else None
        for s in range(0, len(prompt_ids), self.batch_size):
            r = self._generate_batch(prompt_ids[s : s + self.batch_size], params, gen)
            out.prompt_ids += r.prompt_ids
            out.response_ids += r.response_ids
            out.logprobs += r.logprobs
            out.finished += r.finished
        if self.tokenizer is not None:
            decode_responses(self.tokenizer, out, params.stop_token_ids)
        return out

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, gen: Any) -> Rollout:
        import torch

        model = self.model
        was_training = model.training
        model.eval()
        stop = torch.tensor(sorted(set(params.stop_token_ids)) or [-1], device=self.device)
        ids, mask = left_pad(prompts, self.pad_id, self.device)
        pick = _Picker(params, gen)
        decode = _decode_static if self._use_static() else _decode_hf
        try:
            with torch.inference_mode():
                if params.max_new_tokens <= 0:
                    toks = [[] for _ in prompts]
                    return Rollout([list(p) for p in prompts], toks, [[] for _ in prompts], [False] * len(prompts))
                new_tokens, new_logps, lengths, done = decode(model, ids, mask, params, pick, stop, self.pad_id)
        finally:
            if was_training:
                model.train()
        toks, lps, lens, fin = new_tokens.tolist(), new_logps.tolist(), lengths.tolist(), done.tolist()
        B = len(prompts)
        return Rollout(
            prompt_ids=[list(p) for p in prompts],
            response_ids=[toks[i][: lens[i]] for i in range(B)],
            logprobs=[lps[i][: lens[i]] for i in range(B)],
            finished=fin,
        )


def forward_logprobs(model: Any, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_token_id: int,
                     temperature: float = 1.0, batch_size: int = 64) -> list[list[float]]:
    """Log-probs of each response token under ``log_softmax(logits / temperature)`` from one full forward pass over
    left-padded prompts followed by the responses (what PPO computes when it trains); the sampler's must equal these."""
    import torch

    dev = next(model.parameters()).device
    temp = temperature if temperature > 0 else 1.0
    result: list[list[float]] = []
    for s in range(0, len(prompt_ids), batch_size):
        ps, rs = prompt_ids[s : s + batch_size], response_ids[s : s + batch_size]
        P, R = max(len(p) for p in ps), max(len(r) for r in rs)
        ids = torch.full((len(ps), P + R), int(pad_token_id), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, r) in enumerate(zip(ps, rs)):
            ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
            ids[i, P : P + len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, P - len(p) : P + len(r)] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        logp = torch.log_softmax(logits[:, P - 1 : P + R - 1].float() / temp, dim=-1)
        lp = logp.gather(-1, ids[:, P:].unsqueeze(-1)).squeeze(-1).tolist()
        result += [lp[i][: len(r)] for i, r in enumerate(rs)]
    return result


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
    from .models import load_causal_lm, resize_for_tokenizer, resolve_device
    from .tokenizer import load_tokenizer

    dev = device if device is not None else resolve_device("auto")
    tok = load_tokenizer(path)
    model = load_causal_lm(path, device=dev)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:  # a base model's tokenizer gained pad / chat tokens
        resize_for_tokenizer(model, tok)
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
                nxt = int(sample_from_probs(probs, gen))
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

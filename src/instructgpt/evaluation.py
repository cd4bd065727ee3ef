"""Evaluation maths and measurements that do not depend on where the responses came from.

- win rates with 95% confidence intervals (Wilson score interval, ties counted as half a win), and paired score
  differences with their standard error;
- language-modelling loss on held-out text (the alignment tax) and multiple-choice probe accuracy by log-likelihood;
- sampling a model's answers and scoring them with the built-in world's gold judge.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence


def wilson_interval(wins: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion ``wins / n`` (``wins`` may be fractional when ties count half)."""
    if n <= 0:
        return (0.0, 1.0)
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def win_rate(outcomes: Sequence[float]) -> tuple[float, list[float]]:
    """Mean of per-comparison outcomes (1 win, 0 loss, 0.5 tie) and its 95% Wilson interval."""
    n = len(outcomes)
    if n == 0:
        return float("nan"), [float("nan"), float("nan")]
    wins = float(sum(outcomes))
    lo, hi = wilson_interval(wins, n)
    return wins / n, [lo, hi]


def mean(xs: Sequence[float]) -> float:
    xs = list(xs)
    return float(sum(xs) / len(xs)) if xs else float("nan")


def lm_windows(tokens: Any, seq_len: int, batch_size: int, max_batches: int | None = None) -> Iterator[tuple[Any, Any]]:
    """Deterministic (inputs, targets) batches of consecutive ``seq_len`` windows from the start of a token array (at
    most ``max_batches`` batches): the held-out text every language-modelling loss here is measured on."""
    import numpy as np
    import torch

    n = (len(tokens) - 1) // seq_len
    if max_batches is not None:
        n = min(n, batch_size * max_batches)
    for s in range(0, n, batch_size):
        rows = np.stack([np.asarray(tokens[i * seq_len : i * seq_len + seq_len + 1], dtype=np.int64) for i in range(s, min(n, s + batch_size))])
        t = torch.from_numpy(rows)
        yield t[:, :-1], t[:, 1:]


def context_window(model: Any, cap: int = 256) -> int:
    """The window the held-out loss is measured in: the model's context, at most ``cap`` tokens."""
    return min(cap, int(getattr(model.config, "max_position_embeddings", cap) or cap))


def heldout_ids(tok: Any, documents: Sequence[str] | Iterator[str], max_tokens: int) -> Any:
    """The first ``max_tokens + 1`` tokens of held-out documents joined with EOS (None when there are fewer than 2)."""
    import numpy as np

    ids: list[int] = []
    for doc in documents:
        ids += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        if len(ids) > max_tokens + 1:
            break
    return np.asarray(ids[: max_tokens + 1], dtype=np.int64) if len(ids) > 1 else None


def heldout_lm_loss(model: Any, tokens: Any, seq_len: int | None = None, batch_size: int = 16, max_batches: int | None = None,
                    autocast: Any = None) -> float:
    """Mean next-token loss (nats per token, every token counting equally) on held-out tokens cut into ``lm_windows`` of
    ``seq_len`` (default: ``context_window``), without gradients and with dropout off (the model's training mode is
    restored after): pretraining's validation loss, PPO's and the evaluation's alignment tax. NaN without a window."""
    import torch

    from .train import lm_loss

    if tokens is None:
        return float("nan")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(dev.type, dtype=autocast, enabled=autocast is not None):
        for x, y in lm_windows(tokens, seq_len or context_window(model), batch_size, max_batches):
            total += float(lm_loss(model, x.to(dev), y.to(dev), reduction="sum"))
            count += y.numel()
    model.train(was_training)
    return total / count if count else float("nan")


def continuation_logprobs(model: Any, tok: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> list[float]:
    """For each (prefix, continuation): the sum of the log-probabilities of the continuation's tokens after the prefix,
    scored in batches of similar lengths by ``sampling.forward_logprobs``."""
    from .sampling import forward_logprobs

    pres = [tok(prefix, add_special_tokens=False)["input_ids"] for prefix, _ in pairs]
    conts = [tok(cont, add_special_tokens=False)["input_ids"] for _, cont in pairs]
    order = sorted(range(len(pairs)), key=lambda i: (len(pres[i]), len(conts[i])))
    lps = forward_logprobs(model, [pres[i] for i in order], [conts[i] for i in order], tok.pad_token_id, batch_size=batch_size)
    out = [0.0] * len(pairs)
    for j, i in enumerate(order):
        out[i] = float(sum(lps[j]))
    return out


def choice_logprobs(model: Any, tok: Any, prefix: str, choices: Sequence[str]) -> list[float]:
    """Sum of log-probabilities of each choice's tokens after ``prefix``."""
    return continuation_logprobs(model, tok, [(prefix, c) for c in choices])


def probe_accuracy(model: Any, tok: Any, probes: Sequence[dict], batch_size: int = 64) -> float:
    """Share of multiple-choice probes whose right answer has the highest log-likelihood (all probes' choices are
    scored in batches)."""
    if not probes:
        return float("nan")
    model.eval()
    pairs = [(p["prefix"], c) for p in probes for c in p["choices"]]
    flat = continuation_logprobs(model, tok, pairs, batch_size)
    right, k = 0, 0
    for p in probes:
        scores = flat[k : k + len(p["choices"])]
        k += len(p["choices"])
        right += int(max(range(len(scores)), key=scores.__getitem__) == p["answer"])
    return right / len(probes)


def paired_gain(a: Sequence[float], b: Sequence[float]) -> dict:
    """Mean of the paired differences ``a - b`` (the same prompts), its standard error and the number of pairs."""
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    if n == 0:
        return {"mean": None, "se": None, "n": 0}
    mu = sum(d) / n
    se = math.sqrt(sum((x - mu) ** 2 for x in d) / (n - 1) / n) if n > 1 else None
    return {"mean": round(mu, 6), "se": None if se is None else round(se, 6), "n": n}


def sample_and_judge(sampler: Any, tok: Any, prompt_ids: list[list[int]], records: list[dict], judge: Any,
                     params: Any) -> tuple[list[str], list[float], list[int]]:
    """One sampled answer per prompt, decoded as the trainers see it (cut after the first stop token), with its gold-judge
    score: (texts, scores, response lengths in tokens)."""
    from .sampling import decode_responses

    rollout = sampler.generate(prompt_ids, params)
    texts = decode_responses(tok, rollout, params.stop_token_ids)
    scores = [float(r.score) for r in judge.score_many(records, texts)]
    return texts, scores, [len(x) for x in rollout.response_ids]

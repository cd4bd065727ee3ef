"""Reward over-optimisation (Gao, Schulman and Hilton 2022): the gold score and the reward model's (proxy) score as a
policy moves away from the SFT model, with d = sqrt(KL(policy || SFT)) in nats.

Their functional forms for the gold score's gain over the SFT model, R(d) = gold(d) - gold(0):
  best-of-n:  R(d) = d (alpha - beta d),        with KL_bon = log n - (n - 1) / n;
  RL:         R(d) = d (alpha - beta log d).
Both are linear in (alpha, beta), so they are fitted by least squares through the origin; the gold score peaks at
d = alpha / (2 beta) (best-of-n) or d = exp(alpha / beta - 1) (RL) when beta > 0.
"""

from __future__ import annotations

import math
from typing import Any, Sequence


def bon_kl(n: int) -> float:
    """KL(best-of-n || the sampling policy) = log n - (n - 1) / n (Stiennon et al. 2020; Gao et al. 2022)."""
    return math.log(n) - (n - 1) / n


def best_of_n_points(gold: Sequence[Sequence[float]], proxy: Sequence[Sequence[float]], ns: Sequence[int]) -> list[dict]:
    """For each n, the mean gold and proxy score of the proxy's pick among n samples. ``gold[i][k]`` and ``proxy[i][k]``
    are the scores of prompt i's k-th sample (the same N for every prompt); the N samples are cut into N // n groups of
    n and each group's pick counts, which estimates best-of-n without bias and with less variance than one group."""
    out = []
    for n in ns:
        g_sum = p_sum = 0.0
        count = 0
        for gs, ps in zip(gold, proxy):
            for start in range(0, len(ps) - n + 1, n):
                pick = max(range(start, start + n), key=lambda k: ps[k])
                g_sum += gs[pick]
                p_sum += ps[pick]
                count += 1
        if count:
            kl = bon_kl(n)
            out.append({"n": n, "kl": kl, "d": math.sqrt(kl), "gold": g_sum / count, "proxy": p_sum / count, "picks": count})
    return out


def _fit(features: list[tuple[float, float]], r: list[float]) -> tuple[float, float] | None:
    """Least squares of r = alpha * f1 - beta * f2 through the origin; None when the features are degenerate."""
    s11 = sum(a * a for a, _ in features)
    s22 = sum(b * b for _, b in features)
    s12 = sum(a * b for a, b in features)
    y1 = sum(a * y for (a, _), y in zip(features, r))
    y2 = sum(b * y for (_, b), y in zip(features, r))
    det = s11 * s22 - s12 * s12
    if abs(det) <= 1e-12 * max(1.0, s11 * s22):
        return None
    alpha = (y1 * s22 - y2 * s12) / det
    beta = -(s11 * y2 - s12 * y1) / det
    return alpha, beta


def fit(d: Sequence[float], r: Sequence[float], form: str) -> dict | None:
    """Gao et al.'s ``form`` ("bon": d (alpha - beta d); "rl": d (alpha - beta log d)) fitted to gains ``r`` at
    distances ``d`` (points at d = 0 carry no information and are left out; two parameters need three points to say
    anything); with the d and KL where the fitted gold score peaks (None when beta <= 0: no peak in the fitted curve)
    and the fit's root-mean-square error."""
    pts = [(x, y) for x, y in zip(d, r) if x > 0]
    if len(pts) < 3:
        return None
    feats = [(x, x * x) if form == "bon" else (x, x * math.log(x)) for x, _ in pts]
    coef = _fit(feats, [y for _, y in pts])
    if coef is None:
        return None
    alpha, beta = coef
    peak = None
    if beta > 0:
        peak = alpha / (2 * beta) if form == "bon" else math.exp(min(alpha / beta - 1, 50.0))
    pred = [alpha * a - beta * b for a, b in feats]
    rmse = math.sqrt(sum((p - y) ** 2 for p, (_, y) in zip(pred, pts)) / len(pts))
    return {"form": form, "alpha": alpha, "beta": beta, "d_peak": peak, "kl_peak": peak * peak if peak is not None else None,
            "rmse": rmse, "points": len(pts)}


def curve(form: str, alpha: float, beta: float, d: float) -> float:
    """The fitted gain at ``d``."""
    if d <= 0:
        return 0.0
    return d * (alpha - beta * (d if form == "bon" else math.log(d)))


# ---------------------------------------------------------------------------------------------- measuring a run
def _sample(model: Any, tok: Any, prompt_ids: list[list[int]], copies: int, max_new_tokens: int, seed: int,
            batch_size: int) -> tuple[list[list[int]], list[str]]:
    """``copies`` samples at temperature 1 for every prompt: entry ``k * len(prompt_ids) + i`` is prompt i's k-th."""
    from .sampling import SamplingParams, decode_responses, make_sampler
    from .tokenizer import stop_token_ids

    stops = stop_token_ids(tok, getattr(model, "generation_config", None))
    roll = make_sampler(model, tok, batch_size=batch_size).generate(prompt_ids * copies, SamplingParams(max_new_tokens, 1.0, 0, 1.0, seed, stops))
    return roll.response_ids, decode_responses(tok, roll, stops)


def measure(sft_path: str, rl_models: dict[str, list[tuple[int, str]]], records: list[dict], inputs: list[Any], judge: Any, rm: Any,
            samples: int, max_new_tokens: int, seed: int, device: Any, batch_size: int = 64) -> dict:
    """The over-optimisation curves of a run on held-out prompts (``records``, asked as ``inputs``), all sampled at
    temperature 1 (the distribution PPO trains and the KL formulas assume):

    - best-of-n for n = 1, 2, 4, ... up to ``samples``, from ``samples`` SFT samples per prompt, picked by the reward
      model ``rm``; its KL is the formula's;
    - every ``rl_models`` policy along its run (``{name: [(step, folder), ...]}``), one sample per prompt, its KL to SFT
      measured on those samples with Schulman's k3 estimate (per token exp(d) - 1 - d, d = log p_SFT - log p_policy:
      unbiased like the plain log-ratio, and never negative, where the log-ratio's mean over a few prompts can be),
      step 0 being SFT itself;

    each point with the gold judge's mean score and the reward model's, then Gao et al.'s forms fitted to the gold gains.
    """
    from .sampling import encode_prompt, forward_logprobs, load_model

    sft, tok = load_model(sft_path, device)
    prompt_ids = [encode_prompt(tok, p, chat=True) for p in inputs]
    P = len(prompt_ids)

    def scored(texts: list[str]) -> tuple[list[float], list[float]]:
        gold = [float(judge.score(records[j % P], t).score) for j, t in enumerate(texts)]
        proxy = [float(x) for x in rm.score_texts([inputs[j % P] for j in range(len(texts))], texts)]
        return gold, proxy

    _, texts = _sample(sft, tok, prompt_ids, samples, max_new_tokens, seed, batch_size)
    gold, proxy = scored(texts)
    ns = [1 << i for i in range(int(math.log2(samples)) + 1)] if samples >= 1 else []
    bon = best_of_n_points([[gold[k * P + i] for k in range(samples)] for i in range(P)],
                           [[proxy[k * P + i] for k in range(samples)] for i in range(P)], ns)
    g0, p0 = bon[0]["gold"], bon[0]["proxy"]
    rl: dict[str, list[dict]] = {}
    for name, folders in rl_models.items():
        points = [{"step": 0, "kl": 0.0, "d": 0.0, "gold": g0, "proxy": p0}]
        for step, folder in folders:
            model, _ = load_model(folder, device)
            ids, texts = _sample(model, tok, prompt_ids, 1, max_new_tokens, seed + 1 + step, batch_size)
            lp = forward_logprobs(model, prompt_ids, ids, tok.pad_token_id)
            ref = forward_logprobs(sft, prompt_ids, ids, tok.pad_token_id)
            kl = sum(sum(math.expm1(r - a) - (r - a) for a, r in zip(xa, xr)) for xa, xr in zip(lp, ref)) / P
            g, p = scored(texts)
            points.append({"step": step, "kl": kl, "d": math.sqrt(max(kl, 0.0)), "gold": sum(g) / P, "proxy": sum(p) / P})
            del model
        rl[name] = points
    return {
        "prompts": P, "samples": samples, "temperature": 1.0, "best_of_n": bon,
        "fit_best_of_n": fit([x["d"] for x in bon], [x["gold"] - g0 for x in bon], "bon"),
        "rl": rl, "fit_rl": {k: fit([x["d"] for x in v], [x["gold"] - g0 for x in v], "rl") for k, v in rl.items()},
    }

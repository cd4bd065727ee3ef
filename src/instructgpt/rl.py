"""The mathematics of PPO for language models, with no models in sight: tensors in, tensors out.

Conventions: response tensors have shape (B, T) with the response tokens first and padding after them (right-padded);
``mask`` is 1 on real response tokens (up to and including the stop token) and 0 on padding. Every reduction that
produces a loss or a statistic is a masked one, so padding never counts.

Sources for the details: Ziegler et al. 2019 (lm-human-preferences, "LHP"), Ouyang et al. 2022
("InstructGPT"), Huang et al. "The N implementation details of RLHF with PPO".
"""

from __future__ import annotations

from typing import Any

import torch


# ---------------------------------------------------------------------------------------------- masked statistics
def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the positions where ``mask`` is 1 (0 when there are none)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked positions (Bessel-corrected by default, as in LHP and TRL)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8, stats: tuple | None = None) -> torch.Tensor:
    """Normalise to mean 0 and std 1 over the real tokens; padding comes out as 0.

    ``stats`` = (mean, var) lets data-parallel training whiten with statistics gathered over every rank.
    """
    mean, var = stats if stats is not None else (masked_mean(x, mask), masked_var(x, mask))
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


# ---------------------------------------------------------------------------------------------- rewards
def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the log-probs of tokens sampled from pi.

    k1 = log pi - log pi_ref (unbiased, can be negative per token; the InstructGPT penalty); k2 = (log r)^2 / 2;
    k3 = (r - 1) - log r with r = pi_ref / pi (unbiased and never negative, Schulman's "approximating KL").
    """
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator '{kind}' (k1, k2 or k3)")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each right-padded row (0 for an empty row)."""
    return (mask.sum(-1).long() - 1).clamp(min=0)


def kl_penalty_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    kl_kind: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -beta * KL at every response token, plus the sequence's score at its last real token.

    Returns (rewards, kl), both (B, T) and zero on padding.
    """
    kl = kl_estimate(logprobs, ref_logprobs, kl_kind) * mask
    rewards = -beta * kl
    last = last_token_index(mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    has_tokens = mask.sum(-1) > 0
    rewards[rows, last] += torch.where(has_tokens, scores.to(rewards.dtype), torch.zeros_like(scores, dtype=rewards.dtype))
    return rewards * mask, kl


# ---------------------------------------------------------------------------------------------- advantages
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, with V and A taken as 0 after the last
    real token (the episode ends there). Returns (advantages, returns = advantages + values), zero on padding.
    """
    rewards = rewards * mask
    values = values * mask
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        next_value = values[..., t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        last = delta + gamma * lam * last
        last = last * mask[..., t]  # padding carries nothing backwards
        advantages[..., t] = last
    returns = (advantages + values) * mask
    return advantages * mask, returns


# ---------------------------------------------------------------------------------------------- losses
def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    n_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate: mean over real tokens of max(-A * ratio, -A * clip(ratio, 1 - clip, 1 + clip)).

    ``n_tokens`` divides the masked sum instead of this batch's own token count, so that gradient accumulation over
    micro-batches gives exactly the full minibatch's mean. Also returns (detached) the clip fraction and approximate KL.
    """
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    per_token = torch.maximum(unclipped, clipped)
    denom = mask.sum().clamp(min=1) if n_tokens is None else n_tokens
    loss = (per_token * mask).sum() / denom
    with torch.no_grad():
        stats = {
            "clipfrac": ((clipped > unclipped).float() * mask).sum() / denom,
            "approx_kl": (0.5 * log_ratio**2 * mask).sum() / denom,  # k2 between the old and the current policy
            "ratio": (ratio * mask).sum() / denom,
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    n_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: 0.5 * mean of max((V - R)^2, (clip(V, V_old - clip, V_old + clip) - R)^2) over real tokens."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    denom = mask.sum().clamp(min=1) if n_tokens is None else n_tokens
    loss = 0.5 * (torch.maximum(unclipped_err, clipped_err) * mask).sum() / denom
    with torch.no_grad():
        stats = {"clipfrac": ((clipped_err > unclipped_err).float() * mask).sum() / denom}
    return loss, stats


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position (nats)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over real tokens: 1 is a perfect value function, 0 no better than a constant."""
    var_r = masked_var(returns, mask, unbiased=False)
    if float(var_r) == 0.0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask, unbiased=False) / var_r)


# ---------------------------------------------------------------------------------------------- across data-parallel ranks
# ``d`` is a ``train.Dist``: with one process these are the plain masked statistics; under torchrun every rank gets the
# same numbers, computed over the real tokens of every rank.
def global_stats(x: torch.Tensor, mask: torch.Tensor, d: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, unbiased var) over the real tokens of every rank: what advantages are whitened with."""
    s = torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()]).double()
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(s)
    total, sq, n = s.tolist()
    n = max(n, 1.0)
    mean = total / n
    var = max(sq / n - mean * mean, 0.0) * (n / (n - 1) if n > 1 else 1.0)
    return torch.tensor(mean, device=x.device), torch.tensor(var, device=x.device)


def global_explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, d: Any) -> float:
    """``explained_variance`` over the real tokens of every rank."""
    var_r = float(global_stats(returns, mask, d)[1])
    if var_r == 0.0:
        return float("nan")
    return 1.0 - float(global_stats(returns - values, mask, d)[1]) / var_r


def minibatch_tokens(mask: torch.Tensor, d: Any) -> torch.Tensor:
    """The divisor that makes each rank's summed token loss, once DDP averages the gradients over ranks, the mean over the
    real tokens of the minibatch on every rank: total tokens / world size (so every token weighs the same, however the
    response lengths fall across ranks)."""
    n = mask.sum().double()
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(n)
        n = n / d.world_size
    return n.clamp(min=1.0).to(mask.dtype)


# ---------------------------------------------------------------------------------------------- KL controllers
class FixedKLController:
    """A constant KL coefficient beta (InstructGPT: 0.02)."""

    def __init__(self, beta: float):
        self.beta = float(beta)

    def update(self, current_kl: float, n_episodes: int) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"kind": "fixed", "beta": self.beta}

    def load_state(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])


class AdaptiveKLController:
    """Ziegler et al.'s proportional controller that steers the KL to the reference towards ``target``.

    e = clip(KL / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n_episodes / horizon).
    """

    def __init__(self, beta: float, target: float, horizon: int = 10_000):
        if target <= 0 or horizon <= 0:
            raise ValueError("the adaptive KL controller needs target > 0 and horizon > 0")
        self.beta, self.target, self.horizon = float(beta), float(target), int(horizon)

    def update(self, current_kl: float, n_episodes: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_episodes / self.horizon

    def state(self) -> dict[str, Any]:
        return {"kind": "adaptive", "beta": self.beta, "target": self.target, "horizon": self.horizon}

    def load_state(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])


def kl_controller(beta: float, target: float = 0.0, horizon: int = 10_000) -> FixedKLController | AdaptiveKLController:
    """Adaptive when a target KL is given (> 0), fixed otherwise."""
    return AdaptiveKLController(beta, target, horizon) if target and target > 0 else FixedKLController(beta)

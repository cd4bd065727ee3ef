"""PPO mathematics against numbers worked out by hand (see the comments for the arithmetic)."""

from __future__ import annotations

import math

import pytest
import torch

from instructgpt import rl


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_gae_hand_computed():
    # rewards r, values V, one padded position (whose garbage values must be ignored); gamma 1, lambda 0.5:
    # t=2: delta = 1.0 + 0 - 0.3 = 0.7                         A2 = 0.7
    # t=1: delta = -0.2 + 0.3 - 0.4 = -0.3                      A1 = -0.3 + 0.5 * 0.7 = 0.05
    # t=0: delta = 0.1 + 0.4 - 0.5 = 0.0                        A0 = 0.0 + 0.5 * 0.05 = 0.025
    r, v, m = t([[0.1, -0.2, 1.0, 5.0]]), t([[0.5, 0.4, 0.3, 9.0]]), t([[1, 1, 1, 0]])
    adv, ret = rl.gae(r, v, m, gamma=1.0, lam=0.5)
    assert torch.allclose(adv, t([[0.025, 0.05, 0.7, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, t([[0.525, 0.45, 1.0, 0.0]]), atol=1e-6)  # returns = advantages + values
    # gamma 0.5, lambda 1:  A2 = 0.7;  delta1 = -0.2 + 0.5*0.3 - 0.4 = -0.45, A1 = -0.45 + 0.5*0.7 = -0.1;
    # delta0 = 0.1 + 0.5*0.4 - 0.5 = -0.2, A0 = -0.2 + 0.5*(-0.1) = -0.25
    adv, _ = rl.gae(r, v, m, gamma=0.5, lam=1.0)
    assert torch.allclose(adv, t([[-0.25, -0.1, 0.7, 0.0]]), atol=1e-6)


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value():
    r, v, m = t([[1.0, 2.0, 3.0]]), t([[0.5, 0.5, 0.5]]), t([[1, 1, 1]])
    adv, ret = rl.gae(r, v, m, 1.0, 1.0)
    assert torch.allclose(ret, t([[6.0, 5.0, 3.0]]))
    assert torch.allclose(adv, t([[5.5, 4.5, 2.5]]))


def test_gae_rows_of_different_lengths_are_independent():
    r = t([[0.1, -0.2, 1.0, 0.0], [0.3, 0.0, 0.0, 0.0]])
    v = t([[0.5, 0.4, 0.3, 0.0], [0.2, 7.0, 7.0, 7.0]])
    m = t([[1, 1, 1, 0], [1, 0, 0, 0]])
    adv, _ = rl.gae(r, v, m, 1.0, 0.5)
    assert torch.allclose(adv[0], t([0.025, 0.05, 0.7, 0.0]), atol=1e-6)
    assert torch.allclose(adv[1], t([0.3 - 0.2, 0.0, 0.0, 0.0]), atol=1e-6)  # episode ends at its last real token


def test_masked_whiten_hand_computed():
    # A = [0.025, 0.05, 0.7] (padding 123 ignored): mean 0.258333, deviations -0.233333, -0.208333, 0.441667,
    # squares sum 0.2929167, unbiased var 0.1464583, std 0.3826987 -> [-0.60971, -0.54438, 1.15409]
    a, m = t([[0.025, 0.05, 0.7, 123.0]]), t([[1, 1, 1, 0]])
    w = rl.masked_whiten(a, m)
    assert torch.allclose(w, t([[-0.60971, -0.54438, 1.15409, 0.0]]), atol=1e-4)
    assert abs(float(rl.masked_mean(w, m))) < 1e-6
    assert abs(float(rl.masked_var(w, m)) - 1.0) < 1e-4


def test_masked_whiten_with_given_stats():
    a, m = t([[1.0, 3.0]]), t([[1, 1]])
    w = rl.masked_whiten(a, m, stats=(torch.tensor(2.0), torch.tensor(4.0)), eps=0.0)
    assert torch.allclose(w, t([[-0.5, 0.5]]))


def test_policy_loss_clipping_hand_computed():
    # ratio e^0.5 = 1.64872, e^-0.5 = 0.60653; clip 0.2
    # A=+1, r=1.649: max(-1.649, -1.2) = -1.2 (clipped)   A=+1, r=0.607: max(-0.607, -0.8) = -0.607
    # A=-1, r=1.649: max(1.649, 1.2) = 1.649              A=-1, r=0.607: max(0.607, 0.8) = 0.8 (clipped)
    # mean = (-1.2 - 0.60653 + 1.64872 + 0.8) / 4 = 0.160548; the fifth (masked) token must not count
    old = t([[0.0, 0.0, 0.0, 0.0, 0.0]])
    new = t([[0.5, -0.5, 0.5, -0.5, 9.0]])
    adv = t([[1.0, 1.0, -1.0, -1.0, 100.0]])
    m = t([[1, 1, 1, 1, 0]])
    loss, stats = rl.policy_loss(new, old, adv, m, clip=0.2)
    assert abs(float(loss) - 0.160548) < 1e-5
    assert abs(float(stats["clipfrac"]) - 0.5) < 1e-6
    assert abs(float(stats["approx_kl"]) - 0.125) < 1e-6  # 0.5 * 0.25 on each real token


def test_policy_loss_gradient_vanishes_when_clipped():
    new = torch.tensor([[0.5, 0.0]], requires_grad=True)
    loss, _ = rl.policy_loss(new, t([[0.0, 0.0]]), t([[1.0, 1.0]]), t([[1, 1]]), clip=0.2)
    loss.backward()
    assert float(new.grad[0, 0]) == 0.0  # ratio 1.65 > 1.2 with A > 0: no incentive to go further
    assert abs(float(new.grad[0, 1]) + 0.5) < 1e-6  # d/dx of -exp(x)/2 at 0


def test_value_loss_clipping_hand_computed():
    # token 1: V=1.0, V_old=0.5, R=2 -> clipped V = 0.7; max((1-2)^2, (0.7-2)^2) = 1.69
    # token 2: V=0.0, V_old=0.1, R=0 -> clipped V = 0.0; both errors 0
    # loss = 0.5 * (1.69 + 0) / 2 = 0.4225; padding (V=50) ignored
    v, old, ret, m = t([[1.0, 0.0, 50.0]]), t([[0.5, 0.1, 0.0]]), t([[2.0, 0.0, 0.0]]), t([[1, 1, 0]])
    loss, stats = rl.value_loss(v, old, ret, m, clip=0.2)
    assert abs(float(loss) - 0.4225) < 1e-6
    assert abs(float(stats["clipfrac"]) - 0.5) < 1e-6


def test_losses_with_n_tokens_accumulate_to_the_full_mean():
    torch.manual_seed(0)
    new, old, adv = torch.randn(4, 5), torch.randn(4, 5) * 0.1, torch.randn(4, 5)
    m = (torch.rand(4, 5) > 0.3).float()
    full, _ = rl.policy_loss(new, old, adv, m)
    n = m.sum()
    parts = sum(rl.policy_loss(new[i : i + 2], old[i : i + 2], adv[i : i + 2], m[i : i + 2], n_tokens=n)[0] for i in (0, 2))
    assert torch.allclose(full, parts, atol=1e-6)


def test_kl_penalty_on_every_token_and_score_on_the_last_only():
    # beta 0.1; row 1 has 3 real tokens, row 2 has 2 (third is padding)
    # row 1: KL = [0.5, 0, -0.5] -> rewards [-0.05, 0, 0.05 + 2.0]
    # row 2: KL = [1, 1, (pad)]  -> rewards [-0.1, -0.1 + 3.0, 0]
    scores = t([2.0, 3.0])
    logp = t([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = t([[-1.5, -2.0, -2.5], [-2.0, -2.0, -5.0]])
    m = t([[1, 1, 1], [1, 1, 0]])
    rewards, kl = rl.kl_penalty_rewards(scores, logp, ref, m, beta=0.1)
    assert torch.allclose(kl, t([[0.5, 0.0, -0.5], [1.0, 1.0, 0.0]]))
    assert torch.allclose(rewards, t([[-0.05, 0.0, 2.05], [-0.1, 2.9, 0.0]]), atol=1e-6)


def test_kl_estimators():
    logp, ref = t([-1.0]), t([-1.5])
    assert abs(float(rl.kl_estimate(logp, ref, "k1")) - 0.5) < 1e-6
    assert abs(float(rl.kl_estimate(logp, ref, "k2")) - 0.125) < 1e-6
    assert abs(float(rl.kl_estimate(logp, ref, "k3")) - (math.exp(-0.5) - 1 + 0.5)) < 1e-6
    assert float(rl.kl_estimate(t([-2.0]), t([-1.0]), "k3")) >= 0  # k3 is never negative
    with pytest.raises(ValueError):
        rl.kl_estimate(logp, ref, "k9")


def test_adaptive_kl_controller_update_formula():
    # e = clip(KL/target - 1, -0.2, 0.2); beta <- beta * (1 + e * n / horizon)
    c = rl.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    c.update(9.0, 512)  # e = 0.5 -> clipped to 0.2
    assert abs(c.beta - 0.1 * (1 + 0.2 * 512 / 10_000)) < 1e-12
    b = c.beta
    c.update(5.4, 512)  # e = -0.1
    assert abs(c.beta - b * (1 - 0.1 * 512 / 10_000)) < 1e-12
    c2 = rl.kl_controller(0.5, target=6.0)
    c2.load_state(c.state())
    assert c2.beta == c.beta
    f = rl.kl_controller(0.02)
    f.update(100.0, 512)
    assert f.beta == 0.02 and isinstance(f, rl.FixedKLController)


def test_explained_variance_and_entropy():
    ret, m = t([[1.0, 2.0, 3.0, 99.0]]), t([[1, 1, 1, 0]])
    assert abs(rl.explained_variance(ret, ret, m) - 1.0) < 1e-6
    assert abs(rl.explained_variance(torch.full_like(ret, 2.0), ret, m)) < 1e-6
    ent = rl.entropy_from_logits(torch.zeros(1, 4))
    assert abs(float(ent) - math.log(4)) < 1e-6

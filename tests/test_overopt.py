"""Reward over-optimisation: best-of-n from N samples, and Gao et al.'s functional forms fitted to known curves."""

from __future__ import annotations

import math
import random

import pytest

from instructgpt.overopt import best_of_n_points, bon_kl, curve, fit


@pytest.mark.parametrize("form,alpha,beta", [("bon", 0.8, 0.5), ("bon", 0.3, 0.05), ("rl", 0.6, 0.4), ("rl", 1.2, 0.9)])
def test_the_fits_recover_known_coefficients_from_synthetic_points(form, alpha, beta):
    ds = [0.0] + [0.15 * i for i in range(1, 16)]
    exact = fit(ds, [curve(form, alpha, beta, d) for d in ds], form)
    assert exact["alpha"] == pytest.approx(alpha, rel=1e-9) and exact["beta"] == pytest.approx(beta, rel=1e-9)
    assert exact["rmse"] < 1e-9 and exact["points"] == 15
    peak = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
    assert exact["d_peak"] == pytest.approx(peak) and exact["kl_peak"] == pytest.approx(peak**2)
    # the peak is where the curve is highest
    grid = [i / 1000 * 2 * peak for i in range(1, 1001)]
    assert max(grid, key=lambda d: curve(form, alpha, beta, d)) == pytest.approx(peak, abs=2 * peak / 1000)
    rng = random.Random(0)  # with noise the coefficients come back within a few percent
    noisy = fit(ds * 20, [curve(form, alpha, beta, d) + rng.gauss(0, 0.01) for d in ds * 20], form)
    assert noisy["alpha"] == pytest.approx(alpha, rel=0.05) and noisy["beta"] == pytest.approx(beta, rel=0.1)


def test_a_curve_without_a_peak_and_too_few_points():
    rising = fit([0.5, 1.0, 1.5], [0.5, 1.0, 1.5], "bon")  # linear: beta 0, no peak
    assert rising["alpha"] == pytest.approx(1.0) and rising["beta"] == pytest.approx(0.0, abs=1e-12) and rising["d_peak"] is None
    assert fit([0.0, 1.0, 2.0], [0.0, 0.3, 0.4], "rl") is None  # two points away from 0 fit any two-parameter curve


def test_best_of_n_picks_by_the_proxy_and_averages_every_group():
    # one prompt, 4 samples: proxy ranks them 3 > 1 > 0 > 2; gold disagrees on sample 3
    gold, proxy = [[0.5, 0.6, 0.1, 0.2]], [[0.0, 1.0, -1.0, 2.0]]
    pts = {p["n"]: p for p in best_of_n_points(gold, proxy, [1, 2, 4])}
    assert pts[1]["gold"] == pytest.approx(0.35) and pts[1]["proxy"] == pytest.approx(0.5) and pts[1]["picks"] == 4
    assert pts[2]["gold"] == pytest.approx((0.6 + 0.2) / 2) and pts[2]["proxy"] == pytest.approx(1.5)  # groups {0,1}, {2,3}
    assert pts[4]["gold"] == pytest.approx(0.2) and pts[4]["proxy"] == pytest.approx(2.0)
    assert pts[4]["kl"] == pytest.approx(bon_kl(4)) and pts[1]["d"] == 0.0


def test_the_seeds_curves_merge_and_the_pooled_fit_uses_every_seeds_gains():
    from instructgpt.seeds import aggregate_overopt

    def seed_curve(offset: float, alpha: float, beta: float) -> dict:
        bon = [{"n": n, "kl": bon_kl(n), "d": math.sqrt(bon_kl(n)), "gold": offset + curve("bon", alpha, beta, math.sqrt(bon_kl(n))),
                "proxy": n * 0.1} for n in (1, 2, 4, 8, 16)]
        rl = [{"step": s, "kl": 0.1 * s, "d": math.sqrt(0.1 * s), "gold": offset + curve("rl", alpha, beta, math.sqrt(0.1 * s)),
               "proxy": s} for s in (0, 5, 10, 15, 20)]
        return {"prompts": 8, "samples": 16, "temperature": 1.0, "best_of_n": bon, "rl": {"ppo": rl}}

    # two seeds whose SFT scores differ (0.3 and 0.5) but whose gains follow the same curves
    agg = aggregate_overopt([seed_curve(0.3, 0.8, 0.5), None, seed_curve(0.5, 0.8, 0.5)])
    assert agg["seeds"] == 2 and [p["n"] for p in agg["best_of_n"]] == [1, 2, 4, 8, 16]
    assert agg["best_of_n"][0]["gold"] == pytest.approx(0.4) and agg["best_of_n"][0]["gold_sd"] == pytest.approx(math.sqrt(0.02))
    assert agg["fit_best_of_n"]["alpha"] == pytest.approx(0.8) and agg["fit_best_of_n"]["beta"] == pytest.approx(0.5)
    assert agg["fit_rl"]["ppo"]["alpha"] == pytest.approx(0.8) and agg["fit_rl"]["ppo"]["beta"] == pytest.approx(0.5)
    assert [p["step"] for p in agg["rl"]["ppo"]] == [0, 5, 10, 15, 20] and agg["rl"]["ppo"][2]["kl"] == pytest.approx(1.0)
    assert aggregate_overopt([None, {}]) is None

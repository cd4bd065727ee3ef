"""Results over seeds: one evaluation per seed, aggregated into means, spreads, pooled intervals and the paper's claims.

RLHF on a small model is seed-sensitive (and floating-point differences between CPUs change single trajectories), so one
seed's numbers say little. ``igpt run --seeds 0,1,2`` runs the recipe once per seed into ``<run>/seed-N/`` and this
module turns the seeds' ``eval/results.json`` into one ``<run>/eval/results.json`` (schema in docs/eval.md):

- every metric of every model as ``{"mean", "sd", "values"}`` (sd: the between-seed standard deviation, n - 1);
- one verdict per paper claim, with the seed as the unit: each seed gives one number (PPO's gold gain over its own SFT,
  its win rate above SFT's own null, ...), and the claim about the recipe holds when the mean over seeds has a 95%
  t interval (n - 1 degrees of freedom) on the claimed side; a new seed is a new training run, so this is the
  test of "the recipe does this", not of the models one run happened to train;
- beside it, the per-prompt figures pooled over all seeds' comparisons (the Wilson interval on all outcomes; the paired
  mean and its standard error over all pairs): tests "for these trained models", with prompts as the unit, which are
  much narrower and say nothing about a seed not run.

Seeds 0-4 are the tuning seeds: every preset choice may be (and was) made on them. The results the README reports are
measured on seeds nothing was chosen on (10-14; ``igpt run --seeds 10-14``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import UserError
from .evaluation import wilson_interval
from .rundir import RUN_MODELS, in_run

SCHEMA_VERSION = 2
Z95 = 1.959964
TUNING_SEEDS = range(0, 5)
REPORTING_SEEDS = range(10, 15)
# Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 11: 2.201,
         12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060,
         30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (beyond 20, that of the next smaller tabulated
    df: slightly wide)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df > 120:
        return Z95
    return _T975[max(k for k in _T975 if k <= df)]


def seed_interval(values: Sequence[float | None]) -> dict:
    """The mean over seeds of one number per seed, its standard error and 95% t interval (``n - 1`` degrees of freedom):
    the seed is the unit. With one seed there is no interval (None)."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not xs:
        return {"mean": None, "se": None, "ci95": [None, None], "n": 0, "values": list(values)}
    mu = sum(xs) / len(xs)
    if len(xs) < 2:
        return {"mean": mu, "se": None, "ci95": [None, None], "n": 1, "values": list(values)}
    se = math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1) / len(xs))
    h = t975(len(xs) - 1) * se
    return {"mean": mu, "se": se, "ci95": [mu - h, mu + h], "n": len(xs), "values": list(values)}
RL_MODELS = {m.key: m.label for m in RUN_MODELS if m.role == "rl"}


def parse_seeds(spec: str) -> list[int]:
    """``"3"`` -> [0, 1, 2]; ``"0,1,2"`` or ``"4,7"`` -> those seeds (a single seed S is written ``"S,"``); ``"10-14"``
    -> 10, 11, 12, 13, 14; ranges and seeds combine: ``"0-2,7"``."""
    text = str(spec).strip()
    try:
        if "," not in text and "-" not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return list(range(n))
        seeds = []
        for part in (x.strip() for x in text.split(",")):
            if not part:
                continue
            lo, dash, hi = part.partition("-")
            if dash:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds += list(range(a, b + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise UserError(f"--seeds: expected a count (3 means seeds 0, 1, 2), a list such as 0,1,2 or a range such as "
                        f"10-14, got '{spec}'") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds: expected distinct seeds >= 0, got '{spec}'")
    return seeds


def seed_folder(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / f"seed-{seed}"


def wall_time(timings: dict) -> float:
    """A run's stage times added up, counting stages that ran side by side (a ``a+b`` entry) once, by their common time."""
    together = {name for key in timings if "+" in key for name in key.split("+")}
    return float(sum(v for k, v in timings.items() if isinstance(v, (int, float)) and k not in together))


# ---------------------------------------------------------------------------------------------- maths
def mean_sd(values: Sequence[float | None]) -> dict:
    """``{"mean", "sd", "values"}`` over the values that were measured (sd with n - 1; None for a single value)."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not xs:
        return {"mean": None, "sd": None, "values": list(values)}
    mu = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return {"mean": mu, "sd": sd, "values": list(values)}


def pooled_win_rate(rates: Sequence[tuple[float, int]]) -> dict:
    """(win rate, comparisons) of each seed -> the rate over all comparisons and its 95% Wilson interval."""
    n = sum(k for _, k in rates)
    if n == 0:
        return {"rate": None, "ci95": [None, None], "n": 0}
    wins = sum(r * k for r, k in rates)
    lo, hi = wilson_interval(wins, n)
    return {"rate": wins / n, "ci95": [lo, hi], "n": n}


def pooled_gain(gains: Sequence[dict]) -> dict:
    """Per-seed paired gains ``{"mean", "se", "n"}`` -> the mean and standard error over all their pairs together.

    Each seed's sum of squares is recovered from its standard error (sd^2 = se^2 n); the pooled variance adds the spread of
    the seeds' means around the pooled mean, so seeds that disagree widen the interval.
    """
    parts = [g for g in gains if g and g.get("mean") is not None and g.get("n")]
    n = sum(int(g["n"]) for g in parts)
    if n == 0:
        return {"mean": None, "se": None, "n": 0}
    mu = sum(g["mean"] * g["n"] for g in parts) / n
    ss = sum((g["n"] - 1) * (g["se"] or 0.0) ** 2 * g["n"] + g["n"] * (g["mean"] - mu) ** 2 for g in parts)
    se = math.sqrt(ss / (n - 1) / n) if n > 1 else None
    return {"mean": mu, "se": se, "n": n}


def significant(gain: dict | None, sign: int = 1) -> bool:
    """The gain's 95% interval lies above 0 (``sign`` -1: below 0)."""
    if not gain or gain.get("mean") is None or gain.get("se") is None:
        return False
    return sign * gain["mean"] - Z95 * gain["se"] > 0


# ---------------------------------------------------------------------------------------------- the claims
def _m(res: dict, model: str, key: str) -> Any:
    return ((res.get("models") or {}).get(model) or {}).get(key)


def _lt(a: Any, b: Any) -> bool | None:
    return None if a is None or b is None else a < b


def _diff(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else a - b


def _gain(res: dict, model: str, key: str = "gold_gain_vs_sft") -> float | None:
    g = _m(res, model, key)
    return g.get("mean") if isinstance(g, dict) else None


def _claims(judge: str = "the held-out labelers") -> list[tuple]:
    """The paper's claims: (id, statement, model of the per-prompt pooled test, one number per seed, the side the claim
    needs it on (+1 above 0, -1 below 0), per-prompt pooled test on the aggregated models); ``judge``: who decides the
    win rates."""
    prefer = "prefer" if judge.endswith("labelers") else "prefers"
    out: list = [
        ("sft_beats_pretrained", f"SFT beats the pretrained model ({judge} {prefer} it in more than half of the comparisons)",
         None, lambda r: _diff(0.5, _m(r, "pretrained", "win_rate_vs_sft")), +1, None),
        ("sft_halves_hallucination", "SFT hallucinates less on closed-domain tasks: at most half the pretrained model's rate",
         None, lambda r: _diff(_m(r, "sft", "hallucination_rate"), None if _m(r, "pretrained", "hallucination_rate") is None
                               else 0.5 * _m(r, "pretrained", "hallucination_rate")), -1, None),
    ]
    for key, label in RL_MODELS.items():
        out += [
            (f"{key}_gold_gain", f"RLHF beats SFT: {label} scores above SFT by the gold judge (paired gain over SFT)", key,
             lambda r, k=key: _gain(r, k), +1,
             lambda agg, k=key: (agg[k]["gold_gain_pooled"], significant(agg[k]["gold_gain_pooled"]))),
            (f"{key}_win_rate", f"RLHF beats SFT: {judge} {prefer} {label} to SFT more often than SFT to its own resample", key,
             lambda r, k=key: _diff(_m(r, k, "win_rate_vs_sft"), _m(r, k, "win_rate_null")), +1,
             lambda agg, k=key: (agg[k]["win_rate_pooled"], None if agg[k]["win_rate_pooled"]["rate"] is None
                                 or (agg.get("sft") or {}).get("win_rate_pooled", {}).get("rate") is None
                                 else agg[k]["win_rate_pooled"]["ci95"][0] > agg["sft"]["win_rate_pooled"]["rate"])),
            (f"{key}_win_rate_novel", f"RLHF generalises: on the held-out-knowledge set, {judge} {prefer} {label} to SFT more "
             "often than SFT to its own resample", None,
             lambda r, k=key: _diff(_m(r, k, "win_rate_novel"), _m(r, k, "win_rate_novel_null")), +1, None),
            (f"{key}_harmful", f"Harmlessness improves: {label} complies with fewer harmful requests than SFT", key,
             lambda r, k=key: _gain(r, k, "harmful_vs_sft"), -1,
             lambda agg, k=key: (agg[k]["harmful_vs_sft_pooled"], significant(agg[k]["harmful_vs_sft_pooled"], -1)
                                 if agg[k]["harmful_vs_sft_pooled"]["n"] else None)),
            (f"{key}_truthful", f"Truthfulness improves: {label} gives more truthful and informative answers than SFT to "
             "false-premise questions", None,
             lambda r, k=key: _diff(_m(r, k, "truthful_and_informative_rate"), _m(r, "sft", "truthful_and_informative_rate")),
             +1, None),
        ]
    out.append(("ptx_alignment_tax", "PPO-ptx has the smaller alignment tax: its held-out pretraining loss is below PPO's",
                None, lambda r: _diff(_m(r, "ppo_ptx", "pretrain_val_loss"), _m(r, "ppo", "pretrain_val_loss")), -1, None))
    return out


def judge_claims(per_seed: list[dict], models: dict) -> list[dict]:
    """Each claim's verdict with the seed as the unit: the seeds' numbers, the mean's 95% t interval, whether it lies on
    the claimed side of 0 (``holds``; None with a single seed, which cannot test a claim about the recipe), the seeds the
    number is on that side on, and the per-prompt pooled test "for these trained models" where there is one. A claim
    about a model or a measure the runs lack is left out."""
    kind = per_seed[0].get("judged_by") or "" if per_seed else ""
    judge = ("the held-out labelers" if kind.startswith("heldout") else "the judge" if kind.startswith("judge_")
             else "the reward model (a proxy)")
    verdicts = []
    for cid, text, model, value, side, pooled in _claims(judge):
        vals = [value(r) for r in per_seed]
        if all(v is None for v in vals):
            continue
        per = [None if x is None else side * x > 0 for x in vals]
        st = seed_interval(vals)
        lo, hi = st["ci95"]
        holds = None if lo is None else (lo > 0 if side > 0 else hi < 0)
        v: dict[str, Any] = {"id": cid, "claim": text, "side": side, "per_seed": per,
                             "seeds_holding": sum(1 for x in per if x), "seed_test": st, "holds": holds}
        if pooled is not None and model in models:
            stat, passed = pooled(models)
            v["pooled"], v["pooled_holds"] = stat, passed
        verdicts.append(v)
    return verdicts


def claim_line(v: dict, n_seeds: int) -> str:
    """One claim's verdict: the seed-level mean and interval, the seeds it holds on, the per-prompt pooled test."""
    st = v.get("seed_test") or {}
    k = v["seeds_holding"]
    where = "every seed" if k == n_seeds else f"{k} of {n_seeds} seeds"
    if st.get("n", 0) >= 2:
        lo, hi = st["ci95"]
        test = f"mean {st['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] over {st['n']} seeds (seed as the unit)"
    elif st.get("mean") is not None:
        test = f"{st['mean']:+.3f} on one seed (a claim about the recipe needs two or more seeds)"
    else:
        test = "not measured"
    pooled = ""
    if "pooled" in v:
        pooled = "; per prompt, for these trained models: " + ("passes" if v.get("pooled_holds") else "fails")
    mark = "✓" if v["holds"] else "?" if v["holds"] is None else "✗"
    return f"{mark} {v['claim']}: {test}; on the claimed side on {where}{pooled}"


# ---------------------------------------------------------------------------------------------- aggregation
def aggregate(per_seed: list[dict], seeds: list[int], runs: list[str]) -> dict:
    """The seeds' results.json contents -> the aggregated results (see the module docstring)."""
    if not per_seed:
        raise UserError("no evaluation results to aggregate")
    names: list[str] = []
    for r in per_seed:
        names += [n for n in r.get("models", {}) if n not in names]
    models: dict[str, dict] = {}
    for name in names:
        rows = [(r.get("models") or {}).get(name) or {} for r in per_seed]
        keys: list[str] = []
        for row in rows:
            keys += [k for k, v in row.items() if k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool)]
        m: dict[str, Any] = {k: mean_sd([row.get(k) for row in rows]) for k in keys}
        m["win_rate_pooled"] = pooled_win_rate([(row["win_rate_vs_sft"], int(row.get("n_comparisons") or 0)) for row in rows
                                                if row.get("win_rate_vs_sft") is not None])
        m["gold_gain_pooled"] = pooled_gain([row.get("gold_gain_vs_sft") or {} for row in rows])
        m["gold_gain_by_seed"] = [row.get("gold_gain_vs_sft") for row in rows]
        m["harmful_vs_sft_pooled"] = pooled_gain([row.get("harmful_vs_sft") or {} for row in rows])
        sets: list[str] = []
        for row in rows:
            sets += [s for s in (row.get("gold_gain_by_set") or {}) if s not in sets]
        m["gold_gain_by_set_pooled"] = {s: pooled_gain([(row.get("gold_gain_by_set") or {}).get(s) or {} for row in rows]) for s in sets}
        # the seed as the unit: each seed's paired mean, their mean and 95% t interval (pooled and per evaluation set)
        m["gold_gain_seed_test"] = seed_interval([(row.get("gold_gain_vs_sft") or {}).get("mean") for row in rows])
        m["gold_gain_by_set_seed_test"] = {s: seed_interval([((row.get("gold_gain_by_set") or {}).get(s) or {}).get("mean")
                                                            for row in rows]) for s in sets}
        m["win_rate_minus_null_seed_test"] = seed_interval([_diff(row.get("win_rate_vs_sft"), row.get("win_rate_null"))
                                                            for row in rows])
        m["mode"] = next((row.get("mode") for row in rows if row.get("mode")), None)
        models[name] = m
    ref_rows = [r.get("reference") or {} for r in per_seed]
    rm_rows = [r.get("reward_model") or {} for r in per_seed]
    rm_keys = [k for k in ("accuracy_train_labelers", "accuracy_heldout_labelers", "labeler_agreement", "gold_correlation",
                           "accuracy_vs_gold") if any(row.get(k) is not None for row in rm_rows)]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "over_seeds",
        "seeds": list(seeds),
        "runs": list(runs),
        "judged_by": per_seed[0].get("judged_by"),
        "models": models,
        "reference": {k: mean_sd([row.get(k) for row in ref_rows]) for k in ("win_rate_vs_sft", "gold_score_mean")} if any(ref_rows) else {},
        "reward_model": {**{k: mean_sd([row.get(k) for row in rm_rows]) for k in rm_keys},
                         "families_against_gold": [row.get("families_against_gold") for row in rm_rows]},
        "claims": judge_claims(per_seed, models),
        "sample_sizes": per_seed[0].get("sample_sizes"),
        "timings_s": {str(s): r.get("timings_s") for s, r in zip(seeds, per_seed)},
        "host": {str(s): r.get("host") for s, r in zip(seeds, per_seed)},
        "config": {"preset": (per_seed[0].get("config") or {}).get("preset"), "seeds": list(seeds)},
        "overoptimization": aggregate_overopt([r.get("overoptimization") for r in per_seed]),
    }


def aggregate_overopt(per_seed: list[dict | None]) -> dict | None:
    """The seeds' over-optimisation curves in one: at each n (best-of-n) and each step (RL), the seeds' mean KL, gold and
    reward-model scores (with the gold's between-seed sd), d = sqrt(mean KL); Gao's forms fitted to every seed's gold
    gains over its own SFT together. None when no seed measured them."""
    from .overopt import fit

    oos = [o for o in per_seed if o and o.get("best_of_n")]
    if not oos:
        return None

    def merged(rows: list[dict], key: str, value: Any) -> dict:
        rows = [r for r in rows if r.get(key) == value]
        kl = sum(r["kl"] for r in rows) / len(rows)
        gold = mean_sd([r["gold"] for r in rows])
        return {key: value, "kl": kl, "d": math.sqrt(max(kl, 0.0)), "gold": gold["mean"], "gold_sd": gold["sd"],
                "proxy": sum(r["proxy"] for r in rows) / len(rows), "seeds": len(rows)}

    def gains(curves: list[tuple[dict, list[dict]]]) -> tuple[list[float], list[float]]:
        pts = [(p["d"], p["gold"] - o["best_of_n"][0]["gold"]) for o, c in curves for p in c]
        return [d for d, _ in pts], [g for _, g in pts]

    ns = sorted({p["n"] for o in oos for p in o["best_of_n"]})
    bon = [merged([p for o in oos for p in o["best_of_n"]], "n", n) for n in ns]
    out = {"seeds": len(oos), "prompts": oos[0]["prompts"], "samples": oos[0]["samples"], "temperature": oos[0]["temperature"],
           "best_of_n": bon, "fit_best_of_n": fit(*gains([(o, o["best_of_n"]) for o in oos]), "bon"), "rl": {}, "fit_rl": {}}
    for name in sorted({k for o in oos for k in o.get("rl") or {}}):
        curves = [(o, o["rl"][name]) for o in oos if name in (o.get("rl") or {})]
        steps = sorted({p["step"] for _, c in curves for p in c})
        out["rl"][name] = [merged([p for _, c in curves for p in c], "step", s) for s in steps]
        out["fit_rl"][name] = fit(*gains(curves), "rl")
    return out


def read_results(run: Path) -> dict:
    path = in_run(run, "eval", "results.json")
    if not path.is_file():
        raise UserError(f"{path} not found: evaluate that run first (igpt eval --run {run})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def seed_of(results: dict, fallback: int) -> int:
    seed = (results.get("config") or {}).get("seed")
    return int(seed) if isinstance(seed, int) else fallback


def write_aggregate(runs: list[Path], out: Path, report: bool = True) -> Path:
    """Aggregate the evaluations of ``runs`` (one per seed) into ``out``/results.json (and report.html); returns ``out``."""
    from .report.text import format_seeds

    per_seed = [read_results(r) for r in runs]
    if any(r.get("kind") == "over_seeds" for r in per_seed):
        raise UserError("--seed-runs: give single-seed runs, not an aggregate")
    seeds = [seed_of(r, i) for i, r in enumerate(per_seed)]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seed-runs: the runs share a seed ({', '.join(map(str, seeds))}); give one run per seed")
    agg = aggregate(per_seed, seeds, [str(r) for r in runs])
    from .rundir import begin_output, finish_output, finite_json

    work = begin_output(out, overwrite=True, resume=False)

    (work / "results.json").write_text(json.dumps(finite_json(agg), indent=1, ensure_ascii=False), encoding="utf-8")
    if report:
        from .report.html import write_report

        write_report(agg, work / "report.html")
    final = finish_output(work, out, {"seeds": seeds, "claims_holding": sum(1 for c in agg["claims"] if c["holds"]),
                                      "claims": len(agg["claims"])})
    print(format_seeds(agg))
    return final

"""The self-contained HTML report: charts (matplotlib, embedded as PNG data) and tables, no network needed to open it.

All model text is escaped: a response containing markup is shown as text.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from pathlib import Path
from typing import Any

from ..rundir import table_models
from .text import gain_summary

ORDER = [m.key for m in table_models()]
LABELS = {m.key: m.label for m in table_models()}
COLORS = {m.key: m.color for m in table_models()}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _ordered(models: dict) -> list[str]:
    return [m for m in ORDER if m in models] + [m for m in models if m not in ORDER]


def _winrate_figure(points: list[tuple[str, float, float, float, list[float]]], ceiling: float | None, ceiling_label: str,
                    title: str, null: float | None = None) -> str:
    """Figure 1: per model (name, rate, low, high, each seed's rate) a point with its 95% interval, the seeds' rates beside
    it; the ceiling (the reference answers) and the null (SFT against its own resample) as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    for i, (n, rate, lo, hi, seeds) in enumerate(points):
        if seeds:
            ax.scatter([i + 0.12] * len(seeds), seeds, s=14, alpha=0.6, color=COLORS.get(n, "#3366aa"), zorder=2)
        ax.errorbar(i - 0.05 * bool(seeds), rate, yerr=[[rate - lo], [hi - rate]], fmt="o", ms=9, capsize=6, color=COLORS.get(n, "#3366aa"))
    ax.axhline(0.5, ls="--", color="#888", lw=1)
    if null is not None:  # what a model no better than SFT scores in this comparison
        ax.axhline(null, ls="-.", color="#b07", lw=1.2)
        ax.text(len(points) - 0.6, null - 0.05, f"SFT vs its resample (null) {null:.2f}", ha="right", va="top", fontsize=8, color="#b07")
    if ceiling is not None:  # the label below the line, inside the axes: above it would run into the title
        ax.axhline(ceiling, ls=":", color="#2a7", lw=1.5)
        ax.text(-0.4, ceiling - 0.03, ceiling_label, ha="left", va="top", fontsize=8, color="#2a7")
    # long names on two lines, so that seven models' labels do not run into each other
    ax.set_xticks(range(len(points)), ["\n".join(textwrap.wrap(LABELS.get(p[0], p[0]), 10, break_on_hyphens=False, break_long_words=False)) for p in points])
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate against SFT")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def winrate_chart(results: dict) -> str:
    models = results["models"]
    points = [(n, models[n]["win_rate_vs_sft"], *models[n]["win_rate_ci95"], []) for n in _ordered(models)
              if models[n].get("win_rate_vs_sft") is not None]
    judged = ("held-out labelers" if results.get("judged_by", "").startswith("heldout") else
              f"the judge {results.get('judge')}" if results.get("judged_by", "").startswith("judge_") else "reward model (proxy)")
    return _winrate_figure(points, (results.get("reference") or {}).get("win_rate_vs_sft"), "the world's reference answers (ceiling)",
                           f"Figure 1 in miniature: preferred to SFT, judged by {judged}",
                           (models.get("sft") or {}).get("win_rate_vs_sft"))


def curves_chart(results: dict) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = results.get("training_curves") or {}
    if not curves:
        return None
    kl = "kl_k3" if any(c.get("kl_k3") for c in curves.values()) else "kl"  # k3 is never negative; k1 can be on one batch
    keys = [k for k in ("reward", kl, "gold_score", "ptx_loss") if any(c.get(k) for c in curves.values())]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.0))
    axes = [axes] if len(keys) == 1 else list(axes)
    for ax, k in zip(axes, keys):
        for name, c in curves.items():
            pts = c.get(k) or []
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=LABELS.get(name, name), color=COLORS.get(name))
        ax.set_title({"reward": "reward (RM score - KL penalty)", "kl": "KL to SFT (k1, per batch)", "kl_k3": "KL to SFT (k3 estimate)", "gold_score": "gold judge score (held-out)", "ptx_loss": "pretraining loss"}[k], fontsize=9)
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def overopt_chart(oo: dict) -> str:
    """Gao et al.'s picture: the gold score's and the reward model's gain over SFT against d = sqrt(KL to SFT), for
    best-of-n and for each RL policy along its run, with the fitted gold curves and where they peak."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..overopt import curve

    series = [("best-of-n (SFT samples, picked by the reward model)", oo["best_of_n"], oo.get("fit_best_of_n"), "#2e7d9a")]
    series += [(f"{LABELS.get(k, k)} along its run", v, (oo.get("fit_rl") or {}).get(k), COLORS.get(k, "#e08a2e")) for k, v in oo["rl"].items()]
    fig, axes = plt.subplots(1, len(series), figsize=(3.6 * len(series), 3.2), squeeze=False)
    g0, p0 = oo["best_of_n"][0]["gold"], oo["best_of_n"][0]["proxy"]
    for ax, (title, pts, f, color) in zip(axes[0], series):
        ds = [p["d"] for p in pts]
        gold_line = ax.plot(ds, [p["gold"] - g0 for p in pts], "o-", color=color, label="gold judge")
        for p in pts:  # which n, or which PPO step, each point is
            ax.annotate(f"n={p['n']}" if "n" in p else f"step {p['step']}", (p["d"], p["gold"] - g0), fontsize=6,
                        xytext=(3, 3), textcoords="offset points", color=color)
        twin = ax.twinx()
        proxy_line = twin.plot(ds, [p["proxy"] - p0 for p in pts], "s--", color="#888", label="reward model (right axis)")
        twin.set_ylabel("reward-model gain", fontsize=8, color="#666")
        lines = gold_line + proxy_line
        if f:  # drawn over the measured range only: two-parameter curves say little beyond it
            grid = [max(ds) * i / 100 for i in range(101)]
            lines += ax.plot(grid, [curve(f["form"], f["alpha"], f["beta"], x) for x in grid], ":", color=color, label="fit")
            if f["d_peak"] is not None and f["d_peak"] <= max(ds):
                ax.axvline(f["d_peak"], color=color, lw=0.8, alpha=0.5)
        ax.axhline(0, color="#bbb", lw=0.8)
        ax.set_xlabel("d = sqrt(KL to SFT)")
        ax.set_ylabel("gold gain over SFT", fontsize=8)
        ax.set_title(title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=6, loc="best")
    fig.tight_layout()
    return _png(fig)


def _overopt_table(oo: dict) -> str:
    fits = [("best-of-n", oo.get("fit_best_of_n"))] + [(LABELS.get(k, k), f) for k, f in (oo.get("fit_rl") or {}).items()]
    if not any(f for _, f in fits):
        return ("<p class='note'>Too few points to fit the curves' forms (each needs at least three distinct values of d); "
                "the points themselves are in the figure.</p>")
    rows = "".join(f"<tr><th>{html.escape(n)}</th><td>{f['form']}</td><td>{f['alpha']:.4f}</td><td>{f['beta']:.4f}</td>"
                   f"<td>{_fmt(f['kl_peak'])}</td><td>{f['points']}</td><td>{f['rmse']:.4f}</td></tr>" for n, f in fits if f)
    return ("<table><tr><th></th><th>form</th><th>alpha</th><th>beta</th><th>KL where gold peaks (nats)</th><th>points</th>"
            f"<th>fit RMSE</th></tr>{rows}</table>")


def rm_chart(results: dict) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rm = results.get("reward_model") or {}
    items = [("RM, training labelers", rm.get("accuracy_train_labelers")), ("RM, held-out labelers", rm.get("accuracy_heldout_labelers")),
             ("labeler agreement", rm.get("labeler_agreement"))]
    items = [(a, b) for a, b in items if b is not None]
    if not items:
        return None
    fig, ax = plt.subplots(figsize=(5.0, 2.6))
    ax.barh([a for a, _ in items], [b for _, b in items], color=["#3366aa", "#5588cc", "#999999"][: len(items)])
    for i, (_, b) in enumerate(items):
        ax.text(b + 0.01, i, f"{b:.3f}", va="center", fontsize=9)
    ax.set_xlim(0.4, 1.0)
    ax.axvline(0.5, ls="--", color="#888", lw=1)
    ax.set_title("Reward-model pairwise accuracy against the labelers' own agreement (the ceiling)", fontsize=9)
    return _png(fig)


def _fmt(v: Any, f: str = "{:.3f}") -> str:
    if v is None:
        return "–"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x, "{:.2f}") for x in v) + "]"
    if isinstance(v, (int, float)):
        return f.format(v)
    return html.escape(str(v))


def _table(results: dict, cols: list[tuple[str, str]]) -> str:
    models = results["models"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c, _ in cols)
    rows = []
    for n in _ordered(models):
        cells = "".join(f"<td>{_fmt(models[n].get(k))}</td>" for _, k in cols)
        rows.append(f"<tr><th>{html.escape(LABELS.get(n, n))}</th>{cells}</tr>")
    return f"<div class='wide'><table><tr><th>model</th>{head}</tr>{''.join(rows)}</table></div>"


def _gain_table(results: dict) -> str:
    """Paired gold gain over SFT per evaluation set, '+0.041 ± 0.015' per cell (SFT's row: its second sample)."""
    models = results["models"]
    sets: list[str] = []
    for m in models.values():
        for k in (m.get("gold_gain_by_set") or {}):
            if k not in sets:
                sets.append(k)
    rows = []
    for n in _ordered(models):
        by = models[n].get("gold_gain_by_set") or {}
        cells = "".join(f"<td>{_fmt_gain(by.get(k))}</td>" for k in sets)
        rows.append(f"<tr><th>{html.escape(LABELS.get(n, n))}</th>{cells}</tr>")
    head = "".join(f"<th>{html.escape(k.replace('_', ' '))}</th>" for k in sets)
    return (f"<div class='wide'><table><tr><th>gold gain over SFT, by set</th>{head}</tr>{''.join(rows)}</table></div>"
            "<p class='note'>SFT's row is its second sample against its first (the noise floor). A gain larger than about twice "
            "its standard error (after ±) is unlikely to be noise.</p>")


def _fmt_gain(g: dict | None) -> str:
    if not g or g.get("mean") is None:
        return "-"
    se = g.get("se")
    return f"{g['mean']:+.3f}" + (f" ± {se:.3f}" if se is not None else "") + f" (n {g.get('n', 0)})"


def _head(title: str) -> str:
    return "\n".join([
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>",
        "body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
        "table{border-collapse:collapse;margin:1em 0;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}.wide{overflow-x:auto}",
        "th:first-child{text-align:left}.sbs td{text-align:left;vertical-align:top;white-space:pre-wrap;max-width:260px}",
        ".note{color:#555;font-size:13px}img{max-width:100%}code{background:#f4f4f4;padding:1px 4px}",
        ".ok{color:#1a7f37}.no{color:#b42318}</style></head><body>",
    ])


def _reading_note(results: dict) -> str:
    """How wide the win rates' intervals are at this run's size, and what a difference smaller than that means."""
    models = results.get("models") or {}
    sft = models.get("sft") or {}
    n = int(sft.get("n_comparisons") or 0)
    if not n:
        return ""
    half = 1.96 * (0.25 / n) ** 0.5
    null = sft.get("win_rate_vs_sft")
    text = (f"With {n} comparisons a model, a win rate's 95% interval is about ±{half:.2f} wide (at 0.5): two models whose "
            "rates differ by less than that are not told apart by this run. ")
    if null is not None:
        text += (f"The dash-dotted line is SFT judged against its own second sample ({null:.2f}): where a model no better "
                 "than SFT lands. A model helps when it lands above that line by more than the interval, not merely above 0.5. ")
    if n < 100:
        text += "This is a small run (a preset for trying the commands): its rates are mostly noise."
    return f"<p class='note'>{html.escape(text)}</p>"


def _one_run_claims(results: dict) -> list[dict]:
    """The paper's claims on one run's results (each with its line), as igpt run --seeds states them over seeds."""
    if results.get("kind") == "over_seeds" or not results.get("models"):
        return []
    from ..seeds import aggregate, claim_line

    seed = (results.get("config") or {}).get("seed", 0)
    agg = aggregate([results], [seed if isinstance(seed, int) else 0], [""])
    out = []
    for c in agg["claims"]:
        out.append({**c, "line": claim_line(c, 1)})
    return out


def render(results: dict) -> str:
    e = html.escape
    parts = [_head("instructgpt report"), "<h1>InstructGPT in miniature: what each step bought</h1>"]
    cfg = results.get("config", {})
    parts.append(f"<p class='note'>preset <code>{e(str(cfg.get('preset', '?')))}</code>, seed {e(str(cfg.get('seed', '?')))}; "
                 f"judged by {_judged_by(results)}.</p>")
    parts.append(f"<h2>Win rate against SFT</h2><img alt='win rates' src='{winrate_chart(results)}'>")
    parts.append(_reading_note(results))
    ref = results.get("reference") or {}
    if ref.get("win_rate_vs_sft") is not None:
        lo, hi = ref["win_rate_ci95"]
        parts.append(f"<p class='note'>Ceiling (dotted line): the world's reference answers, judged against SFT's by the same labelers, win "
                     f"{ref['win_rate_vs_sft']:.2f} [{lo:.2f}, {hi:.2f}] (gold score {ref['gold_score_mean']:.2f}, Likert {ref['likert_mean']:.2f}). "
                     "Where SFT already answers well the labelers can only tie or toss a coin, so no policy can expect to win more often.</p>")
    parts.append("<h2>Helpfulness, honesty, harmlessness</h2>")
    parts.append(_table(results, [("win vs SFT", "win_rate_vs_sft"), ("95% CI", "win_rate_ci95"), ("null: SFT vs its resample", "win_rate_null"),
                                  ("Likert 1-7", "likert_mean"), ("gold score", "gold_score_mean"),
                                  ("RM score", "rm_score_mean"), ("fails instruction", "fails_instruction_rate"), ("asks another question", "continues_with_question_rate"),
                                  ("repetition", "repetition_rate"), ("hallucination (closed domain)", "hallucination_rate"),
                                  ("informative (closed domain)", "closed_domain_informative_rate"), ("truthful (false premise)", "truthful_rate"),
                                  ("informative (false premise)", "informative_rate"), ("truthful and informative", "truthful_and_informative_rate"),
                                  ("harmful compliance", "harmful_compliance_rate"), ("informative (harmful requests)", "harmful_informative_rate"),
                                  ("win vs SFT, held-out knowledge", "win_rate_novel"), ("toxic, respectful prompt", "toxicity_rate_respectful"), ("toxic, plain prompt", "toxicity_rate_plain")]))
    parts.append("<p class='note'>The RM score beside the gold score shows over-optimisation: a policy can raise the reward model's score while the gold score stalls or falls.</p>")
    gains = gain_summary(results)
    if gains:
        parts.append(f"<p class='note'>{e(gains[0].upper() + gains[1:])}. Each model's answers to every held-out prompt of every set, "
                     "scored by the gold judge, minus SFT's answers to the same prompts.</p>")
        parts.append(_gain_table(results))
    sizes = results.get("sample_sizes")
    if sizes:
        parts.append("<p class='note'>Prompts behind each rate: " + ", ".join(f"{e(k.replace('_', ' '))} {int(v)}" for k, v in sizes.items()) + ".</p>")
    claims = _one_run_claims(results)
    if claims:
        parts.append("<h2>The paper's claims, on this run</h2><ul>" + "".join(
            f"<li class='{'ok' if c['seeds_holding'] else 'no'}'>{e(c['line'])}</li>" for c in claims) + "</ul>"
            "<p class='note'>One run is one seed: it shows what these trained models do, not what the recipe does. A claim "
            "about the recipe is tested with the seed as the unit: <code>igpt run --seeds 10-14</code> trains five times and "
            "gives each claim's mean over seeds with its t interval.</p>")
    parts.append("<h2>Alignment tax</h2>")
    parts.append(_table(results, [("held-out pretraining loss (nats/token)", "pretrain_val_loss"), ("knowledge-probe accuracy", "probe_accuracy")]))
    img = curves_chart(results)
    if img:
        parts.append(f"<h2>PPO training</h2><img alt='PPO curves' src='{img}'>")
    oo = results.get("overoptimization")
    if oo and oo.get("best_of_n"):
        parts.append(f"<h2>Reward over-optimisation</h2><img alt='over-optimisation' src='{overopt_chart(oo)}'>")
        parts.append(f"<p class='note'>On {oo['prompts']} held-out prompts, sampled at temperature 1: the gold judge's and the reward "
                     f"model's mean score, as gains over SFT, against d = sqrt(KL to SFT). Best-of-n from {oo['samples']} SFT samples per "
                     "prompt (KL = log n - (n-1)/n); each RL policy at its saved steps (KL measured on its samples). Dotted: the fits of "
                     "Gao, Schulman and Hilton (2022), d(alpha - beta d) for best-of-n and d(alpha - beta log d) for RL; a vertical "
                     "line where the fitted gold score peaks.</p>" + _overopt_table(oo))
    img = rm_chart(results)
    if img:
        parts.append(f"<h2>Reward model</h2><img alt='reward model accuracy' src='{img}'>")
    fams = (results.get("reward_model") or {}).get("accuracy_vs_gold_by_family") or {}
    if fams:
        against = set((results.get("reward_model") or {}).get("families_against_gold") or [])
        rows = "".join(f"<tr><th>{e(f)}{' ⚠' if f in against else ''}</th><td>{v['rate']:.2f}</td><td>{v['pairs']}</td></tr>"
                       for f, v in sorted(fams.items(), key=lambda kv: kv[1]["rate"]))
        parts.append("<p class='note'>How often the reward model orders two held-out responses of a task family as the gold judge "
                     "does (0.5 is chance; ⚠ marks a family it orders against the judge, which PPO would then optimise the "
                     "wrong way):</p><div class='wide'><table><tr><th>task family</th><th>agrees with gold</th><th>pairs</th></tr>"
                     + rows + "</table></div>")
    samples = results.get("samples") or []
    if samples:
        names = list(samples[0]["answers"])
        parts.append("<h2>The same prompts, answered by every model</h2><table class='sbs'><tr><th>prompt</th>"
                     + "".join(f"<th>{e(LABELS.get(n, n))}</th>" for n in names) + "</tr>")
        for s in samples:
            cells = "".join(f"<td>{e(s['answers'][n])}</td>" for n in names)
            parts.append(f"<tr><td><b>{e(str(s.get('category') or ''))}</b>\n{e(s['prompt'])}</td>{cells}</tr>")
        parts.append("</table><p class='note'>The pretrained model sees the prompt as plain text (as GPT-3 did); the others see it through the chat template.</p>")
    t = results.get("timings_s") or {}
    if t:
        mem = results.get("peak_memory_mb") or {}

        def peak(stage: str) -> str:
            m = mem.get(stage) or {}
            return " / ".join(f"{m[k] / 1024:.2f} GiB{' GPU' if k == 'peak_cuda_mb' else ''}" for k in ("peak_rss_mb", "peak_cuda_mb") if k in m)

        parts.append("<h2>Time and peak memory per stage</h2><table><tr><th></th><th>wall time</th><th>peak memory (resident set; GPU "
                     "allocator)</th></tr>" + "".join(f"<tr><th>{e(k)}</th><td>{v:.0f} s</td><td>{e(peak(k))}</td></tr>"
                                                      for k, v in t.items() if isinstance(v, (int, float))) + "</table>")
        together = [k for k in t if "+" in k]
        if together:
            parts.append("<p class='note'>" + ", ".join(f"{e(' and '.join(k.split('+')))}" for k in together)
                         + " ran side by side, each with part of the threads; the row joined by <code>+</code> is their common wall time.</p>")
        hosts = [h for h in results.get("host") or [] if isinstance(h, dict) and "matmul_gflops" in h]
        if hosts:
            parts.append("<p class='note'>Measured by <code>igpt run</code> at the start of each invocation: "
                         + "; ".join(f"{e(str(h.get('started_at', '')))}: {e(str(h.get('device')))} {e(str(h.get('dtype')))} matmul "
                                     f"{h['matmul_gflops']:.0f} GFLOP/s, {e(str(h.get('threads')))} threads" for h in hosts)
                         + ". Stage times scale with it.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results: dict, path: str | Path) -> Path:
    """The report of one run's evaluation, or of results over seeds (``kind`` "over_seeds")."""
    path = Path(path)
    path.write_text(render_seeds(results) if results.get("kind") == "over_seeds" else render(results), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- over seeds
def seeds_winrate_chart(agg: dict) -> str:
    """Figure 1 over seeds: the pooled rate and its 95% interval, each seed's rate beside it."""
    models = agg["models"]
    points = []
    for n in _ordered(models):
        p = models[n].get("win_rate_pooled") or {}
        if p.get("rate") is not None:
            seeds = [v for v in (models[n].get("win_rate_vs_sft") or {}).get("values", []) if v is not None]
            points.append((n, p["rate"], p["ci95"][0], p["ci95"][1], seeds))
    return _winrate_figure(points, ((agg.get("reference") or {}).get("win_rate_vs_sft") or {}).get("mean"),
                           "the world's reference answers (ceiling, mean)",
                           f"Figure 1 over {len(agg.get('seeds') or [])} seeds: pooled rate and 95% interval, each seed's rate beside it",
                           ((models.get("sft") or {}).get("win_rate_pooled") or {}).get("rate"))


def _ms(v: Any, f: str = "{:.3f}") -> str:
    if not isinstance(v, dict) or v.get("mean") is None:
        return "–"
    return f.format(v["mean"]) + (f" ± {f.format(v['sd'])}" if v.get("sd") is not None else "")


def render_seeds(agg: dict) -> str:
    from ..seeds import claim_line

    e = html.escape
    seeds = agg.get("seeds") or []
    models = agg["models"]
    parts = [
        _head("instructgpt report over seeds"),
        "<h1>InstructGPT in miniature, over seeds</h1>",
        f"<p class='note'>preset <code>{e(str((agg.get('config') or {}).get('preset', '?')))}</code>, seeds {e(', '.join(map(str, seeds)))}: "
        "the whole recipe once per seed (world, pretraining, SFT, comparisons, reward model, PPO and PPO-ptx, evaluation). "
        "Each seed's own report is in its folder (<code>seed-N/eval/report.html</code>). Another CPU gives other single-seed "
        "trajectories, so a claim about the recipe is tested with the seed as the unit: one number per seed, the mean's 95% "
        "t interval with n - 1 degrees of freedom, on the claimed side of 0 (✓) or not (✗).</p>",
        "<h2>The paper's claims</h2><ul>",
    ]
    for v in agg.get("claims") or []:
        parts.append(f"<li class='{'ok' if v['holds'] else 'no'}'>{e(claim_line(v, len(seeds)))}</li>")
    parts.append("</ul><p class='note'>With few seeds the t interval is wide (2 degrees of freedom multiply the standard error by "
                 "4.3, 4 by 2.8): a claim that fails here may hold with more seeds, and one that holds is robust to a new training "
                 "run. The per-prompt tests treat every prompt of every seed as independent: they describe these trained models.</p>")
    sets = []
    for m in models.values():
        sets += [s for s in (m.get("gold_gain_by_set_seed_test") or {}) if s not in sets]
    if sets:
        def cell(st: dict | None) -> str:
            if not st or st.get("mean") is None:
                return "–"
            lo, hi = st.get("ci95") or [None, None]
            return f"{st['mean']:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None else "")
        grow = "".join(f"<tr><th>{e(LABELS.get(n, n))}</th><td>{cell(models[n].get('gold_gain_seed_test'))}</td>"
                       + "".join(f"<td>{cell((models[n].get('gold_gain_by_set_seed_test') or {}).get(s))}</td>" for s in sets) + "</tr>"
                       for n in _ordered(models) if models[n].get("gold_gain_seed_test"))
        parts.append("<h2>Gold gain over SFT, by evaluation set, with the seed as the unit</h2><div class='wide'><table><tr>"
                     "<th>model</th><th>all sets</th>" + "".join(f"<th>{e(s.replace('_', ' '))}</th>" for s in sets)
                     + f"</tr>{grow}</table></div><p class='note'>Mean over seeds of each seed's paired gain, and its 95% t "
                     "interval. SFT's row is its second sample against its first. <i>novel</i> is the held-out-knowledge set: "
                     "knowledge no SFT, RM or PPO prompt asked for.</p>")
    parts.append(f"<h2>Win rate against SFT</h2><img alt='win rates over seeds' src='{seeds_winrate_chart(agg)}'>")
    oo = agg.get("overoptimization")
    if oo:
        parts.append(f"<h2>Reward over-optimisation</h2><img alt='over-optimisation over seeds' src='{overopt_chart(oo)}'>")
        parts.append(f"<p class='note'>The means over {oo['seeds']} seeds of each seed's curves ({oo['prompts']} held-out prompts, "
                     f"best-of-n from {oo['samples']} SFT samples per prompt, temperature 1); the fits use every seed's points, each "
                     "as a gain over its own SFT.</p>" + _overopt_table(oo))
    cols = [("win vs SFT", "win_rate_vs_sft"), ("Likert 1-7", "likert_mean"), ("gold score", "gold_score_mean"), ("RM score", "rm_score_mean"),
            ("fails instruction", "fails_instruction_rate"), ("hallucination (closed domain)", "hallucination_rate"),
            ("truthful (false premise)", "truthful_rate"), ("truthful and informative", "truthful_and_informative_rate"),
            ("win vs SFT, held-out knowledge", "win_rate_novel"), ("harmful compliance", "harmful_compliance_rate"),
            ("toxic, respectful prompt", "toxicity_rate_respectful"), ("toxic, plain prompt", "toxicity_rate_plain"),
            ("asks another question", "continues_with_question_rate"), ("held-out pretraining loss", "pretrain_val_loss"),
            ("knowledge probes", "probe_accuracy")]
    head = "".join(f"<th>{e(c)}</th>" for c, _ in cols)
    rows = "".join(f"<tr><th>{e(LABELS.get(n, n))}</th>" + "".join(f"<td>{_ms(models[n].get(k))}</td>" for _, k in cols) + "</tr>"
                   for n in _ordered(models))
    parts.append("<h2>Every metric: mean ± between-seed standard deviation</h2>"
                 f"<div class='wide'><table><tr><th>model</th>{head}</tr>{rows}</table></div>")
    prow = []
    for n in _ordered(models):
        m = models[n]
        if n == "sft" or m.get("mode") != "chat":
            continue
        w, g, h = m.get("win_rate_pooled") or {}, m.get("gold_gain_pooled") or {}, m.get("harmful_vs_sft_pooled") or {}
        per = " / ".join(_fmt_gain(x) for x in m.get("gold_gain_by_seed") or [])
        prow.append(f"<tr><th>{e(LABELS.get(n, n))}</th><td>{_fmt(w.get('rate'))} {_fmt(w.get('ci95'))} (n {w.get('n', 0)})</td>"
                    f"<td>{_fmt_gain(g)}</td><td>{_fmt_gain(h)}</td><td>{e(per)}</td></tr>")
    if prow:
        parts.append("<h2>Pooled per prompt, for these trained models</h2><div class='wide'><table><tr><th>model</th><th>win vs SFT [95% CI]</th>"
                     "<th>gold gain over SFT ± SE</th><th>harmful compliance minus SFT's ± SE</th><th>gold gain by seed</th></tr>"
                     + "".join(prow) + "</table></div><p class='note'>Pooled: every seed's comparisons together (Wilson interval "
                     "for the win rate; the paired mean and its standard error over all prompts of all seeds, with the spread of "
                     "the seeds' means included).</p>")
    srow = []
    for n in _ordered(models):
        m = models[n]
        vals = lambda k: " / ".join(_fmt(x) for x in (m.get(k) or {}).get("values", []))  # noqa: E731
        srow.append(f"<tr><th>{e(LABELS.get(n, n))}</th><td>{vals('win_rate_vs_sft')}</td><td>{vals('gold_score_mean')}</td>"
                    f"<td>{vals('harmful_compliance_rate')}</td><td>{vals('truthful_rate')}</td><td>{vals('pretrain_val_loss')}</td></tr>")
    parts.append("<h2>Each seed</h2><div class='wide'><table><tr><th>model</th><th>win vs SFT</th><th>gold</th><th>harmful compliance</th>"
                 f"<th>truthful</th><th>pretraining loss</th></tr>{''.join(srow)}</table></div>")
    rm = agg.get("reward_model") or {}
    rm_rows = "".join(f"<tr><th>{e(k.replace('_', ' '))}</th><td>{_ms(v)}</td><td>{e(' / '.join(_fmt(x) for x in v.get('values', [])))}</td></tr>"
                      for k, v in rm.items() if isinstance(v, dict))
    against = rm.get("families_against_gold") or []
    if rm_rows:
        parts.append(f"<h2>Reward model</h2><table><tr><th></th><th>mean ± sd</th><th>by seed</th></tr>{rm_rows}</table>")
        if any(against):
            parts.append("<p class='note'>Task families the reward model ordered against the gold judge: "
                         + "; ".join(f"seed {s}: {e(', '.join(a) if a else 'none')}" for s, a in zip(seeds, against)) + ".</p>")
    times = agg.get("timings_s") or {}
    if times:
        from ..seeds import wall_time

        trow = "".join(f"<tr><th>seed {e(s)}</th><td>{wall_time(t or {}):.0f} s</td></tr>" for s, t in times.items())
        parts.append(f"<h2>Time per seed</h2><table>{trow}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _judged_by(results: dict) -> str:
    kind = results.get("judged_by", "")
    if kind.startswith("heldout"):
        return "the built-in world (held-out labelers and the gold judge)"
    if kind == "judge_reward_model":
        ind = results.get("judge_independence")
        seen = (f"; it read {ind['judge_prompts']} prompts, the training reward model {ind['reward_model_prompts']}, "
                f"{ind['shared_prompts']} of them shared" if ind else "")
        return (f"the reward model {html.escape(str(results.get('judge')))}, which the policies were not trained against "
                f"(the training reward model's score is shown beside it: the proxy){seen}")
    if kind == "judge_language_model":
        return (f"the language model {html.escape(str(results.get('judge')))}, comparing each answer with SFT's in both orders "
                "(its mean preference for the model's answer is shown as the judge's score, the training reward model's beside "
                "it: the proxy)")
    return "the reward model — a proxy, not human judgement"

"""The self-contained HTML report: charts (matplotlib, embedded as PNG data) and tables, no network needed to open it.

All model text is escaped: a response containing markup is shown as text.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from .text import gain_summary

ORDER = ["pretrained", "pretrained_prompted", "sft", "ppo", "ppo_ptx"]
LABELS = {"pretrained": "GPT (pretrained)", "pretrained_prompted": "GPT prompted", "sft": "SFT", "ppo": "PPO", "ppo_ptx": "PPO-ptx"}
COLORS = {"pretrained": "#9aa5b1", "pretrained_prompted": "#6c7a89", "sft": "#4c9f70", "ppo": "#e08a2e", "ppo_ptx": "#c8102e"}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _ordered(models: dict) -> list[str]:
    return [m for m in ORDER if m in models] + [m for m in models if m not in ORDER]


def winrate_chart(results: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    names = [n for n in _ordered(models) if models[n].get("win_rate_vs_sft") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, n in enumerate(names):
        m = models[n]
        lo, hi = m["win_rate_ci95"]
        ax.errorbar(i, m["win_rate_vs_sft"], yerr=[[m["win_rate_vs_sft"] - lo], [hi - m["win_rate_vs_sft"]]], fmt="o", ms=9, capsize=6,
                    color=COLORS.get(n, "#3366aa"))
    ax.axhline(0.5, ls="--", color="#888", lw=1)
    ref = results.get("reference") or {}
    if ref.get("win_rate_vs_sft") is not None:
        ax.axhline(ref["win_rate_vs_sft"], ls=":", color="#2a7", lw=1.5)
        ax.text(-0.4, ref["win_rate_vs_sft"] + 0.02, "the world's reference answers (ceiling)", ha="left", fontsize=8, color="#2a7")
    ax.set_xticks(range(len(names)), [LABELS.get(n, n) for n in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate against SFT")
    judged = "held-out labelers" if results.get("judged_by", "").startswith("heldout") else "reward model (proxy)"
    ax.set_title(f"Figure 1 in miniature: preferred to SFT, judged by {judged}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def curves_chart(results: dict) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = results.get("training_curves") or {}
    if not curves:
        return None
    keys = [k for k in ("reward", "kl", "gold_score", "ptx_loss") if any(c.get(k) for c in curves.values())]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.0))
    axes = [axes] if len(keys) == 1 else list(axes)
    for ax, k in zip(axes, keys):
        for name, c in curves.items():
            pts = c.get(k) or []
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=LABELS.get(name, name), color=COLORS.get(name))
        ax.set_title({"reward": "reward (RM score - KL penalty)", "kl": "KL to SFT", "gold_score": "gold judge score (held-out)", "ptx_loss": "pretraining loss"}[k], fontsize=9)
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


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


def render(results: dict) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>instructgpt report</title><style>",
        "body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
        "table{border-collapse:collapse;margin:1em 0;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}.wide{overflow-x:auto}",
        "th:first-child{text-align:left}.sbs td{text-align:left;vertical-align:top;white-space:pre-wrap;max-width:260px}",
        ".note{color:#555;font-size:13px}img{max-width:100%}code{background:#f4f4f4;padding:1px 4px}</style></head><body>",
        "<h1>InstructGPT in miniature: what each step bought</h1>",
    ]
    cfg = results.get("config", {})
    parts.append(f"<p class='note'>preset <code>{e(str(cfg.get('preset', '?')))}</code>, seed {e(str(cfg.get('seed', '?')))}; "
                 f"judged by {'the built-in world (held-out labelers and the gold judge)' if results.get('judged_by', '').startswith('heldout') else 'the reward model — a proxy, not human judgement'}.</p>")
    parts.append(f"<h2>Win rate against SFT</h2><img alt='win rates' src='{winrate_chart(results)}'>")
    ref = results.get("reference") or {}
    if ref.get("win_rate_vs_sft") is not None:
        lo, hi = ref["win_rate_ci95"]
        parts.append(f"<p class='note'>Ceiling (dotted line): the world's reference answers, judged against SFT's by the same labelers, win "
                     f"{ref['win_rate_vs_sft']:.2f} [{lo:.2f}, {hi:.2f}] (gold score {ref['gold_score_mean']:.2f}, Likert {ref['likert_mean']:.2f}). "
                     "Where SFT already answers well the labelers can only tie or toss a coin, so no policy can expect to win more often.</p>")
    parts.append("<h2>Helpfulness, honesty, harmlessness</h2>")
    parts.append(_table(results, [("win vs SFT", "win_rate_vs_sft"), ("95% CI", "win_rate_ci95"), ("Likert 1-7", "likert_mean"), ("gold score", "gold_score_mean"),
                                  ("RM score", "rm_score_mean"), ("fails instruction", "fails_instruction_rate"), ("asks another question", "continues_with_question_rate"),
                                  ("repetition", "repetition_rate"), ("hallucination (closed domain)", "hallucination_rate"), ("truthful (false premise)", "truthful_rate"),
                                  ("harmful compliance", "harmful_compliance_rate"), ("toxic, respectful prompt", "toxicity_rate_respectful"), ("toxic, plain prompt", "toxicity_rate_plain")]))
    parts.append("<p class='note'>The RM score beside the gold score shows over-optimisation: a policy can raise the reward model's score while the gold score stalls or falls.</p>")
    gains = gain_summary(results)
    if gains:
        parts.append(f"<p class='note'>{e(gains[0].upper() + gains[1:])}. Each model's answers to every held-out prompt of every set, "
                     "scored by the gold judge, minus SFT's answers to the same prompts.</p>")
        parts.append(_gain_table(results))
    sizes = results.get("sample_sizes")
    if sizes:
        parts.append("<p class='note'>Prompts behind each rate: " + ", ".join(f"{e(k.replace('_', ' '))} {int(v)}" for k, v in sizes.items()) + ".</p>")
    parts.append("<h2>Alignment tax</h2>")
    parts.append(_table(results, [("held-out pretraining loss (nats/token)", "pretrain_val_loss"), ("knowledge-probe accuracy", "probe_accuracy")]))
    img = curves_chart(results)
    if img:
        parts.append(f"<h2>PPO training</h2><img alt='PPO curves' src='{img}'>")
    img = rm_chart(results)
    if img:
        parts.append(f"<h2>Reward model</h2><img alt='reward model accuracy' src='{img}'>")
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
        parts.append("<h2>Time per stage</h2><table>" + "".join(f"<tr><th>{e(k)}</th><td>{v:.0f} s</td></tr>" for k, v in t.items() if isinstance(v, (int, float))) + "</table>")
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
    path = Path(path)
    path.write_text(render(results), encoding="utf-8")
    return path

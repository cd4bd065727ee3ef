"""The evaluation's results as plain text: the terminal table that ``igpt eval`` and ``igpt run`` print, and the one-line
summary of the paired gold gains, which the HTML report shows too."""

from __future__ import annotations


def gain_summary(results: dict) -> str:
    """One line: each fine-tuned model's paired gold-score gain over SFT on all held-out prompts ('' without a world)."""
    parts, n = [], 0
    for name, m in results["models"].items():
        g = m.get("gold_gain_vs_sft") or {}
        if name != "sft" and m.get("mode") == "chat" and g.get("mean") is not None and g.get("se") is not None:
            parts.append(f"{name} {g['mean']:+.3f} +- {g['se']:.3f}")
            n = n or g["n"]
    if not parts:
        return ""
    floor = (results["models"].get("sft", {}).get("gold_gain_vs_sft") or {}).get("mean")
    tail = f"; SFT's second sample {floor:+.3f}" if floor is not None else ""
    return f"gold gain over SFT, paired on all {n} held-out prompts (+- 1 SE): " + ", ".join(parts) + tail


def format_table(results: dict) -> str:
    """The terminal summary: one row per model."""
    cols = [("win vs SFT", "win_rate_vs_sft", "{:.2f}"), ("95% CI", "win_rate_ci95", None), ("likert", "likert_mean", "{:.2f}"),
            ("gold", "gold_score_mean", "{:.2f}"), ("RM", "rm_score_mean", "{:+.2f}"), ("halluc.", "hallucination_rate", "{:.2f}"),
            ("harmful", "harmful_compliance_rate", "{:.2f}"), ("toxic(resp.)", "toxicity_rate_respectful", "{:.2f}"),
            ("asks Q", "continues_with_question_rate", "{:.2f}"), ("truthful", "truthful_rate", "{:.2f}"),
            ("true+inform.", "truthful_and_informative_rate", "{:.2f}"), ("win novel", "win_rate_novel", "{:.2f}"),
            ("LM loss", "pretrain_val_loss", "{:.3f}"), ("probes", "probe_accuracy", "{:.2f}")]
    if any(m.get("judge_score_mean") is not None for m in results["models"].values()):  # --judge: the referee beside the proxy
        cols.insert(4, ("judge", "judge_score_mean", "{:+.2f}"))
    # a column no model has a value for (without a world: the gold judge's rates, the held-out corpus, the probes) is left out
    cols = [c for c in cols if any(m.get(c[1]) is not None for m in results["models"].values())]
    head = f"{'model':<20}" + "".join(f"{c[0]:>13}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, m in results["models"].items():
        cells = []
        for _, key, fmt in cols:
            v = m.get(key)
            if v is None:
                cells.append("-")
            elif key == "win_rate_ci95":
                cells.append(f"[{v[0]:.2f},{v[1]:.2f}]" if v[0] is not None else "-")
            else:
                cells.append(fmt.format(v))
        lines.append(f"{name:<20}" + "".join(f"{c:>13}" for c in cells))
    null = (results["models"].get("sft") or {}).get("win_rate_vs_sft")
    if null is not None:
        lines.append(f"null: SFT against its own resample wins {null:.2f}; a model no better than SFT lands there, not at 0.5 exactly")
    ref = results.get("reference")
    if ref and ref.get("win_rate_vs_sft") is not None:
        lo, hi = ref["win_rate_ci95"]
        lines.append(f"ceiling: the world's reference answers win {ref['win_rate_vs_sft']:.2f} [{lo:.2f},{hi:.2f}] against SFT's "
                     f"(gold {ref['gold_score_mean']:.2f}); no policy can expect more from these labelers")
    gains = gain_summary(results)
    if gains:
        lines.append(gains)
    rm = results.get("reward_model", {})
    if rm.get("accuracy_heldout_labelers") is not None:
        lines.append(
            f"reward model: accuracy {rm.get('accuracy_train_labelers') or float('nan'):.3f} (training labelers), "
            f"{rm['accuracy_heldout_labelers']:.3f} (held-out labelers); labeler agreement {rm.get('labeler_agreement') or float('nan'):.3f}"
        )
    if results.get("judged_by") == "reward_model_proxy":
        lines.append("note: no built-in world, so the reward model judged the win rates: a proxy, not human judgement")
    elif results.get("judged_by") == "judge_reward_model":
        lines.append(f"note: no built-in world; the win rates are judged by {results.get('judge')}, a reward model the policies "
                     "were not trained against (rm_score_mean is the training reward model's: the proxy)")
    elif results.get("judged_by") == "judge_language_model":
        lines.append(f"note: no built-in world; the win rates are judged by {results.get('judge')}, a language model comparing each "
                     "answer with SFT's in both orders (judge: its mean preference for the model's answer; RM: the training "
                     "reward model's score, the proxy)")
    if results.get("judged_by") == "judge_reward_model":
        ind = results.get("judge_independence")
        if ind:
            lines.append(f"judge: trained on {ind['judge_prompts']} prompts, the reward model on {ind['reward_model_prompts']}; "
                         f"shared: {ind['shared_prompts']}" + ("" if not ind["shared_prompts"] else " (NOT independent)"))
    return "\n".join(lines)


def _ms(v: dict | None, fmt: str) -> str:
    if not v or v.get("mean") is None:
        return "-"
    return fmt.format(v["mean"]) + (f"±{fmt.format(v['sd']).lstrip('+')}" if v.get("sd") is not None else "")


def format_seeds(agg: dict) -> str:
    """The terminal summary of results over seeds: mean ± between-seed sd per model, pooled figures, claim verdicts."""
    from ..seeds import claim_line

    seeds = agg.get("seeds") or []
    cols = [("win vs SFT", "win_rate_vs_sft", "{:.2f}"), ("gold", "gold_score_mean", "{:.3f}"), ("halluc.", "hallucination_rate", "{:.2f}"),
            ("harmful", "harmful_compliance_rate", "{:.2f}"), ("truthful", "truthful_rate", "{:.2f}"),
            ("true+inform.", "truthful_and_informative_rate", "{:.2f}"), ("win novel", "win_rate_novel", "{:.2f}"),
            ("asks Q", "continues_with_question_rate", "{:.2f}"), ("LM loss", "pretrain_val_loss", "{:.3f}"),
            ("probes", "probe_accuracy", "{:.2f}"), ("judge", "judge_score_mean", "{:+.3f}"), ("RM", "rm_score_mean", "{:+.3f}")]
    # what no model measured (without a world: the gold judge's rates, the probes) is left out; the RM column only beside a judge
    cols = [c for c in cols if any((m.get(c[1]) or {}).get("mean") is not None for m in agg["models"].values())]
    if not any(c[1] == "judge_score_mean" for c in cols):
        cols = [c for c in cols if c[1] != "rm_score_mean"]
    head = f"{'model':<20}" + "".join(f"{c[0]:>15}" for c in cols)
    lines = [f"over {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± between-seed standard deviation", head, "-" * len(head)]
    for name, m in agg["models"].items():
        lines.append(f"{name:<20}" + "".join(f"{_ms(m.get(key), fmt):>15}" for _, key, fmt in cols))
    for name, m in agg["models"].items():
        if name == "sft" or m.get("mode") != "chat":
            continue
        w, g, h = m.get("win_rate_pooled") or {}, m.get("gold_gain_pooled") or {}, m.get("harmful_vs_sft_pooled") or {}
        parts = []
        if w.get("rate") is not None:
            parts.append(f"win vs SFT {w['rate']:.3f} [{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}] (n {w['n']})")
        if g.get("mean") is not None:
            parts.append(f"gold gain {g['mean']:+.4f} ± {g['se']:.4f} SE (n {g['n']})")
        if h.get("mean") is not None:
            parts.append(f"harmful compliance vs SFT {h['mean']:+.3f} ± {h['se']:.3f} SE (n {h['n']})")
        if parts:
            lines.append(f"pooled per prompt (for these trained models), {name}: " + "; ".join(parts))
    for v in agg.get("claims") or []:
        lines.append(claim_line(v, len(seeds)))
    return "\n".join(lines)

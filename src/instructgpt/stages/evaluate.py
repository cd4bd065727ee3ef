"""Evaluation like the paper: every model of a run answers the held-out prompts, then held-out labelers and the gold judge grade them.

Models: the pretrained model given the raw prompt ("GPT"), the pretrained model with a few-shot instruction prefix
("GPT prompted"), SFT, PPO, PPO-ptx, and any model added with ``--models name=path``. Measured for each:
win rate against SFT with a 95% interval (Figure 1) and a 1-7 Likert score, by the world's held-out labelers; the gold
judge's score and its metadata rates (fails the instruction, hallucination on closed-domain tasks, harmful compliance,
continues with another question, repetition); truthfulness on false-premise questions; toxicity with "respectful" and plain
prompts; the alignment tax (held-out pretraining loss and knowledge-probe accuracy); the reward model's score beside the gold
score (over-optimisation). Without a world (your own prompts) the reward model judges, and the results say it is a proxy.
Writes ``eval/results.json`` (schema in docs/eval.md), per-model responses, and ``eval/report.html``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
import zlib
from pathlib import Path
from typing import Any, ClassVar

from ..config import StageConfig, field, save_config
from ..errors import UserError
from ..evaluation import heldout_ids, heldout_lm_loss, mean, paired_gain, probe_accuracy, win_rate
from ..overopt import bon_kl
from ..report.text import format_table
from .reward import judge_independence
from ..models import check_model_ref
from ..rundir import (
    BEST_OF_N, PROMPTED, RUN_FILE, RUN_MODELS, STAGES, begin_output, completion, in_run, peak_memory, snapshots, finish_output, finished_models, finite_json, is_complete, own_output, read_host, read_timings, table_models,
)

RESULTS_SCHEMA_VERSION = 1
METRICS = ("win_rate_vs_sft", "win_rate_ci95", "likert_mean", "gold_score_mean", "rm_score_mean", "fails_instruction_rate",
           "hallucination_rate", "harmful_compliance_rate", "toxicity_rate_respectful", "toxicity_rate_plain",
           "continues_with_question_rate", "repetition_rate", "truthful_rate", "informative_rate", "truthful_and_informative_rate",
           "closed_domain_informative_rate", "harmful_informative_rate", "win_rate_novel", "win_rate_novel_ci95", "win_rate_null",
           "pretrain_val_loss", "probe_accuracy", "gold_gain_vs_sft", "gold_gain_by_set", "harmful_vs_sft")
# the sets judged by the held-out labelers against SFT: the win-rate set (new wording) and the held-out-knowledge set
WIN_SETS = ("winrate", "novel")


@dataclasses.dataclass
class EvalConfig(StageConfig):
    """Paper-style evaluation of every model in a run (see docs/eval.md for the results schema)."""

    stage: ClassVar[str] = "eval"
    presets: ClassVar[dict] = {
        "tiny": dict(n_winrate=24, n_closed_domain=8, n_false_premise=8, n_toxicity=8, n_harmful=8, n_novel=12, n_probes=20, max_new_tokens=24, lm_tokens=4000,
                     best_of_n=2, overopt_prompts=8, overopt_samples=4),
        "default": dict(n_winrate=200, n_closed_domain=80, n_false_premise=60, n_toxicity=80, n_harmful=60, n_novel=120, n_probes=200, max_new_tokens=48, lm_tokens=40000,
                        best_of_n=4, overopt_prompts=64, overopt_samples=16),
        "gpu": dict(n_winrate=1000, n_closed_domain=300, n_false_premise=300, n_toxicity=400, n_harmful=150, n_novel=300, n_probes=1000, max_new_tokens=96, lm_tokens=400000,
                    best_of_n=16, overopt_prompts=256, overopt_samples=64),
    }

    run: str = field("", "run directory whose models are evaluated (its eval/ folder receives the results)")
    out: str = field("", "output folder (default: <run>/eval)")
    models: list[str] = field([], "extra models as name=path (folder or hub id), evaluated like the others")
    seed_runs: list[str] = field([], "aggregate these evaluated runs (one per seed, each with eval/results.json) into --out "
                                     "instead of evaluating; a --run holding seed-N/ folders (igpt run --seeds) is aggregated "
                                     "the same way")
    prompts: str = field("", "without a world: held-out prompts ({\"prompt\"} or {\"messages\"}; any data source igpt reads); "
                             "--judge (or else the run's reward model, a proxy) judges")
    heldout_share: float = field(0.0, "evaluate on only the share of --prompts that igpt ppo --heldout-share kept out of training "
                                      "(0 = all of --prompts)", ge=0.0, lt=1.0)
    judge: str = field("", "without a world: the judge of the win rates, a folder or hub id of a reward model (a 1-output sequence "
                           "classifier) other than the one the policies were trained against, or of a causal LM, which compares "
                           "each answer with SFT's in both orders (lm_judge.JUDGE_PROMPT); the run's reward model is then "
                           "reported beside it, as the proxy (default: the run's reward model judges, reported as a proxy)")
    n_winrate: int = field(200, "held-out prompts for win rates and metadata", ge=1)
    n_closed_domain: int = field(80, "closed-domain prompts for the hallucination rate", ge=0)
    n_false_premise: int = field(60, "false-premise questions for truthfulness", ge=0)
    n_toxicity: int = field(80, "toxicity prompts (half asking for respectful output)", ge=0)
    n_harmful: int = field(60, "harmful requests (the world's harmful set), with the win-rate set's, for harmful compliance", ge=0)
    n_novel: int = field(120, "held-out-knowledge prompts (the world's novel set: knowledge no SFT, RM or PPO prompt asks "
                              "for), with their own win rate", ge=0)
    n_probes: int = field(200, "knowledge probes for the alignment tax", ge=0)
    lm_tokens: int = field(40000, "held-out pretraining tokens for the alignment-tax loss", ge=0)
    best_of_n: int = field(0, "also evaluate SFT's best of N samples by the reward model (0 or 1 = off)", ge=0)
    overopt_prompts: int = field(0, "over-optimisation curves (best-of-n and the RL policies along their runs: gold and reward-model "
                                    "score against sqrt(KL to SFT)) on this many held-out prompts (0 = off; needs the world)", ge=0)
    overopt_samples: int = field(16, "SFT samples per prompt for the best-of-n curve (n = 1, 2, 4, ... up to it)", ge=1)
    max_new_tokens: int = field(48, "response length limit", ge=1)
    temperature: float = field(0.7, "sampling temperature of the evaluated models", ge=0.0)
    top_p: float = field(0.95, "nucleus sampling mass", ge=0.0, le=1.0)
    batch_size: int = field(64, "prompts per sampling batch", ge=1)
    seed: int = field(0, "seed for sampling and labeler noise", ge=0)
    device: str = field("auto", "auto, cpu, cuda or cuda:N")
    report: bool = field(True, "write eval/report.html")
    overwrite: bool = field(False, "replace an existing eval folder")
    resume: bool = field(False, "accepted for symmetry with the training stages (evaluation restarts from scratch)")


@dataclasses.dataclass
class Candidate:
    name: str
    path: str
    mode: str  # "chat", "plain" (raw prompt, a pretrained model) or "few_shot"


def _candidates(cfg: EvalConfig, run: Path | None) -> list[Candidate]:
    cands: list[Candidate] = []
    if run is not None:
        for m, p in finished_models(run):
            if m.role == "pretrained":
                cands.append(Candidate(m.key, str(p), "plain"))
                cands.append(Candidate(PROMPTED.key, str(p), "few_shot"))
            else:
                cands.append(Candidate(m.key, str(p), "chat"))
    for spec in cfg.models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--models: expected name=path, got '{spec}'")
        if not Path(path).exists() and "/" not in path:
            raise UserError(f"--models: model not found: {path}")
        check_model_ref(path, f"--models {name}: model")
        cands.append(Candidate(name, path, "chat"))
    if not any(c.name == "sft" for c in cands):
        raise UserError("no SFT model to compare against: the run has no complete sft/ folder (or pass --models sft=PATH)")
    order = [m.key for m in table_models()]  # the recipe's order, whether a model is the run's or given with --models
    return sorted(cands, key=lambda c: order.index(c.name) if c.name in order else len(order))


def _generate(model: Any, tok: Any, prompts: list[Any], mode: str, cfg: EvalConfig, seed: int) -> list[str]:
    from ..sampling import SamplingParams, make_sampler, decode_responses, encode_prompt
    from ..tokenizer import stop_token_ids

    stops = stop_token_ids(tok, getattr(model, "generation_config", None))
    ids = [encode_prompt(tok, p, chat=(mode == "chat")) for p in prompts]
    sampler = make_sampler(model, tok, batch_size=cfg.batch_size)
    params = SamplingParams(cfg.max_new_tokens, cfg.temperature, 0, cfg.top_p, seed, stops)
    texts = decode_responses(tok, sampler.generate(ids, params), stops)
    if mode == "few_shot":  # the few-shot examples are separated by a blank line: the answer ends where the next example would start
        texts = [t.strip("\n").split("\n\n")[0] for t in texts]
    return texts


def stream_seed(seed: int, name: str) -> int:
    """Each model's own sampling stream: its evaluation samples share no random draws with another model's (nor SFT's
    resample with SFT's sample), so SFT against its resample is the null case for any model against SFT."""
    return (seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2 ** 31)


def best_of_n(rm: Any, prompts: list[Any], samples: list[list[str]]) -> list[str]:
    """For each prompt, the sample the reward model scores highest (the first of equals); ``samples[k][i]`` is the k-th
    sample for prompt i."""
    scores = [rm.score_texts(prompts, s) for s in samples]
    return [samples[max(range(len(samples)), key=lambda k: scores[k][i])][i] for i in range(len(prompts))]


def _harmful_items(records: dict) -> list[tuple[str, int]]:
    """(set, index) of every harmful request evaluated: those of the win-rate set and the world's harmful set."""
    return ([("winrate", i) for i, r in enumerate(records["winrate"]) if r["category"] == "harmful"]
            + [("harmful", i) for i in range(len(records.get("harmful", [])))])


def _rate(flags: list[dict], key: str) -> float:
    return mean([1.0 if f.get(key) else 0.0 for f in flags])


def _untrue(flags: dict) -> bool:
    return bool(flags.get("untruthful") or flags.get("hallucination"))


def run(cfg: EvalConfig) -> Path:
    run_dir = Path(cfg.run) if cfg.run else None
    out = Path(cfg.out) if cfg.out else (in_run(run_dir, "eval") if run_dir else None)
    if out is None:
        raise UserError("--out: give an output folder (or --run)")
    seed_runs = [Path(p) for p in cfg.seed_runs]
    if not seed_runs and run_dir is not None and not in_run(run_dir, "sft").exists():  # igpt run --seeds: its seed-N/ folders
        seed_runs = sorted((p for p in run_dir.glob("seed-*") if p.is_dir() and p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
    if seed_runs:
        from ..seeds import write_aggregate

        if cfg.models:
            raise UserError("--models: cannot be combined with aggregating seed runs")
        with own_output(out):
            return write_aggregate(seed_runs, out, cfg.report)
    if run_dir is not None and not cfg.prompts:
        cfg = _as_the_run_did(cfg, run_dir)
    with own_output(out):
        return _evaluate(cfg, run_dir, out)


def _as_the_run_did(cfg: EvalConfig, run_dir: Path) -> EvalConfig:
    """A run of igpt run on your own model and data (its run.json holds the evaluation's inputs) is evaluated again on the
    same held-out prompts, by the same judge, against the same SFT model, unless other options are given."""
    meta_path = run_dir / RUN_FILE
    saved = (json.loads(meta_path.read_text()).get("eval") or {}) if meta_path.is_file() else {}
    if not saved:
        return cfg
    named = {m.partition("=")[0] for m in cfg.models}
    return dataclasses.replace(cfg, prompts=saved.get("prompts", ""), heldout_share=saved.get("heldout_share", 0.0),
                               judge=cfg.judge or saved.get("judge", ""),
                               models=list(cfg.models) + [m for m in saved.get("models", []) if m.partition("=")[0] not in named])


def _evaluate(cfg: EvalConfig, run_dir: Path | None, out: Path) -> Path:
    import torch

    from ..models import resolve_device
    from ..sampling import load_model

    world = None
    if run_dir is not None and in_run(run_dir, "world", "world.json").is_file():
        from ..world import World

        world = World.load(in_run(run_dir, "world"))
    if world is None and not cfg.prompts:
        raise UserError("without a built-in world in the run, give --prompts FILE of held-out prompts")
    cands = _candidates(cfg, run_dir)
    rm_path = in_run(run_dir, "rm") if run_dir is not None and is_complete(in_run(run_dir, "rm")) else None
    if world is not None and cfg.judge:
        raise UserError("--judge: the run has a built-in world, whose held-out labelers and gold judge are the referee; "
                        "--judge is for runs on your own prompts")
    if cfg.judge:
        check_model_ref(cfg.judge, "--judge: the judge")
    if world is None and rm_path is None and not cfg.judge:
        raise UserError("without a world, give --judge REWARD_MODEL (or a run with a complete rm/ folder, which then judges as a proxy)")
    work = begin_output(out, overwrite=cfg.overwrite, resume=False)
    dev = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    t_start = time.time()

    # ---- the evaluation sets
    if world is not None:
        sets = world.eval_sets()
        records = {
            "winrate": sets["winrate"][: cfg.n_winrate],
            "closed_domain": sets["closed_domain"][: cfg.n_closed_domain],
            "false_premise": sets["false_premise"][: cfg.n_false_premise],
            "toxicity": sets["toxicity"][: cfg.n_toxicity],
        }
        if sets.get("harmful") and cfg.n_harmful > 0:  # worlds made before the harmful set have none
            records["harmful"] = sets["harmful"][: cfg.n_harmful]
        if sets.get("novel") and cfg.n_novel > 0:  # worlds made before the held-out-knowledge set have none
            records["novel"] = sets["novel"][: cfg.n_novel]
        probes = world.probes()[: cfg.n_probes]
        heldout_docs = world.corpus("heldout")
        judge = world.judge()
        labelers = world.labelers("heldout")
    else:
        from ..data.chat import heldout_prompts, read_prompts

        rows = read_prompts(cfg.prompts)
        if cfg.heldout_share > 0:
            rows = heldout_prompts(rows, cfg.heldout_share, heldout=True)
            if not rows:
                raise UserError(f"--prompts: none of {cfg.prompts} falls in the --heldout-share {cfg.heldout_share:g}")
        rows = rows[: cfg.n_winrate]
        records = {"winrate": [{"id": r.get("id", f"p{i}"), "prompt": r.get("prompt", ""), "messages": r.get("messages")} for i, r in enumerate(rows)]}
        probes, heldout_docs, judge, labelers = [], [], None, []

    def prompt_input(rec: dict, mode: str) -> Any:
        if mode == "plain":
            return world.render_plain(rec) if world is not None else rec["prompt"]
        if mode == "few_shot":
            return world.render_few_shot(rec) if world is not None else rec["prompt"]
        return rec.get("messages") or rec["prompt"]

    # ---- every model answers every set
    sft_path = next(c.path for c in cands if c.name == "sft")  # _candidates makes sure there is one
    # best-of-n is judged by the world: without one the reward model that picked it would judge it too
    best_of = cfg.best_of_n if rm_path is not None and world is not None else 0
    sft_samples: list[dict[str, list[str]]] = []
    responses: dict[str, dict[str, list[str]]] = {}
    lm: dict[str, dict[str, float]] = {}
    for c in cands:
        model, tok = load_model(c.path, dev)
        responses[c.name] = {}
        for set_name, recs in records.items():
            if c.mode != "chat" and set_name != "winrate" and world is None:
                continue
            responses[c.name][set_name] = _generate(model, tok, [prompt_input(r, c.mode) for r in recs], c.mode, cfg,
                                                    stream_seed(cfg.seed, c.name))
        if c.name == "sft":  # a second, independent SFT sample: SFT's win rate against itself measures the noise floor
            responses["sft_resample"] = {s: _generate(model, tok, [prompt_input(r, "chat") for r in records[s]], "chat", cfg,
                                                      stream_seed(cfg.seed, "sft_resample")) for s in WIN_SETS if s in records}
            if best_of > 1:  # N more samples per prompt, independent of the one SFT is judged by; the reward model picks below
                sft_samples = [{s: _generate(model, tok, [prompt_input(r, "chat") for r in recs], "chat", cfg,
                                             stream_seed(cfg.seed, f"best_of_n:{k}"))
                                for s, recs in records.items()} for k in range(1, best_of + 1)]
        if c.mode != "few_shot":
            lm[c.name] = {  # without a world there is no held-out corpus or probe set: not measured (None), not NaN
                "pretrain_val_loss": heldout_lm_loss(model, heldout_ids(tok, heldout_docs, cfg.lm_tokens)) if heldout_docs else None,
                "probe_accuracy": probe_accuracy(model, tok, probes) if probes else None,
            }
        else:
            lm[c.name] = dict(lm.get("pretrained", {}))
        del model

    # ---- reward-model scores (and SFT's best of N by them)
    rm_scores: dict[str, list[float]] = {}
    overopt: dict | None = None
    if rm_path is not None:
        from ..reward_model import load_reward_model

        rm = load_reward_model(str(rm_path), dev)
        if best_of > 1:
            responses[BEST_OF_N.key] = {s: best_of_n(rm, [prompt_input(r, "chat") for r in recs], [x[s] for x in sft_samples])
                                        for s, recs in records.items()}
            cands.insert(next(i for i, c in enumerate(cands) if c.name == "sft") + 1, Candidate(BEST_OF_N.key, sft_path, "chat"))
            lm[BEST_OF_N.key] = dict(lm["sft"])
        wr = records["winrate"]
        for name, sets_ in responses.items():
            rm_scores[name] = list(rm.score_texts([r.get("messages") or r["prompt"] for r in wr], sets_["winrate"]))
        if cfg.overopt_prompts > 0 and world is not None and run_dir is not None:
            from ..overopt import measure

            rl = {m.key: [(s, str(p)) for s, p in snapshots(folder)] + [(int(completion(folder).get("step", 0)), str(folder))]
                  for m, folder in finished_models(run_dir) if m.role == "rl"}
            recs = records["winrate"][: cfg.overopt_prompts]
            overopt = measure(sft_path, rl, recs, [prompt_input(r, "chat") for r in recs], judge,
                              rm, cfg.overopt_samples, cfg.max_new_tokens, cfg.seed + 31, dev, cfg.batch_size)
        del rm
    judge_scores: dict[str, list[float]] = {}  # a judge reward model's score of each model's answers
    judge_prefs: dict[str, list[float]] = {}  # a judge language model's preference for each model's answer over SFT's
    if world is None and cfg.judge:  # the referee: a model the policies were not trained against
        from .. import lm_judge

        wr = records["winrate"]
        wr_prompts = [r.get("messages") or r["prompt"] for r in wr]
        if lm_judge.is_causal_lm(cfg.judge):
            referee = lm_judge.load_judge(cfg.judge, dev)
            judge_prefs = {c.name: referee.preference(wr_prompts, responses[c.name]["winrate"],
                                                      responses["sft_resample" if c.name == "sft" else "sft"]["winrate"]) for c in cands}
        else:
            from ..reward_model import load_reward_model

            referee = load_reward_model(cfg.judge, dev)
            judge_scores = {name: list(referee.score_texts(wr_prompts, sets_["winrate"])) for name, sets_ in responses.items()}
        del referee
    _save_responses(work, records, responses)

    # ---- grading
    judged_by = ("heldout_labelers_and_gold_judge" if world else "judge_language_model" if judge_prefs
                 else "judge_reward_model" if cfg.judge else "reward_model_proxy")
    results: dict[str, Any] = {"schema_version": RESULTS_SCHEMA_VERSION, "judged_by": judged_by, "models": {}}
    if cfg.judge:
        results["judge"] = str(cfg.judge)
        results["judge_independence"] = judge_independence(cfg.judge, rm_path) if rm_path is not None else None
        shared = (results["judge_independence"] or {}).get("shared_prompts")
        if shared:
            print(f"igpt eval: warning: the judge {cfg.judge} was trained on {shared} prompt(s) the reward model {rm_path} "
                  "also read: its win rates are not independent of the proxy", file=sys.stderr)
    sft_win = responses["sft"]["winrate"]
    golds: dict[str, dict[str, list[float]]] = {}  # model -> set -> gold score per prompt, for the paired gains
    harms: dict[str, list[float]] = {}  # model -> 1.0 where it complied with a harmful request, for the paired difference
    for c in cands:
        resp = responses[c.name]
        against = responses["sft_resample" if c.name == "sft" else "sft"]  # SFT's own entry: its resample, the null
        m: dict[str, Any] = {"mode": c.mode, "path": c.path}
        if world is not None:
            judged = {s: _labelers_judge(labelers, records[s], resp[s], against[s], cfg.seed + offset)
                      for s, offset in zip(WIN_SETS, (0, 7)) if s in records}
            outcomes, likerts = judged["winrate"]
            if "novel" in judged:
                m["win_rate_novel"], m["win_rate_novel_ci95"] = win_rate(judged["novel"][0])
                m["n_comparisons_novel"] = len(judged["novel"][0])
            graded = {s: [judge.score(r, t) for r, t in zip(records[s], resp[s])] for s in records}
            golds[c.name] = {s: [g.score for g in gs] for s, gs in graded.items()}
            flags = [g.flags for g in graded["winrate"]]
            tox = [(r["meta"].get("respectful", False), g.flags) for r, g in zip(records["toxicity"], graded["toxicity"])]
            m.update(
                likert_mean=mean(likerts),
                gold_score_mean=mean([g.score for g in graded["winrate"]]),
                fails_instruction_rate=_rate(flags, "fails_instruction"),
                continues_with_question_rate=_rate(flags, "continues_with_question"),
                repetition_rate=_rate(flags, "repetition"),
                harmful_compliance_rate=mean(harms.setdefault(c.name, [1.0 if graded[s][i].flags.get("harmful_compliance") else 0.0
                                                                       for s, i in _harmful_items(records)])),
                hallucination_rate=_rate([g.flags for g in graded["closed_domain"]], "hallucination"),
                closed_domain_informative_rate=1 - _rate([g.flags for g in graded["closed_domain"]], "uninformative"),
                harmful_informative_rate=mean([0.0 if graded[s][i].flags.get("uninformative") else 1.0 for s, i in _harmful_items(records)]),
                # TruthfulQA's three: truthful (no false claim), informative (says something about what was asked), both
                truthful_rate=mean([0.0 if _untrue(g.flags) else 1.0 for g in graded["false_premise"]]),
                informative_rate=1 - _rate([g.flags for g in graded["false_premise"]], "uninformative"),
                truthful_and_informative_rate=mean([0.0 if _untrue(g.flags) or g.flags.get("uninformative") else 1.0
                                                    for g in graded["false_premise"]]),
                toxicity_rate_respectful=_rate([f for resp_, f in tox if resp_], "toxic"),
                toxicity_rate_plain=_rate([f for resp_, f in tox if not resp_], "toxic"),
            )
        elif judge_prefs:  # the judge LM compared the two answers directly
            from ..lm_judge import outcomes as pairwise_outcomes

            outcomes = pairwise_outcomes(judge_prefs[c.name])
            m["judge_score_mean"] = mean(judge_prefs[c.name])
        else:
            by = judge_scores or rm_scores
            a_s, b_s = by[c.name], by["sft_resample" if c.name == "sft" else "sft"]
            outcomes = [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in zip(a_s, b_s)]
            if judge_scores:
                m["judge_score_mean"] = mean(judge_scores[c.name])
        rate, ci = win_rate(outcomes)
        m.update(win_rate_vs_sft=rate, win_rate_ci95=ci, n_comparisons=len(outcomes))
        m["rm_score_mean"] = mean(rm_scores[c.name]) if c.name in rm_scores else None
        if c.name == BEST_OF_N.key:
            m.update(best_of_n=best_of, kl_from_sft=bon_kl(best_of))
        m.update(lm.get(c.name, {}))
        for k in METRICS:
            m.setdefault(k, None)
        results["models"][c.name] = m

    if world is not None and "sft" in golds:
        resample = {s: [judge.score(r, t).score for r, t in zip(records[s], responses["sft_resample"][s])]
                    for s in WIN_SETS if s in records}
        for name, m in results["models"].items():
            if name == "sft":  # the noise floor: SFT's second sample against its first, on the win-rate prompts
                m["gold_gain_vs_sft"] = paired_gain(resample["winrate"], golds["sft"]["winrate"])
                m["gold_gain_by_set"] = {s: paired_gain(resample[s], golds["sft"][s]) for s in resample}
            else:
                m["gold_gain_vs_sft"] = paired_gain([x for s in records for x in golds[name][s]],
                                                    [x for s in records for x in golds["sft"][s]])
                m["gold_gain_by_set"] = {s: paired_gain(golds[name][s], golds["sft"][s]) for s in records}
                m["harmful_vs_sft"] = paired_gain(harms[name], harms["sft"])
    null = results["models"].get("sft") or {}
    for m in results["models"].values():  # SFT against its own resample, beside every win rate: the comparison's null
        m["win_rate_null"] = null.get("win_rate_vs_sft")
        m["win_rate_novel_null"] = null.get("win_rate_novel")
    if world is not None:
        results["reference"] = _reference(world, judge, labelers, records["winrate"], sft_win, cfg.seed)
        results["sample_sizes"] = {  # how many prompts each rate is over
            "winrate": len(records["winrate"]),
            "harmful": len(_harmful_items(records)),
            "closed_domain": len(records["closed_domain"]),
            "false_premise": len(records["false_premise"]),
            "novel": len(records.get("novel", [])),
            "toxicity_respectful": sum(1 for r in records["toxicity"] if r["meta"].get("respectful", False)),
            "toxicity_plain": sum(1 for r in records["toxicity"] if not r["meta"].get("respectful", False)),
        }
    results["reward_model"] = _reward_model_summary(run_dir)
    results["timings_s"] = read_timings(run_dir)
    results["timings_s"]["eval"] = round(time.time() - t_start, 1)
    results["peak_memory_mb"] = _peak_memory(run_dir)
    results["config"] = _run_config(run_dir, cfg)
    results["host"] = read_host(run_dir)
    results["samples"] = _side_by_side(records, responses, [c.name for c in cands], world)
    results["training_curves"] = _curves(run_dir)
    if overopt is not None:
        results["overoptimization"] = overopt
    (work / "results.json").write_text(json.dumps(finite_json(results), indent=1, ensure_ascii=False), encoding="utf-8")
    if cfg.report:
        from ..report.html import write_report

        write_report(results, work / "report.html")
    save_config(cfg, work)
    final = finish_output(work, out, {"models": list(results["models"])})
    print(format_table(results))
    return final


def _labelers_judge(labelers: list, recs: list[dict], answers: list[str], sft: list[str], seed: int) -> tuple[list[float], list[int]]:
    """Each prompt's held-out labeler (round robin, noise draws fixed by the seed and the prompt's position) compares the
    answer with SFT's in both orders under the same draws and averages (1, 0.75, 0.5, 0.25 or 0: no draw favours the
    first position, and swapping the answers gives 1 - p), and rates it 1-7: the same judgement for every model and for
    the reference."""
    outcomes, likerts = [], []
    for i, (rec, a, b) in enumerate(zip(recs, answers, sft)):
        lab = labelers[i % len(labelers)]
        outcomes.append(lab.prefer_both_orders(rec, a, b, random.Random(seed * 1_000_003 + i)))
        likerts.append(lab.likert(rec, a, random.Random(seed * 1_000_033 + i)))
    return outcomes, likerts


def _reference(world: Any, judge: Any, labelers: list, recs: list[dict], sft: list[str], seed: int) -> dict:
    """The world's reference answers against SFT's, by the same labelers with the same draws: the ceiling of the win rate.

    A policy that answered every prompt as well as the world's ideal demonstration would win this often; SFT's correct
    answers tie with the reference as often as labelers' noise allows, so the ceiling sits below 1.
    """
    refs = [world.demo_for(r) for r in recs]
    outcomes, likerts = _labelers_judge(labelers, recs, refs, sft, seed)
    rate, ci = win_rate(outcomes)
    return {"win_rate_vs_sft": rate, "win_rate_ci95": ci, "n_comparisons": len(outcomes), "likert_mean": mean(likerts),
            "gold_score_mean": mean([judge.score(r, t).score for r, t in zip(recs, refs)])}


def _save_responses(work: Path, records: dict, responses: dict) -> None:
    folder = work / "responses"
    folder.mkdir(exist_ok=True)
    for name, sets in responses.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for set_name, texts in sets.items():
                for rec, text in zip(records[set_name], texts):
                    f.write(json.dumps({"set": set_name, "id": rec["id"], "response": text}, ensure_ascii=False) + "\n")


def _side_by_side(records: dict, responses: dict, names: list[str], world: Any, n: int = 8) -> list[dict]:
    """A few held-out prompts with every model's answer, chosen to span the task categories."""
    recs = records["winrate"]
    seen, picks = set(), []
    for i, r in enumerate(recs):
        cat = r.get("category", "")
        if cat not in seen:
            seen.add(cat)
            picks.append(i)
        if len(picks) >= n:
            break
    out = []
    for i in picks:
        rec = recs[i]
        row = {"id": rec["id"], "category": rec.get("category"), "prompt": rec.get("prompt") or json.dumps(rec.get("messages")), "answers": {}}
        if world is not None:
            row["plain_prompt"] = world.render_plain(rec)
        for name in names:
            row["answers"][name] = responses[name]["winrate"][i]
        out.append(row)
    return out


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _reward_model_summary(run: Path | None) -> dict:
    keys = ("accuracy_train_labelers", "accuracy_heldout_labelers", "labeler_agreement", "gold_correlation", "accuracy_vs_gold",
            "accuracy_vs_gold_by_family", "families_against_gold")
    summary: dict[str, Any] = {k: None for k in keys}
    if run is None:
        return summary
    for row in _read_jsonl(in_run(run, "rm", "metrics.jsonl")):
        for k in keys:
            if row.get(k) is not None:
                summary[k] = row[k]
    return summary


def _peak_memory(run: Path | None) -> dict:
    """Each stage's peak memory, as its completion record holds it (``peak_rss_mb``, and ``peak_cuda_mb`` on a GPU),
    and the evaluation's own so far."""
    out: dict[str, dict] = {}
    if run is not None:
        for s in STAGES:
            mem = {k: v for k, v in completion(in_run(run, s.table)).items() if k.startswith("peak_")}
            if mem:
                out[s.folder] = mem
    out["eval"] = peak_memory()
    return out


def _curves(run: Path | None) -> dict:
    curves: dict[str, Any] = {}
    if run is None:
        return curves
    for m in RUN_MODELS:
        rows = _read_jsonl(run / m.folder / "metrics.jsonl") if m.role == "rl" else []
        if rows:
            keys = ("reward", "score", "kl", "kl_k3", "gold_score", "ptx_loss")  # score: the reward model's, normalised
            curves[m.key] = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))] for k in keys}
    return curves


def _run_config(run: Path | None, cfg: EvalConfig) -> dict:
    info: dict[str, Any] = {"seed": cfg.seed, "eval": dataclasses.asdict(cfg)}
    if run is not None and (run / RUN_FILE).is_file():
        info.update(json.loads((run / RUN_FILE).read_text()))
    return info

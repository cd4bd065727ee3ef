"""Step 3b, the reward model: learn to score responses so that better-ranked ones score higher.

The story of the stage: read the comparisons (the run's comparison store by default, or ranked / pairwise / Anthropic HH
JSONL files); keep the held-out ones apart; turn the SFT model into a sequence-classification model with a scalar head
on the last token; train one epoch with InstructGPT's loss, where all C(K, 2) pairs of a prompt form ONE batch element
and each response gets ONE forward pass (``--shuffle-pairs`` instead trains on the pairs as independent examples, the
ablation that overfits); then add a bias so the labelers' demonstrations average a reward of 0, store the std, and
measure: pairwise accuracy on held-out comparisons from training and from held-out labelers next to the labelers' own
agreement (the ceiling), and, on the built-in world, the correlation of the reward with the gold judge's score.

Output ``<run>/rm/``: a standard Hugging Face sequence-classification folder (``AutoModelForSequenceClassification``
loads it) with ``config.reward_bias`` and ``config.reward_std``, ``reward_stats.json`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

from ..config import TrainConfig, field, save_config
from ..errors import UserError
from ..rundir import STORE_FILE, begin_output, check_output, finish_output, in_run, partial_path

PAPER = {"accuracy_train_labelers": 0.724, "accuracy_heldout_labelers": 0.696, "labeler_agreement": 0.726}


@dataclasses.dataclass
class ComparisonsConfig(TrainConfig):
    """What every trainer on comparisons reads (the reward model, DPO): the comparisons and their held-out split."""

    data: list[str] = field([], "comparisons, ranked (K-way), pairwise (prompt/chosen/rejected, as strings or chat messages: TRL's "
                                "and UltraFeedback's) or HH dialogues: each a JSONL / JSON / parquet / arrow file, a folder of them, a dataset saved with save_to_disk, or a dataset id (name[:config][[split]]), or a comparisons.sqlite "
                                "(default: <run>/comparisons/comparisons.sqlite)")
    columns: str = field("", "read these fields under other column names: NAME=COLUMN,... (for example chosen=pos,rejected=neg)")
    eval_data: list[str] = field([], "held-out comparisons for accuracy (default: the store's held-out split, else --val-fraction of --data)")
    max_len: int = field(0, "longest (prompt + response) in tokens; longer ones keep their end (0 = the model's context)", ge=0)
    group_pairs: bool = field(True, "merge pairwise lines of the same prompt and labeler into one batch element")
    empty_responses: str = field("skip", "empty responses in --data files: skip (reported), keep, or error", choices=("skip", "keep", "error"))
    val_fraction: float = field(0.05, "share of file comparisons held out when there is no held-out split or --eval-data", ge=0.0, le=0.5)
    max_comparisons: int = field(0, "train on at most this many comparisons (0 = all)", ge=0)
    judge_share: float = field(0.0, "set this share of --data's prompts aside for a judge reward model (chosen by a hash of the "
                                    "prompt, the same on every run): never trained or validated on here (0 = none set aside)",
                               ge=0.0, lt=1.0)
    as_judge: bool = field(False, "train on the share --judge-share sets aside instead, and on nothing else: the judge of igpt run's "
                                  "evaluation, independent of the reward model trained on the rest")


@dataclasses.dataclass
class RewardConfig(ComparisonsConfig):
    """Train a reward model on K-way rankings (all pairs of a prompt in one batch element) or pairwise files."""

    stage: ClassVar[str] = "rm"
    presets: ClassVar[dict] = {
        "tiny": dict(batch_size=8, lr=1e-3, warmup_steps=2, eval_every=0, checkpoint_every=20),
        "default": dict(batch_size=16, lr=1.2e-3, warmup_steps=4, eval_every=25, checkpoint_every=20),
        "gpu": dict(batch_size=64, lr=3e-5, warmup_steps=10, eval_every=50, checkpoint_every=100),
    }

    run: str = field("", "run directory; reads <run>/comparisons, <run>/sft, <run>/world; writes <run>/rm")
    out: str = field("", "output folder (overrides <run>/rm)")
    model: str = field("", "backbone: a causal LM folder or hub id (default: <run>/sft)")
    world: str = field("", "world folder for the demonstrations and the gold judge (default: <run>/world when it exists)")
    demonstrations: str = field("", "demonstrations JSONL for the reward bias (default: the world's; else the best-ranked responses)")
    epochs: int = field(1, "passes over the training comparisons (InstructGPT: 1)", ge=1)
    batch_size: int = field(16, "comparisons (prompts with all their pairs) per micro-batch per process", ge=1)
    lr: float = field(6e-4, "peak learning rate", gt=0.0)
    min_lr_ratio: float = field(0.1, "final learning rate as a fraction of the peak (cosine decay; InstructGPT: 0.1)", ge=0.0, le=1.0)
    warmup_steps: int = field(4, "linear warmup steps", ge=0)
    weight_decay: float = field(0.0, "AdamW weight decay on weight matrices", ge=0.0)
    dropout: float = field(0.0, "residual dropout while training", ge=0.0, le=0.9)
    shuffle_pairs: bool = field(False, "ablation: train on the pairs shuffled as independent examples (overfits, InstructGPT 3.5)")
    eval_every: int = field(25, "held-out accuracy every N steps (0 = only at the end)", ge=0)
    checkpoint_every: int = field(20, "checkpoint every N steps (and at the end)", ge=0)
    seed: int = field(0, "random seed (head init, data order)", ge=0)


# ---------------------------------------------------------------------------------------------- inputs
def comparison_paths(cfg: Any, stage: str, model_is: str) -> dict[str, Any]:
    """Where a trainer on comparisons (``cfg.run``, ``cfg.out``, ``cfg.model``, ``cfg.data``) reads and writes: the
    run's SFT model and comparison store by default, ``<run>/<stage>`` out; errors name the missing option."""
    run = Path(cfg.run) if cfg.run else None
    out = Path(cfg.out) if cfg.out else (in_run(run, stage) if run else None)
    if out is None:
        raise UserError("--out: give an output folder (or --run)")
    model = cfg.model or (str(in_run(run, "sft")) if run else "")
    if not model:
        raise UserError(f"--model: give {model_is} (or --run with an sft model in it)")
    if run and not cfg.model and not in_run(run, "sft", "config.json").is_file():
        raise UserError(f"{in_run(run, 'sft')} is missing: run igpt sft first, or pass --model")
    data = list(cfg.data) or ([str(in_run(run, "label", STORE_FILE))] if run else [])
    if not data:
        raise UserError("--data: give comparison files or a comparisons.sqlite (or --run)")
    return {"run": run, "out": out, "model": model, "data": data}


def _paths(cfg: RewardConfig) -> dict[str, Any]:
    paths = comparison_paths(cfg, "rm", "the backbone model")
    run = paths.pop("run")
    world = Path(cfg.world) if cfg.world else (in_run(run, "world") if run and in_run(run, "world").exists() else None)
    return {**paths, "world": world}


def comparison_dry_run(stage: str, cfg: Any, paths: dict, models: list[tuple[str, Any, bool, bool]]) -> None:
    """``--dry-run`` of a trainer on comparisons: its micro-batch holds ``batch_size`` comparisons, each with every
    response (up to the data's largest K), each up to ``max_len`` tokens (the model's context by default)."""
    from ..memory import context_of, dry_run

    train, _, _ = load_data(cfg, paths["data"])
    k = max(len(c.responses) for c in train)
    seq_len = cfg.max_len or context_of(paths["model"]) or 2048
    dry_run(stage, cfg, models, cfg.batch_size * k * seq_len, seq_len)


class ComparisonSteps:
    """The order in which a trainer on comparisons sees them: each epoch a fresh shuffle (the same on every rank, from
    the seed), cut into steps of ``batch_size`` x ``grad_accum`` x world size comparisons; each rank takes every
    world-size-th of a step's, in micro-batches of ``batch_size``."""

    def __init__(self, n: int, cfg: Any, d: Any):
        self.n, self.seed, self.batch_size, self.d = n, cfg.seed, cfg.batch_size, d
        self.per_step = cfg.batch_size * cfg.grad_accum * d.world_size
        # under DDP every rank must take part in every step, so a short last step is dropped
        self.steps_per_epoch = max(1, n // self.per_step if d.enabled else math.ceil(n / self.per_step))
        self.total = self.steps_per_epoch * cfg.epochs

    def mine(self, step: int) -> list[int]:
        """This rank's comparisons (indices) of ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        order = list(range(self.n))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order[pos * self.per_step : (pos + 1) * self.per_step][self.d.rank :: self.d.world_size]

    def micro_batches(self, mine: list[int]) -> list[list[int]]:
        """``mine`` in micro-batches (one empty one when the rank has none, so it still joins the gradient sync)."""
        return [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)] or [[]]


def load_data(cfg: RewardConfig, data: list[str]) -> tuple[list, list, Any]:
    """(training comparisons, held-out comparisons, skip report); pairwise lines grouped by prompt with --group-pairs."""
    import hashlib

    from ..data.preferences import SkipReport, group_pairwise, prompt_key, read_sources
    from ..data.sources import parse_columns

    skips = SkipReport()
    columns = parse_columns(cfg.columns)
    comps = judge_part(read_sources(data, cfg.empty_responses, skips, columns), cfg.judge_share, cfg.as_judge)
    train = [c for c in comps if not c.heldout]
    held = [c for c in comps if c.heldout]
    if cfg.eval_data:
        extra = read_sources(list(cfg.eval_data), cfg.empty_responses, skips, columns)
        for c in extra:
            c.heldout = True
        held += extra
    elif not held and cfg.val_fraction > 0:
        # hold out whole prompts (by a hash of the prompt), so no prompt is both trained and evaluated on
        def frac(c: Any) -> float:
            return int(hashlib.sha1(prompt_key(c.prompt).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

        held = [c for c in train if frac(c) < cfg.val_fraction]
        train = [c for c in train if frac(c) >= cfg.val_fraction]
    if not train:
        part = " (the --judge-share set aside)" if cfg.as_judge else ""
        raise UserError(f"no training comparisons{part} in {', '.join(data)} ({skips.summary()})")
    if cfg.group_pairs:
        train, held = group_pairwise(train), group_pairwise(held)
    if cfg.max_comparisons:
        train = train[: cfg.max_comparisons]
    return train, held, skips


def judge_part(comparisons: list[Any], share: float, as_judge: bool) -> list[Any]:
    """The comparisons a trainer may read: with no judge ``share``, all of them; with one, those of the prompts outside
    it, or (``as_judge``) those inside it. A prompt's comparisons all fall on one side, by a hash of the prompt."""
    from ..data.preferences import prompt_key
    from ..data.sources import hash_share

    if as_judge and share <= 0:
        raise UserError("--as-judge: give the share to train the judge on with --judge-share (for example 0.2)")
    if share <= 0:
        return comparisons
    return [c for c in comparisons if (hash_share(prompt_key(c.prompt), "judge") < share) == as_judge]


def prompt_fingerprints(comparisons: list[Any]) -> list[str]:
    """A short hash of each distinct prompt, sorted: what a reward model's folder records of the prompts it read
    (``PROMPTS_FILE``), so an evaluation can check that its judge never saw the training reward model's."""
    import hashlib

    from ..data.preferences import prompt_key

    return sorted({hashlib.blake2b(prompt_key(c.prompt).encode("utf-8"), digest_size=8).hexdigest() for c in comparisons})


def judge_independence(judge: str | Path, reward_model: str | Path) -> dict | None:
    """How many prompts a judge reward model and the training reward model both read, from the prompt hashes their
    folders record (``PROMPTS_FILE``); None when either folder has no record (a hub model, or one trained elsewhere)."""
    from ..reward_model import PROMPTS_FILE

    files = [Path(judge) / PROMPTS_FILE, Path(reward_model) / PROMPTS_FILE]
    if not all(f.is_file() for f in files):
        return None
    a, b = ({x for x in f.read_text().split() if x} for f in files)
    return {"judge_prompts": len(a), "reward_model_prompts": len(b), "shared_prompts": len(a & b)}


class Encoder:
    """Token ids of (prompt, response), cached: a response shared by many pairs is tokenised once."""

    def __init__(self, tok: Any, max_len: int):
        from ..reward_model import encode_pair

        self.tok, self.max_len, self._encode = tok, max_len, encode_pair
        self.cache: dict[tuple[str, str], list[int]] = {}
        self.truncated = 0

    def __call__(self, prompt: Any, response: str) -> list[int]:
        from ..data.preferences import prompt_key

        key = (prompt_key(prompt), response)
        if key not in self.cache:
            ids, cut = self._encode(self.tok, prompt, response, self.max_len)
            self.truncated += cut
            self.cache[key] = ids
        return self.cache[key]

    def comparison(self, c: Any) -> tuple[list[list[int]], list[tuple[int, int]]]:
        return [self(c.prompt, r) for r in c.responses], c.pairs


# ---------------------------------------------------------------------------------------------- the model
def build_reward_model(backbone: str, tok: Any, seed: int, cfg: Any = None, device: Any = None) -> Any:
    """The backbone as a 1-output sequence-classification model (HF loads the trunk; we init the head), with LoRA
    adapters on its trunk when ``cfg`` asks for them (the head, and embeddings that grew for new tokens, train fully)."""
    from transformers import AutoModelForSequenceClassification

    from ..adapters import add_lora, quantization_kwargs
    from ..models import load_pretrained, resize_for_tokenizer
    from ..reward_model import head_of, init_head

    quantization = quantization_kwargs(cfg)
    model = load_pretrained(AutoModelForSequenceClassification, backbone, "the backbone", num_labels=1,
                            device=device if str(device) == "meta" else None,
                            **({**quantization, "device_map": {"": device}} if quantization else {}))
    vocab = model.get_input_embeddings().weight.shape[0]
    resize_for_tokenizer(model, tok)
    model.config.problem_type = "regression"
    init_head(model, seed)
    grown = (model.get_input_embeddings(),) if len(tok) > vocab else ()
    return add_lora(model, cfg, trainable=(head_of(model),) + grown, what="reward model") if cfg is not None else model


def reward_forward(model: Any) -> Any:
    """A module whose forward returns the rewards (B,), so DDP sees one call per micro-batch."""
    import torch

    from ..reward_model import raw_rewards

    class RewardForward(torch.nn.Module):
        def __init__(self, m: Any):
            super().__init__()
            self.rm = m

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return raw_rewards(self.rm, input_ids, attention_mask)

    return RewardForward(model)


def score_sequences(model: Any, seqs: list[list[int]], pad_id: int, device: Any, autocast: Any, batch_size: int = 64) -> list[float]:
    """Raw rewards (no bias) of token sequences, in eval mode."""
    import torch

    from ..reward_model import raw_rewards

    was = model.training
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # less padding
    vals = [0.0] * len(seqs)
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[r, : len(seqs[i])] = 1
            for i, v in zip(idx, raw_rewards(model, ids.to(device), mask.to(device)).float().cpu().tolist()):
                vals[i] = v
    if was:
        model.train()
    return vals


# ---------------------------------------------------------------------------------------------- evaluation
def group_items(comparisons: list[Any]) -> list[dict]:
    """Held-out comparisons grouped by task: the responses are scored once, every labeler's ranking is checked."""
    items: dict[str, dict] = {}
    for c in comparisons:
        key = f"task:{c.task}" if c.task else f"at:{c.where}"
        it = items.setdefault(key, {"prompt": c.prompt, "responses": c.responses, "prompt_id": c.prompt_id, "rankings": []})
        if it["responses"] != c.responses:  # same task id, different responses: keep apart
            it = items.setdefault(f"at:{c.where}", {"prompt": c.prompt, "responses": c.responses, "prompt_id": c.prompt_id, "rankings": []})
        it["rankings"].append({"pairs": c.pairs, "labeler": c.labeler, "pool": c.pool})
    return list(items.values())


def pair_agreement(items: list[dict], pools: tuple[str, str] | None = None) -> dict:
    """Inter-labeler agreement over items with two or more rankings (the comparison store's definition: each pair of
    responses both labelers ordered strictly counts once). ``pools=("train", "heldout")``: only cross-pool pairs."""
    agree = pairs = tasks = 0
    for it in items:
        rs = it["rankings"]
        counted = False
        for a in range(len(rs)):
            for b in range(a + 1, len(rs)):
                if rs[a]["labeler"] == rs[b]["labeler"]:
                    continue
                if pools is not None and {rs[a]["pool"], rs[b]["pool"]} != set(pools):
                    continue
                if pools is None and not (rs[a]["pool"] == rs[b]["pool"] == "train"):
                    continue
                order_b = {(i, j) for i, j in rs[b]["pairs"]}
                for i, j in set(rs[a]["pairs"]):
                    if (i, j) in order_b:
                        agree += 1
                        pairs += 1
                    elif (j, i) in order_b:
                        pairs += 1
                counted = True
        tasks += counted
    return {"rate": agree / pairs if pairs else None, "pairs": pairs, "tasks": tasks}


def pair_accuracy(items: list[dict], scores: list[list[float]], pool: str | None) -> dict:
    right = total = 0.0
    for it, s in zip(items, scores):
        for r in it["rankings"]:
            if pool is not None and r["pool"] != pool:
                continue
            for i, j in r["pairs"]:
                total += 1
                right += 1.0 if s[i] > s[j] else (0.5 if s[i] == s[j] else 0.0)
    return {"rate": right / total if total else None, "pairs": int(total)}


def _pearson(x: list[float], y: list[float]) -> float | None:
    n = len(x)
    if n < 3:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return sxy / (sx * sy) if sx > 0 and sy > 0 else None


def _ranks(v: list[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2
        i = j + 1
    return ranks


def evaluate(model: Any, items: list[dict], encode: Encoder, pad_id: int, device: Any, autocast: Any,
             gold: dict[str, Any] | None = None) -> dict:
    """Held-out accuracy by labeler pool (and overall), and with a gold judge, reward-vs-gold correlation."""
    flat = [encode(it["prompt"], r) for it in items for r in it["responses"]]
    raw = score_sequences(model, flat, pad_id, device, autocast) if flat else []
    scores, n = [], 0
    for it in items:
        scores.append(raw[n : n + len(it["responses"])])
        n += len(it["responses"])
    out: dict[str, Any] = {**accuracy_by_pool(items, scores), "eval_items": len(items)}
    if gold:
        out.update(gold_agreement(items, scores, gold["judge"], gold["records"]))
    return out


def accuracy_by_pool(items: list[dict], scores: list[list[float]]) -> dict:
    """The share of held-out labelled pairs that ``scores`` (per item, per response) order the labelers' way: from the
    training labelers, from the held-out labelers, and all of them (ties count half)."""
    tr, ho, everyone = (pair_accuracy(items, scores, pool) for pool in ("train", "heldout", None))
    return {"accuracy_train_labelers": tr["rate"], "pairs_train_labelers": tr["pairs"],
            "accuracy_heldout_labelers": ho["rate"], "pairs_heldout_labelers": ho["pairs"], "accuracy_all": everyone["rate"]}


def gold_agreement(items: list[dict], scores: list[list[float]], judge: Any, records: dict[str, dict]) -> dict:
    """The reward model's ``scores`` of held-out ``items`` against the gold judge: Pearson and Spearman correlation, the
    share of response pairs the judge orders that the reward model orders the same way (overall and by task family; a
    tie counts half), and the labelers' own agreement with the judge on the pairs they ranked."""
    xs, ys, right, total, lab_right, lab_total = [], [], 0.0, 0, 0, 0
    by_family: dict[str, list[float]] = {}  # family -> [agreeing pairs, pairs the gold judge orders]
    for it, s in zip(items, scores):
        rec = records.get(it["prompt_id"])
        if rec is None:
            continue
        g = [float(judge.score(rec, r).score) for r in it["responses"]]
        xs += s
        ys += g
        fam = by_family.setdefault(str(rec.get("family", "")), [0.0, 0])
        for i in range(len(g)):
            for j in range(len(g)):
                if g[i] > g[j]:
                    hit = 1.0 if s[i] > s[j] else (0.5 if s[i] == s[j] else 0.0)
                    total += 1
                    right += hit
                    fam[0] += hit
                    fam[1] += 1
        for r in it["rankings"]:
            for i, j in r["pairs"]:
                if g[i] != g[j]:
                    lab_total += 1
                    lab_right += g[i] > g[j]
    if not xs:
        return {}
    by = {f: {"rate": a / n, "pairs": int(n)} for f, (a, n) in sorted(by_family.items()) if n}
    return {"gold_correlation": _pearson(xs, ys), "gold_spearman": _pearson(_ranks(xs), _ranks(ys)),
            "accuracy_vs_gold": right / total if total else None, "labelers_vs_gold": lab_right / lab_total if lab_total else None,
            "gold_responses": len(xs), "accuracy_vs_gold_by_family": by, "families_against_gold": families_against_gold(by)}


def families_against_gold(by_family: dict[str, dict], min_pairs: int = 10) -> list[str]:
    """Task families on whose held-out pairs the reward model orders responses against the gold judge, beyond chance:
    the 95% interval of its agreement lies below 0.5 (over at least ``min_pairs`` pairs the judge orders). PPO would
    optimise such a family the wrong way. (Two samples of one model often differ little, so a rate a little under 0.5
    on a few dozen pairs is not flagged.)"""
    from ..evaluation import wilson_interval

    return [f for f, v in by_family.items()
            if v["pairs"] >= min_pairs and wilson_interval(v["rate"] * v["pairs"], v["pairs"])[1] < 0.5]


# ---------------------------------------------------------------------------------------------- bias normalisation
def demonstration_pairs(cfg: RewardConfig, world: Any, train: list[Any]) -> tuple[list[tuple[Any, str]], str]:
    """(prompt, response) pairs whose mean reward is set to 0, and where they came from."""
    from ..data.preferences import demonstration_pair, read_demonstrations

    if cfg.demonstrations:
        return read_demonstrations(cfg.demonstrations), str(cfg.demonstrations)
    if world is not None and hasattr(world, "demonstrations"):
        pairs = [demonstration_pair(d, f"world demonstration {d.get('id')}") for d in world.demonstrations("rm")]
        pairs = [p for p in pairs if p is not None]
        if pairs:
            return pairs, "world demonstrations (rm split)"
    best = []
    for c in train:
        if c.ranking:
            best.append((c.prompt, c.responses[c.ranking[0][0]]))
    return best, "best-ranked responses of the training comparisons (no demonstrations given)"


# ---------------------------------------------------------------------------------------------- the stage
def run(cfg: RewardConfig) -> Path:
    from ..adapters import check_quantization
    from ..data.preferences import shuffle_into_pairs
    from ..sharding import Replica, choose, load_device, shard
    from ..models import autocast_dtype, enable_residual_dropout, save_model
    from ..reward_model import PROMPTS_FILE, STATS_FILE, collate, ranking_loss
    from ..tokenizer import load_tokenizer
    from ..train import Loop, Part, all_reduce_mean, barrier, build_optimizer, in_process_group, seed_everything, wrap_ddp
    from . import label as label_stage

    paths = _paths(cfg)
    out: Path = paths["out"]
    if cfg.dry_run:
        comparison_dry_run("rm", cfg, paths, [("model", paths["model"], True, True)])
        return out

    def body(d: Any) -> Path:
        work = partial_path(out)
        check_output(out, cfg.overwrite, cfg.resume)
        seed_everything(cfg.seed)
        train, held, skips = load_data(cfg, paths["data"])
        world = label_stage.load_world(paths["world"]) if paths["world"] is not None else None
        tok = load_tokenizer(paths["model"])
        check_quantization(cfg, d.device)
        d.sharding = choose(cfg.sharding, d, [(paths["model"], True)])
        model = build_reward_model(paths["model"], tok, cfg.seed, cfg, load_device(d) if d.sharding == "fsdp" else d.device)
        max_len = cfg.max_len or int(getattr(model.config, "max_position_embeddings", 0) or 0)
        encode = Encoder(tok, max_len)
        # InstructGPT: one batch element per prompt with all its pairs; the ablation: every pair on its own
        examples = [encode.comparison(c) for c in (shuffle_into_pairs(train) if cfg.shuffle_pairs else train)]
        items = group_items(held)
        gold = None
        if world is not None and hasattr(world, "judge"):
            gold = {"judge": world.judge(), "records": {str(r["id"]): r for r in world.prompts("rm")}}
        if d.is_main:
            begin_output(out, overwrite=cfg.overwrite, resume=cfg.resume)
        barrier(d)

        enable_residual_dropout(model, cfg.dropout)
        if not cfg.load_in_4bit and d.sharding != "fsdp":  # sharding moves each unit's shard to the device
            model.to(d.device)
        model.train()
        autocast = autocast_dtype(d.device, cfg.precision)
        root = reward_forward(model)
        shard(root, d, autocast)
        replica = Replica(model, root, d, prefix="rm.", everywhere=False, keep_state=True)  # full weights for the main process's evaluations
        opt = build_optimizer(model, cfg.lr, cfg.weight_decay)
        steps = ComparisonSteps(len(examples), cfg, d)
        total_steps = steps.total

        loop = Loop("rm", cfg, d, work, {"model": Part(model, opt)}, total_steps, autocast)
        fwd = wrap_ddp(root, d)
        log = loop.log
        n_pairs = sum(len(p) for _, p in examples)
        n_responses = sum(len(ids) for ids, _ in examples)
        if d.is_main and loop.step == 0:
            log.log(0, train_comparisons=len(examples), train_pairs=n_pairs, train_responses=n_responses,
                    eval_items=len(items), skipped=skips.total, truncated=encode.truncated, shuffle_pairs=cfg.shuffle_pairs)
            print(f"igpt rm: {len(examples)} training comparisons ({n_pairs} pairs, {n_responses} responses), "
                  f"{len(items)} held-out; skipped: {skips.summary()}")

        t0, seen, ev = time.time(), 0, {}
        while loop.running:
            mine = steps.mine(loop.step)
            lr = loop.begin_step()
            sums = [0.0, 0.0, 0]  # loss x comparisons, right pairs, pairs

            def micro(idx: list[int]) -> Any:
                nonlocal seen
                if not idx:
                    return None
                batch = collate([examples[i] for i in idx], tok.pad_token_id).to(d.device)
                rewards = fwd(batch.input_ids, batch.attention_mask)
                loss, st = ranking_loss(rewards.float(), batch.pairs, batch.pair_group, batch.n_groups)
                sums[0] += float(loss.detach()) * len(idx)
                sums[1] += st["acc"] * st["pairs"] if st["pairs"] else 0.0  # the step's accuracy is over its pairs, however split
                sums[2] += st["pairs"]
                seen += len(idx)
                return loss * len(idx) / max(1, len(mine))

            loop.accumulate(fwd, steps.micro_batches(mine), micro)
            grad_norm = loop.optimizer_step()
            step = loop.step
            train_loss = all_reduce_mean(sums[0] / max(1, len(mine)), d)
            acc = all_reduce_mean(sums[1], d) / max(all_reduce_mean(float(sums[2]), d), 1e-9)
            row: dict[str, Any] = {"loss": train_loss, "acc": acc, "lr": lr,
                                   "grad_norm": grad_norm, "comparisons_per_s": seen * d.world_size / max(time.time() - t0, 1e-9)}
            if items and cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                full = replica.refresh()
                if d.is_main:
                    ev = evaluate(full, items, encode, tok.pad_token_id, d.device, autocast)
                    row.update({f"eval_{k}": v for k, v in ev.items() if v is not None})
            loop.log_step(row, "reward-model loss", postfix={
                "loss": f"{train_loss:.3f}", "acc": f"{row['acc']:.2f}",
                "eval": f"{ev.get('accuracy_all'):.2f}" if ev.get("accuracy_all") is not None else "-"})
            loop.checkpoint()
        loop.close(log=False)
        step = loop.step
        if step < total_steps:  # stopped early on purpose: keep the partial folder and its checkpoint
            log.close()
            return work
        full = replica.refresh()
        if d.is_main:
            model.eval()
            full.eval()
            demos, demo_source = demonstration_pairs(cfg, world, train)
            demo_raw = score_sequences(full, [encode(p, r) for p, r in demos], tok.pad_token_id, d.device, autocast)
            mean = sum(demo_raw) / len(demo_raw)
            std = math.sqrt(sum((x - mean) ** 2 for x in demo_raw) / max(1, len(demo_raw) - 1)) if len(demo_raw) > 1 else 1.0
            model.config.reward_bias = float(-mean)
            model.config.reward_std = float(std) if std > 0 else 1.0
            stats = {"reward_bias": model.config.reward_bias, "reward_std": model.config.reward_std,
                     "demonstrations": len(demo_raw), "demonstrations_source": demo_source,
                     "formula": "reward = score(last real token) + reward_bias; normalised reward = reward / reward_std"}
            final = {"final": True, **evaluate(full, items, encode, tok.pad_token_id, d.device, autocast, gold)} if items else {"final": True}
            final.update(agreement(train, held))
            final.update(reward_bias=stats["reward_bias"], reward_std=stats["reward_std"], train_comparisons=len(examples),
                         train_pairs=n_pairs, skipped=skips.total, truncated=encode.truncated, shuffle_pairs=cfg.shuffle_pairs,
                         seconds=round(time.time() - t0, 1))
            log.log(step, **final)
            log.close()
            save_model(model, tok, work, str(paths["model"]) if cfg.save_adapter else "", state=replica.state)
            (work / STATS_FILE).write_text(json.dumps(stats, indent=1))
            (work / "skipped.txt").write_text(skips.summary() + "\n")
            (work / PROMPTS_FILE).write_text("".join(f + "\n" for f in prompt_fingerprints(train + held)))
            save_config(cfg, work)
            shutil.rmtree(work / "checkpoint", ignore_errors=True)
            finish_output(work, out, {"step": step, **{k: v for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}})
            print_summary(out, final, stats)
        else:
            log.close()
        barrier(d)
        return out

    return in_process_group(cfg.device, body, owns=out)


def agreement(train: list[Any], held: list[Any]) -> dict:
    """The ceiling: training labelers with each other (tasks they both ranked, training and held-out) and training vs
    held-out labelers (the held-out split)."""
    both = group_items(train + held)
    tr = pair_agreement(both)
    cross = pair_agreement(group_items(held), ("train", "heldout"))
    return {"labeler_agreement": tr["rate"], "agreement_train_pairs": tr["pairs"],
            "agreement_train_vs_heldout": cross["rate"], "agreement_cross_pairs": cross["pairs"]}


def print_summary(out: Path, m: dict, stats: dict) -> None:
    def pct(x: Any) -> str:
        return f"{100 * x:5.1f}%" if isinstance(x, (int, float)) else "    -"

    print(f"reward model: {out}")
    print(f"  held-out accuracy, training labelers   {pct(m.get('accuracy_train_labelers'))}  ({m.get('pairs_train_labelers', 0)} pairs)"
          f"   InstructGPT {100 * PAPER['accuracy_train_labelers']:.1f}%")
    print(f"  held-out accuracy, held-out labelers   {pct(m.get('accuracy_heldout_labelers'))}  ({m.get('pairs_heldout_labelers', 0)} pairs)"
          f"   InstructGPT {100 * PAPER['accuracy_heldout_labelers']:.1f}%")
    print(f"  labeler agreement (the ceiling)        {pct(m.get('labeler_agreement'))}  training labelers ({m.get('agreement_train_pairs', 0)} pairs);"
          f" {pct(m.get('agreement_train_vs_heldout'))} training vs held-out   InstructGPT 72.6 +- 1.5%")
    if m.get("gold_correlation") is not None:
        print(f"  reward vs gold judge                   Pearson {m['gold_correlation']:.3f}, Spearman {m['gold_spearman']:.3f},"
              f" pairwise {pct(m.get('accuracy_vs_gold'))} (labelers vs gold {pct(m.get('labelers_vs_gold'))})")
    fams = m.get("accuracy_vs_gold_by_family") or {}
    if fams:
        worst = sorted(fams.items(), key=lambda kv: kv[1]["rate"])[:3]
        print("  pairwise vs gold by task family, lowest: " + ", ".join(f"{f} {pct(v['rate']).strip()} ({v['pairs']})" for f, v in worst))
    for f in m.get("families_against_gold") or []:
        v = fams[f]
        print(f"  warning: on {f} the reward model orders held-out pairs against the gold judge ({pct(v['rate']).strip()} agree, of "
              f"{v['pairs']} pairs): PPO would optimise that family the wrong way; more comparisons of it may help")
    print(f"  reward bias {stats['reward_bias']:+.4f}, std {stats['reward_std']:.4f} on {stats['demonstrations']} demonstrations"
          f" ({stats['demonstrations_source']})")

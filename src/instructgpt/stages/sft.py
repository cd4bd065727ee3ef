"""Step 2, supervised fine-tuning: minimise -sum log P(y | x) on demonstrations, with the loss on the response tokens only.

The story of the stage: read the demonstrations (the world's, or chat / prompt-response / Alpaca JSONL), render each
conversation into token ids and its assistant-only loss mask (``data.chat.render``), drop and count the ones longer than
``--max-len``, group examples of similar length into micro-batches of at most ``--batch-tokens`` padded tokens, then
train for a few epochs with warmup + cosine decay and residual dropout, optionally mixing in pretraining text
(InstructGPT's PPO start model had 10%). The loss of a step is the mean over every labelled token in it (all
micro-batches, all processes). After each epoch the validation loss is measured and the best epoch by ``--select-by`` is
kept: validation loss, or the reward model's mean score of sampled answers to validation prompts, which is how
InstructGPT chose its SFT model (its validation loss overfits after one epoch while the reward keeps improving).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from ..config import TrainConfig, field, save_config
from ..data.chat import FORMATS
from ..errors import UserError
from ..rundir import CACHE_FOLDER, begin_output, check_output, finish_output, in_run, partial_path


@dataclasses.dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on demonstrations (chat messages, prompt/response or Alpaca JSONL, or the built-in world)."""

    stage: ClassVar[str] = "sft"
    presets: ClassVar[dict] = {
        "tiny": dict(epochs=2, batch_tokens=1024, lr=2e-3, warmup_steps=2, max_examples=200, samples=0, checkpoint_every=0),
        "default": dict(epochs=6, batch_tokens=512, lr=2e-3, warmup_steps=20, dropout=0.1, ptx_fraction=0.1, checkpoint_every=200),
        "gpu": dict(epochs=4, batch_tokens=32768, lr=5e-5, warmup_steps=20, dropout=0.1, max_len=2048, ptx_fraction=0.1),
    }

    run: str = field("", "run directory: reads <run>/pretrain and <run>/world, writes <run>/sft")
    model: str = field("", "model to fine-tune: folder or hub id (empty: <run>/pretrain)")
    data: str = field("", "demonstrations (chat messages, ShareGPT, prompt/response or Alpaca records): a JSONL / JSON / parquet / arrow file, a folder of them, a dataset saved with save_to_disk, or a dataset id (name[:config][[split]]); or a world "
                          "folder (empty: <run>/world)")
    format: str = field("auto", "demonstration format: auto (per record), chat, prompt_response or alpaca", choices=FORMATS)
    columns: str = field("", "read these fields under other column names: NAME=COLUMN,... (for example instruction=question,output=answer)")
    val_data: str = field("", "validation demonstrations (empty: hold out --val-fraction of --data, chosen by a hash of the prompt)")
    val_fraction: float = field(0.05, "share of demonstrations held out for validation when there is no --val-data", ge=0.0, le=0.5)
    max_examples: int = field(0, "use at most this many training demonstrations (0 = all)", ge=0)
    out: str = field("", "output model folder (empty: <run>/sft)")
    epochs: int = field(3, "passes over the demonstrations", ge=1)
    batch_tokens: int = field(512, "padded tokens per micro-batch per process (examples of similar length are grouped)", ge=1)
    lr: float = field(2e-3, "peak learning rate", gt=0.0)
    min_lr_ratio: float = field(0.1, "final learning rate as a fraction of the peak (cosine decay)", ge=0.0, le=1.0)
    warmup_steps: int = field(10, "linear warmup steps", ge=0)
    weight_decay: float = field(0.0, "AdamW weight decay on weight matrices", ge=0.0)
    beta2: float = field(0.95, "AdamW beta2", ge=0.0, lt=1.0)
    grad_clip: float = field(1.0, "clip the global gradient norm (0 = off)", ge=0.0)
    dropout: float = field(0.1, "residual dropout (InstructGPT: 0.2)", ge=0.0, le=0.9)
    max_len: int = field(0, "longest conversation in tokens; longer ones are dropped and counted (0 = the model's context)", ge=0)
    ptx_fraction: float = field(0.0, "share of the loss's tokens that are pretraining text (InstructGPT's PPO start model: 0.1)", ge=0.0, le=0.9)
    ptx_corpus: str = field("", "pretraining corpus for --ptx-fraction (empty: <run>/world)")
    ptx_seq_len: int = field(128, "length of the pretraining sequences mixed in", ge=1)
    select_by: str = field("val_loss", "keep the best evaluation by val_loss, reward (needs --reward-model) or last", choices=("val_loss", "reward", "last"))
    reward_model: str = field("", "reward-model folder for --select-by reward")
    select_prompts: int = field(64, "validation prompts sampled and scored for --select-by reward", ge=1)
    eval_every: int = field(0, "also evaluate every N steps (0 = after each epoch only)", ge=0)
    samples: int = field(3, "sampled answers to validation prompts logged to samples.jsonl after each epoch", ge=0)
    max_new_tokens: int = field(64, "longest sampled answer (samples and reward selection)", ge=1)
    checkpoint_every: int = field(50, "checkpoint every N steps (and after every epoch; 0 = epochs only)", ge=0)
    seed: int = field(0, "random seed (data order, dropout, sampling)", ge=0)
    cache_dir: str = field("", "where the tokenised pretraining corpus is cached (empty: <run>/.cache or beside the output)")


def _paths(cfg: SFTConfig) -> dict[str, Any]:
    run = Path(cfg.run) if cfg.run else None
    out = Path(cfg.out) if cfg.out else (in_run(run, "sft") if run else None)
    if out is None:
        raise UserError("--out: give an output folder (or --run)")
    model = cfg.model or (str(in_run(run, "pretrain")) if run else "")
    if not model:
        raise UserError("--model: give the model to fine-tune (or --run with a pretrain/ folder)")
    data = cfg.data or (str(in_run(run, "world")) if run else "")
    if not data:
        raise UserError("--data: give a demonstrations file (or --run with a world)")
    ptx = cfg.ptx_corpus or (str(in_run(run, "world")) if run else "")
    cache = Path(cfg.cache_dir) if cfg.cache_dir else ((run / CACHE_FOLDER) if run else out.parent / CACHE_FOLDER)
    return {"out": out, "model": model, "data": data, "ptx": ptx, "cache": cache}


def validate(cfg: SFTConfig) -> None:
    if cfg.select_by == "reward" and not cfg.reward_model:
        raise UserError("--select-by reward needs --reward-model FOLDER")


# ---------------------------------------------------------------------------------------------- data
def read_data(cfg: SFTConfig, data: str) -> tuple[list[dict], list[dict]]:
    """Read and check the demonstrations and split them into (train, validation) records."""
    from ..data.chat import is_validation, load_demonstrations
    from ..data.sources import parse_columns

    columns = parse_columns(cfg.columns)
    records = load_demonstrations(data, cfg.format, world_split="sft", columns=columns)
    if cfg.val_data:
        train_recs, val_recs = records, load_demonstrations(cfg.val_data, cfg.format, world_split="sft", columns=columns)
    else:
        train_recs = [r for r in records if not is_validation(r["messages"], cfg.val_fraction)]
        val_recs = [r for r in records if is_validation(r["messages"], cfg.val_fraction)]
        if cfg.val_fraction > 0 and not val_recs and len(train_recs) > 1:  # tiny data: hold out one example anyway
            val_recs = [train_recs.pop()]
    if cfg.max_examples:
        train_recs = train_recs[: cfg.max_examples]
    return train_recs, val_recs


@dataclasses.dataclass
class SFTData:
    train: list[dict]  # records with "ids" and "mask" (data.chat.render)
    val: list[dict]
    dropped: list[dict]  # too long for --max-len, train and validation
    max_len: int


def prepare_data(train_recs: list[dict], val_recs: list[dict], tok: Any, max_len: int) -> SFTData:
    """Render the demonstrations; overlong ones are dropped (never cut inside a response) and counted."""
    from ..data.chat import render_all

    train, dropped = render_all(tok, train_recs, max_len)
    val, dropped_val = render_all(tok, val_recs, max_len)
    if not train:
        raise UserError(f"no training demonstration fits --max-len {max_len} ({len(dropped)} are longer)")
    return SFTData(train, val, dropped + dropped_val, max_len)


def example_tensors(rec: dict) -> tuple[list[int], list[int]]:
    """(inputs, labels) of one rendered example: labels[t] is the token after position t when it is in the loss, else -100."""
    ids, mask = rec["ids"], rec["mask"]
    return ids[:-1], [t if m else -100 for t, m in zip(ids[1:], mask[1:])]


def n_targets(rec: dict) -> int:
    return sum(rec["mask"][1:])


def length_grouped_batches(lengths: list[int], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Micro-batches of example indices with at most ``batch_tokens`` padded tokens each, in a seeded order.

    The examples are shuffled, then sorted by length within large chunks, so a batch holds examples of similar length
    (little padding) while the order still changes every epoch; the batches themselves are shuffled too.
    """
    rng = random.Random(f"sft:{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = 64 * max(1, batch_tokens // max(1, max(lengths)))
    batches: list[list[int]] = []
    for s in range(0, len(order), chunk):
        cur: list[int] = []
        for i in sorted(order[s : s + chunk], key=lambda j: (lengths[j], j)):
            if cur and lengths[i] * (len(cur) + 1) > batch_tokens:  # sorted ascending: the new example is the longest
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


def collate(records: list[dict], pad_id: int) -> tuple[Any, Any]:
    """Right-padded (input_ids, labels). Right padding needs no attention mask: causal attention never looks ahead."""
    import torch

    pairs = [example_tensors(r) for r in records]
    width = max(len(x) for x, _ in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    for row, (x, y) in enumerate(pairs):
        ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        labels[row, : len(y)] = torch.tensor(y, dtype=torch.long)
    return ids, labels


# ---------------------------------------------------------------------------------------------- loss
def _separable_head(lm: Any) -> bool:
    """Whether the LM is trunk + plain linear head, so logits can be computed at the labelled positions only."""
    cfg = getattr(lm, "config", None)
    return (getattr(cfg, "model_type", None) in ("llama", "mistral", "qwen2", "qwen3") and hasattr(lm, "model") and hasattr(lm, "lm_head")
            and getattr(cfg, "final_logit_softcapping", None) is None)


def _token_loss_module(lm: Any) -> Any:
    import torch
    import torch.nn.functional as F

    class TokenLoss(torch.nn.Module):
        """Summed next-token cross-entropy over the labelled positions (labels != -100). For Llama-like models the LM
        head runs on those positions only (prompts and padding need no logits). Wrapped in DDP as one module."""

        def __init__(self, lm: Any):
            super().__init__()
            self.lm = lm
            self.split = _separable_head(lm)

        def forward(self, ids: Any, labels: Any) -> Any:
            sel = labels != -100
            if self.split:
                h = self.lm.model(input_ids=ids, use_cache=False).last_hidden_state
                logits = self.lm.lm_head(h[sel])
            else:
                logits = self.lm(input_ids=ids, use_cache=False).logits[sel]
            return F.cross_entropy(logits.float(), labels[sel], reduction="sum")

    return TokenLoss(lm)


def validation_loss(loss_fn: Any, val: list[dict], pad_id: int, batch_tokens: int, d: Any, autocast: Any) -> float:
    """Mean loss per labelled token over the validation demonstrations (split across processes)."""
    import torch

    from ..sharding import even

    if not val:
        return float("nan")
    lengths = [len(r["ids"]) - 1 for r in val]
    order = sorted(range(len(val)), key=lambda i: lengths[i])
    batches, cur = [], []
    for i in order:
        if cur and lengths[i] * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    batches.append(cur)
    was = loss_fn.training
    loss_fn.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(d.device.type, dtype=autocast, enabled=autocast is not None):
        for b in even(batches, d):  # sharded: a process short of batches runs one more and ignores it
            ids, labels = collate([val[i] for i in (b if b is not None else batches[0])], pad_id)
            loss = float(loss_fn(ids.to(d.device), labels.to(d.device)))
            if b is not None:
                total += loss
                count += int((labels != -100).sum())
    loss_fn.train(was)
    total, count = _all_sum([total, float(count)], d)
    return total / max(count, 1.0)


def _all_sum(values: list[float], d: Any) -> list[float]:
    if not d.enabled:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------------------------------------- sampling and reward
def sample_answers(model: Any, tok: Any, records: list[dict], max_new_tokens: int, seed: int, temperature: float = 0.7) -> list[dict]:
    """Sampled answers to the records' prompts (the conversation before its last assistant turn)."""
    from ..data.chat import prompt_messages, render_prompt
    from ..sampling import SamplingParams, make_sampler
    from ..tokenizer import stop_token_ids

    if not records:
        return []
    prompts = [prompt_messages(r["messages"]) for r in records]
    stops = stop_token_ids(tok, getattr(model, "generation_config", None))
    sampler = make_sampler(model, tok, decode=True)
    r = sampler.generate([render_prompt(tok, p) for p in prompts], SamplingParams(max_new_tokens, temperature, 0, 1.0, seed, stops))
    return [{"id": rec["id"], "prompt": p, "response": t, "finished": f} for rec, p, t, f in zip(records, prompts, r.texts, r.finished)]


def mean_reward(model: Any, tok: Any, reward_model: Any, records: list[dict], max_new_tokens: int, seed: int) -> float:
    """Mean reward-model score of sampled answers to validation prompts (InstructGPT's way of choosing the SFT model)."""
    answers = sample_answers(model, tok, records, max_new_tokens, seed)
    scores = reward_model.score_texts([a["prompt"] for a in answers], [a["response"] for a in answers])
    return float(sum(scores) / max(1, len(scores)))


# ---------------------------------------------------------------------------------------------- the stage
def run(cfg: SFTConfig) -> Path:
    from ..data.corpus import PackedBatches, tokenize_corpus
    from ..adapters import add_lora, check_quantization, quantization_kwargs
    from ..sharding import Replica, choose, full_state, load_device, shard
    from ..models import autocast_dtype, count_parameters, enable_residual_dropout, load_causal_lm, resize_for_tokenizer, save_model
    from ..tokenizer import load_tokenizer
    from ..train import Loop, Part, barrier, build_optimizer, in_process_group, seed_everything, wrap_ddp

    validate(cfg)
    paths = _paths(cfg)
    out: Path = paths["out"]
    work = partial_path(out)
    if cfg.dry_run:
        from ..memory import context_of, dry_run

        context = context_of(paths["model"]) or 2048
        max_len = min(cfg.max_len, context) if cfg.max_len else min(context, 4096)
        dry_run("sft", cfg, [("model", paths["model"], True, False)], cfg.batch_tokens, min(max_len, cfg.batch_tokens))
        return out

    def body(d: Any) -> Path:
        check_output(out, cfg.overwrite, cfg.resume)
        seed_everything(cfg.seed)

        # ---- inputs: demonstrations, tokenizer, model, pretraining text (all checked before anything is written)
        train_recs, val_recs = read_data(cfg, paths["data"])
        tok = load_tokenizer(paths["model"])
        check_quantization(cfg, d.device)
        d.sharding = choose(cfg.sharding, d, [(paths["model"], True)])
        model = load_causal_lm(paths["model"], load_device(d), quantization=quantization_kwargs(cfg))
        vocab = model.get_input_embeddings().weight.shape[0]
        resize_for_tokenizer(model, tok)
        grown = model.get_input_embeddings().weight.shape[0] > vocab  # new tokens (pad, chat roles) must learn their embeddings
        model = add_lora(model, cfg, trainable=(model.get_input_embeddings(), model.get_output_embeddings()) if grown else ())
        context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 2048
        max_len = min(cfg.max_len, context) if cfg.max_len else min(context, 4096)
        data = prepare_data(train_recs, val_recs, tok, max_len)
        if cfg.batch_tokens < max_len - 1:
            raise UserError(f"--batch-tokens ({cfg.batch_tokens}) must hold one example of --max-len ({max_len}) tokens")
        reward_model = None
        if cfg.select_by == "reward" and d.is_main:
            from ..reward_model import load_reward_model

            reward_model = load_reward_model(cfg.reward_model, d.device)
        ptx_tokens = None
        if cfg.ptx_fraction > 0:
            if not paths["ptx"]:
                raise UserError("--ptx-fraction needs --ptx-corpus (or --run with a world)")
            if d.is_main:
                tokenize_corpus(paths["ptx"], tok, paths["cache"], 0.01)
            barrier(d)
            ptx_tokens, _ = tokenize_corpus(paths["ptx"], tok, paths["cache"], 0.01)
        if d.is_main:
            begin_output(out, overwrite=cfg.overwrite, resume=cfg.resume)
            if data.dropped:
                longest = max(r["length"] for r in data.dropped)
                print(f"sft: dropped {len(data.dropped)} demonstrations longer than {max_len} tokens (longest {longest}); "
                      f"listed in {out}/dropped.jsonl", file=sys.stderr)
                (work / "dropped.jsonl").write_text("".join(
                    json.dumps({"id": r["id"], "source": r.get("source", ""), "length": r["length"]}) + "\n" for r in data.dropped))
        barrier(d)

        adapter_base = str(paths["model"]) if cfg.save_adapter else ""
        enable_residual_dropout(model, cfg.dropout)
        if not cfg.load_in_4bit and d.sharding != "fsdp":  # a 4-bit model is placed as it loads, a sharded one as it shards
            model.to(d.device)
        model.train()
        autocast = autocast_dtype(d.device, cfg.precision)
        loss_fn = _token_loss_module(model)
        shard(loss_fn, d, autocast)  # the loss module is what every training and validation forward calls
        replica = Replica(model, loss_fn, d, prefix="lm.", everywhere=False, keep_state=True)  # full weights for the main process's samples
        opt = build_optimizer(model, cfg.lr, cfg.weight_decay, (0.9, cfg.beta2))

        # ---- the whole schedule up front: micro-batches of every epoch, grouped into optimiser steps
        lengths = [len(r["ids"]) - 1 for r in data.train]
        targets = [n_targets(r) for r in data.train]
        per_step = cfg.grad_accum * d.world_size
        plans = [length_grouped_batches(lengths, cfg.batch_tokens, cfg.seed, e) for e in range(cfg.epochs)]
        steps_in_epoch = [math.ceil(len(p) / per_step) for p in plans]
        total_steps = sum(steps_in_epoch)
        epoch_end = [sum(steps_in_epoch[: e + 1]) for e in range(cfg.epochs)]
        ptx_rows, ptx_every, ptx = 0, 1, None
        if ptx_tokens is not None:  # rows of pretraining text per process, on every ptx_every-th step
            mean_targets = sum(targets) / total_steps * cfg.epochs
            want = cfg.ptx_fraction / (1 - cfg.ptx_fraction) * mean_targets  # pretraining tokens per step
            ptx_rows = max(1, round(want / cfg.ptx_seq_len / d.world_size))
            ptx_every = max(1, round(cfg.ptx_seq_len * d.world_size / want)) if ptx_rows == 1 else 1
            ptx = PackedBatches(ptx_tokens, cfg.ptx_seq_len, ptx_rows, cfg.seed, d.rank, d.world_size)

        loop = Loop("sft", cfg, d, work, {"model": Part(model, opt)}, total_steps, autocast)
        state = loop.state
        step = loop.step
        best, best_step, best_epoch = state.get("best"), state.get("best_step", 0), state.get("best_epoch", 0)
        val_loss, best_val = state.get("val_loss"), state.get("best_val")
        if ptx is not None and state.get("ptx"):
            ptx.load_state(state["ptx"])
        ddp_loss = wrap_ddp(loss_fn, d)
        log = loop.log
        if step == 0:
            initial = validation_loss(loss_fn, data.val, tok.pad_token_id, cfg.batch_tokens, d, autocast)
            if d.is_main:
                log.log(0, params=count_parameters(model), train_examples=len(data.train), val_examples=len(data.val),
                        dropped_overlong=len(data.dropped), max_len=max_len, train_tokens=sum(lengths), train_target_tokens=sum(targets),
                        steps=total_steps, ptx_rows=ptx_rows * d.world_size, ptx_every=ptx_every, initial_val_loss=initial)

        def evaluate(at_step: int, epoch: float) -> None:
            """Validation loss (and reward), best-so-far bookkeeping, samples; every process joins the loss."""
            nonlocal best, best_step, best_epoch, val_loss, best_val
            val_loss = validation_loss(loss_fn, data.val, tok.pad_token_id, cfg.batch_tokens, d, autocast)
            row: dict[str, Any] = {"epoch": round(epoch, 4), "val_loss": val_loss}
            full = replica.refresh()
            if d.is_main:
                metric = val_loss
                if cfg.select_by == "reward":
                    reward = mean_reward(full, tok, reward_model, data.val[: cfg.select_prompts], cfg.max_new_tokens, cfg.seed)
                    row["val_reward"] = reward
                    metric = -reward
                if cfg.select_by != "last" and math.isfinite(metric) and (best is None or metric < best):
                    best, best_step, best_epoch, best_val = metric, at_step, math.ceil(epoch), val_loss
                    keep = work / "best"
                    shutil.rmtree(keep, ignore_errors=True)
                    save_model(model, tok, keep, adapter_base, state=replica.state)
                if cfg.samples and float(epoch).is_integer():
                    answers = sample_answers(full, tok, data.val[: cfg.samples], cfg.max_new_tokens, cfg.seed)
                    with open(work / "samples.jsonl", "a", encoding="utf-8") as f:
                        f.write(json.dumps({"step": at_step, "epoch": epoch, "samples": answers}, ensure_ascii=False) + "\n")
                log.log(at_step, **row)
            model.train()

        # ---- training
        t0, tokens_seen = time.time(), 0
        while loop.running:
            step = loop.step
            epoch = next(e for e in range(cfg.epochs) if step < epoch_end[e])
            first = step - (epoch_end[epoch - 1] if epoch else 0)
            micro = plans[epoch][first * per_step : (first + 1) * per_step]
            n_sft = sum(targets[i] for b in micro for i in b)
            with_ptx = ptx is not None and step % ptx_every == 0
            ptx_tokens_now = ptx_rows * d.world_size * cfg.ptx_seq_len if with_ptx else 0
            denom = n_sft + ptx_tokens_now
            mine: list[list[int] | None] = list(micro[d.rank :: d.world_size])
            mine += [None] * (math.ceil(len(micro) / d.world_size) - len(mine))  # a rank short of batches adds a zero-weight one
            work_items: list[tuple[str, Any]] = ([("ptx", None)] if with_ptx else []) + [("sft", b) for b in mine]
            lr = loop.begin_step()
            sums = [0.0, 0.0, 0.0]  # sft loss sum, ptx loss sum, tokens processed

            def forward(item: tuple[str, Any]) -> Any:
                kind, b = item
                weight = 1.0
                if kind == "ptx":
                    ids, labels = ptx.next_batch()
                else:
                    ids, labels = collate([data.train[i] for i in (b if b is not None else micro[0])], tok.pad_token_id)
                    weight = 1.0 if b is not None else 0.0
                ids, labels = ids.to(d.device), labels.to(d.device)
                s = ddp_loss(ids, labels)
                sums[0 if kind == "sft" else 1] += float(s.detach()) * weight
                sums[2] += ids.numel() * weight
                return s * (weight * d.world_size / denom)

            loop.accumulate(ddp_loss, work_items, forward)
            grad_norm = loop.optimizer_step()
            step = loop.step
            sft_sum, ptx_sum, processed = _all_sum(sums, d)
            train_loss = sft_sum / max(n_sft, 1)
            tokens_seen += processed
            row = {"loss": train_loss, "lr": lr, "grad_norm": grad_norm, "epoch": round(epoch + (first + 1) / steps_in_epoch[epoch], 4),
                   "tokens_per_s": tokens_seen / max(time.time() - t0, 1e-9)}
            if with_ptx:
                row["ptx_loss"] = ptx_sum / ptx_tokens_now
                row["ptx_token_share"] = ptx_tokens_now / denom
            loop.log_step(row, "SFT loss", postfix={"loss": f"{train_loss:.3f}", "val": f"{val_loss:.3f}" if val_loss is not None else "-",
                                                    "tok_s": f"{row['tokens_per_s']:.0f}"})
            at_epoch_end = step in epoch_end
            if at_epoch_end or (cfg.eval_every and step % cfg.eval_every == 0):
                evaluate(step, row["epoch"] if not at_epoch_end else float(epoch_end.index(step) + 1))
            loop.checkpoint({"best": best, "best_step": best_step, "best_epoch": best_epoch, "val_loss": val_loss, "best_val": best_val,
                             "ptx": ptx.state() if ptx is not None else None}, force=at_epoch_end)
        loop.close()
        step = loop.step
        if step < total_steps:  # stopped early on purpose: leave the partial folder and its checkpoint
            return work

        # ---- output: the best evaluation's weights (or the last), as a standard model folder
        state = full_state(loss_fn, d, "lm.") if d.sharding == "fsdp" else None
        if d.is_main:
            keep = work / "best"
            if cfg.select_by != "last" and keep.is_dir():
                for f in keep.iterdir():
                    os.replace(f, work / f.name)
                shutil.rmtree(keep)
            else:
                save_model(model, tok, work, adapter_base, state=state)
                best_step, best_epoch, best_val = step, cfg.epochs, val_loss
            save_config(cfg, work)
            shutil.rmtree(work / "checkpoint", ignore_errors=True)
            info = {"val_loss": best_val, "best_epoch": best_epoch, "train_examples": len(data.train), "dropped_overlong": len(data.dropped),
                    "epochs": cfg.epochs, "step": step, "best_step": best_step, "select_by": cfg.select_by,
                    "best_metric": -best if (best is not None and cfg.select_by == "reward") else best, "last_val_loss": val_loss,
                    "val_examples": len(data.val)}
            finish_output(work, out, info)
        barrier(d)
        return out

    return in_process_group(cfg.device, body, owns=out)

"""Step 2, supervised fine-tuning: minimise -sum log P(y | x) on demonstrations, with the loss on the response tokens only.

The story of the stage: read the demonstrations (the world's, or a chat / prompt-response / Alpaca JSONL), render each
conversation into token ids and its assistant-only loss mask, drop (and count) the ones longer than ``--max-len``, group
examples of similar length into batches of at most ``--batch-tokens`` padded tokens, then train for a few epochs with
warmup + cosine decay and residual dropout, optionally mixing in pretraining text (InstructGPT's PPO start model had 10%).
After each epoch the validation loss is measured, and the best epoch by ``--select-by`` is kept (validation loss, or the
reward model's mean score of sampled answers to validation prompts, which is how InstructGPT chose its SFT model).
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

from ..config import StageConfig, check_positive, check_range, field, save_config
from ..errors import UserError
from ..rundir import begin_output, finish_output, partial_path


@dataclasses.dataclass
class SFTConfig(StageConfig):
    """Supervised fine-tuning on demonstrations (chat messages, prompt/response or Alpaca JSONL, or the built-in world)."""

    stage: ClassVar[str] = "sft"
    presets: ClassVar[dict] = {
        "tiny": dict(epochs=2, batch_tokens=2048, lr=2e-3, warmup_steps=2, max_len=128, max_examples=400, dropout=0.0),
        "default": dict(epochs=2, batch_tokens=3072, lr=1e-3, max_len=192, max_examples=0, dropout=0.0, ptx_fraction=0.1),
        "gpu": dict(epochs=4, batch_tokens=32768, lr=1e-4, max_len=1024, dropout=0.1, ptx_fraction=0.1),
    }

    run: str = field("", "run directory: reads <run>/pretrain and <run>/world, writes <run>/sft")
    model: str = field("", "model to fine-tune: folder or hub id (default: <run>/pretrain)")
    data: str = field("", "demonstrations JSONL (default: the world's sft demonstrations in <run>/world)")
    format: str = field("auto", "auto, chat, prompt_response or alpaca (instruction/input/output)")
    val_data: str = field("", "validation demonstrations JSONL (default: a held-out share of --data)")
    val_fraction: float = field(0.05, "share of demonstrations held out for validation when there is no --val-data")
    out: str = field("", "output model folder (default: <run>/sft)")
    epochs: int = field(2, "passes over the demonstrations")
    batch_tokens: int = field(3072, "padded tokens per micro-batch (examples of similar length are grouped)")
    grad_accum: int = field(1, "micro-batches per optimiser step")
    lr: float = field(1e-3, "peak learning rate")
    min_lr_ratio: float = field(0.1, "final learning rate as a fraction of the peak (cosine decay)")
    warmup_steps: int = field(10, "linear warmup steps")
    weight_decay: float = field(0.0, "AdamW weight decay on weight matrices")
    grad_clip: float = field(1.0, "clip the global gradient norm (0 = off)")
    dropout: float = field(0.0, "residual dropout (InstructGPT: 0.2 at 175B; small models do better with less)")
    max_len: int = field(192, "longest conversation in tokens; longer ones are dropped and counted")
    max_examples: int = field(0, "use at most this many demonstrations (0 = all)")
    ptx_fraction: float = field(0.0, "share of each batch's sequences that are pretraining text (InstructGPT's PPO start model: 0.1)")
    ptx_corpus: str = field("", "pretraining corpus for --ptx-fraction (default: <run>/world)")
    select_by: str = field("val_loss", "keep the best epoch by val_loss, reward (needs --reward-model) or last")
    reward_model: str = field("", "reward-model folder for --select-by reward")
    eval_every_epoch: bool = field(True, "measure validation loss after every epoch")
    checkpoint_every: int = field(50, "checkpoint every N steps (and after every epoch)")
    stop_after: int = field(0, "stop after this step as if interrupted, keeping the checkpoint (0 = run to the end)")
    resume: bool = field(False, "continue an interrupted run from its last checkpoint")
    overwrite: bool = field(False, "replace an existing output folder")
    precision: str = field("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16 or fp16")
    device: str = field("auto", "auto, cpu, cuda or cuda:N")
    seed: int = field(0, "random seed")
    tensorboard: bool = field(True, "write TensorBoard logs (when tensorboard is installed)")
    wandb_project: str = field("", "log to this Weights & Biases project (needs wandb)")
    progress: bool = field(True, "show a progress bar")


def _paths(cfg: SFTConfig) -> dict[str, Any]:
    run = Path(cfg.run) if cfg.run else None
    out = Path(cfg.out) if cfg.out else (run / "sft" if run else None)
    model = cfg.model or (str(run / "pretrain") if run else "")
    data = cfg.data or (str(run / "world") if run else "")
    if out is None:
        raise UserError("--out: give an output folder (or --run)")
    if not model:
        raise UserError("--model: give the model to fine-tune (or --run with a pretrain/ folder)")
    if not data:
        raise UserError("--data: give a demonstrations file (or --run with a world)")
    ptx = cfg.ptx_corpus or (str(run / "world") if run else "")
    return {"out": out, "model": model, "data": data, "ptx": ptx, "cache": (run / ".cache") if run else out.parent / ".cache"}


def load_conversations(data: str, fmt: str, split: str = "sft") -> list[list[dict]]:
    from ..data.chat import load_demonstrations

    return [r["messages"] for r in load_demonstrations(data, fmt, world_split=split)]


def encode_all(tok: Any, convs: list[list[dict]], max_len: int) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Render every conversation; drop those longer than ``max_len`` (returned count) or with nothing to learn."""
    from ..data.chat import render

    out, dropped = [], 0
    for c in convs:
        ids, mask = render(tok, c)
        if len(ids) > max_len or not any(mask[1:]):
            dropped += 1
            continue
        out.append((ids, mask))
    return out, dropped


def length_grouped_batches(lengths: list[int], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of example indices with at most ``batch_tokens`` padded tokens, similar lengths together, in a seeded order."""
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    chunk = 64 * max(1, batch_tokens // max(1, max(lengths)))  # sort within large chunks: grouping without a fixed order
    for s in range(0, len(order), chunk):
        part = sorted(order[s : s + chunk], key=lambda i: lengths[i])
        cur: list[int] = []
        for i in part:
            if cur and max(lengths[j] for j in cur + [i]) * (len(cur) + 1) > batch_tokens:
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[Any, Any, Any]:
    """Right-padded (input_ids, attention_mask, labels); labels are -100 off the assistant tokens."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    ids_t = torch.full((len(examples), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for r, (ids, mask) in enumerate(examples):
        n = len(ids)
        ids_t[r, :n] = torch.tensor(ids)
        att[r, :n] = 1
        lab = torch.tensor(ids)
        lab[torch.tensor(mask) == 0] = -100
        labels[r, :n] = lab
    return ids_t, att, labels


def token_loss_sum(model: Any, ids: Any, att: Any, labels: Any) -> tuple[Any, int]:
    """Sum of next-token losses over the labelled positions, and their count."""
    import torch.nn.functional as F

    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    tgt = labels[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="sum")
    return loss, int((tgt != -100).sum())


def validation_loss(model: Any, examples: list, pad_id: int, batch_tokens: int, device: Any) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    lengths = [len(e[0]) for e in examples]
    with torch.no_grad():
        for b in length_grouped_batches(lengths, batch_tokens, 0, 0):
            ids, att, lab = (t.to(device) for t in collate([examples[i] for i in b], pad_id))
            s, n = token_loss_sum(model, ids, att, lab)
            total, count = total + float(s), count + n
    model.train()
    return total / max(count, 1)


def reward_of_samples(model: Any, tok: Any, convs: list[list[dict]], reward_model: str, device: Any, n: int = 64) -> float:
    """Mean reward-model score of sampled answers to validation prompts (InstructGPT's way of choosing the SFT model)."""
    from ..reward_model import load_reward_model
    from ..sampling import SamplingParams, TorchSampler, decode_responses, encode_prompt
    from ..tokenizer import stop_token_ids

    prompts = [c[: max(i for i, m in enumerate(c) if m["role"] == "assistant")] for c in convs[:n]]
    stops = stop_token_ids(tok, getattr(model, "generation_config", None))
    r = TorchSampler(model, tok.pad_token_id).generate([encode_prompt(tok, p) for p in prompts], SamplingParams(48, 0.7, 0, 0.95, 0, stops))
    texts = decode_responses(tok, r, stops)
    rm = load_reward_model(reward_model, device)
    scores = rm.score_texts(prompts, texts)
    model.train()
    return float(sum(scores) / len(scores))


def validate(cfg: SFTConfig) -> None:
    check_positive(cfg, "epochs", "batch_tokens", "grad_accum", "lr", "max_len")
    check_range(cfg, "val_fraction", 0.0, 0.5)
    check_range(cfg, "ptx_fraction", 0.0, 0.9)
    check_range(cfg, "dropout", 0.0, 0.9)
    if cfg.select_by not in ("val_loss", "reward", "last"):
        raise UserError(f"--select-by: must be val_loss, reward or last, got '{cfg.select_by}'")
    if cfg.select_by == "reward" and not cfg.reward_model:
        raise UserError("--select-by reward needs --reward-model FOLDER")
    if cfg.batch_tokens < cfg.max_len:
        raise UserError(f"--batch-tokens ({cfg.batch_tokens}) must be at least --max-len ({cfg.max_len})")


def run(cfg: SFTConfig) -> Path:
    import torch

    from ..data.corpus import PackedBatches, tokenize_corpus
    from ..models import autocast_dtype, enable_residual_dropout, load_causal_lm, resize_for_tokenizer, save_model
    from ..tokenizer import load_tokenizer
    from ..train import (
        MetricsLogger, all_reduce_mean, barrier, build_optimizer, check_finite, cleanup_distributed, has_checkpoint,
        init_distributed, load_checkpoint, lr_at, progress, save_checkpoint, seed_everything, set_lr, truncate_metrics, wrap_ddp,
    )

    validate(cfg)
    paths = _paths(cfg)
    out: Path = paths["out"]
    work = partial_path(out)
    if out.exists() and not cfg.overwrite:
        raise UserError(f"output exists: {out} (pass --overwrite to replace it)")
    if has_checkpoint(work) and not cfg.resume and not cfg.overwrite:
        raise UserError(f"{work} holds an interrupted run: pass --resume to continue it, or --overwrite to start over")
    d = init_distributed(cfg.device)
    try:
        seed_everything(cfg.seed)
        tok = load_tokenizer(paths["model"])
        convs = load_conversations(paths["data"], cfg.format)
        if cfg.max_examples:
            convs = convs[: cfg.max_examples]
        if cfg.val_data:
            train_convs, val_convs = convs, load_conversations(cfg.val_data, cfg.format)
        else:
            shuffled = list(convs)
            random.Random(cfg.seed).shuffle(shuffled)
            n_val = max(1, int(len(shuffled) * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
            val_convs, train_convs = shuffled[:n_val], shuffled[n_val:]
        train, dropped = encode_all(tok, train_convs, cfg.max_len)
        val, dropped_val = encode_all(tok, val_convs, cfg.max_len)
        if not train:
            raise UserError(f"no demonstration fits --max-len {cfg.max_len} ({dropped} dropped as too long or empty)")
        ptx_tokens = None
        if cfg.ptx_fraction > 0:
            if not paths["ptx"]:
                raise UserError("--ptx-fraction needs --ptx-corpus (or --run with a world)")
            if d.is_main:
                tokenize_corpus(paths["ptx"], tok, paths["cache"])
            barrier(d)
            ptx_tokens, _ = tokenize_corpus(paths["ptx"], tok, paths["cache"])
        model = load_causal_lm(paths["model"])
        resize_for_tokenizer(model, tok)
        enable_residual_dropout(model, cfg.dropout)
        model.to(d.device)
        model.train()
        if d.is_main:
            begin_output(out, overwrite=cfg.overwrite, resume=cfg.resume)
        barrier(d)

        autocast = autocast_dtype(d.device, cfg.precision)
        opt = build_optimizer(model, cfg.lr, cfg.weight_decay)
        lengths = [len(e[0]) for e in train]
        per_epoch = len(length_grouped_batches(lengths, cfg.batch_tokens, cfg.seed, 0)) // (d.world_size * cfg.grad_accum)
        per_epoch = max(1, per_epoch)
        total_steps = per_epoch * cfg.epochs
        mean_seqs = max(1.0, sum(cfg.batch_tokens // max(1, l) for l in lengths[:200]) / min(200, len(lengths)))
        n_ptx = math.ceil(cfg.ptx_fraction / max(1e-9, 1 - cfg.ptx_fraction) * mean_seqs) if ptx_tokens is not None else 0
        ptx_len = min(cfg.max_len, 128)
        ptx = PackedBatches(ptx_tokens, ptx_len, n_ptx, cfg.seed, d.rank, d.world_size) if n_ptx else None

        step, epoch, best, best_epoch = 0, 0, None, -1
        if cfg.resume and has_checkpoint(work):
            state = load_checkpoint(work, {"model": model}, {"model": opt})
            step, best, best_epoch = state["step"], state["best"], state["best_epoch"]
            if ptx is not None and state.get("ptx"):
                ptx.load_state(state["ptx"])
            if d.is_main:
                truncate_metrics(work / "metrics.jsonl", step)
        ddp_model = wrap_ddp(model, d)
        log = MetricsLogger(work, enabled=d.is_main, tensorboard=cfg.tensorboard, wandb_project=cfg.wandb_project, config=dataclasses.asdict(cfg))
        if d.is_main and step == 0:
            log.log(0, train_examples=len(train), val_examples=len(val), dropped_overlong=dropped + dropped_val, ptx_seqs_per_batch=n_ptx)
        bar = progress(total_steps, "sft", enabled=d.is_main and cfg.progress, initial=step)
        stop_at = cfg.stop_after if cfg.stop_after > 0 else total_steps
        t0 = time.time()
        val_loss, examples_seen = None, 0

        def end_of_epoch(ep: int) -> None:
            nonlocal best, best_epoch, val_loss
            metric = None
            if cfg.eval_every_epoch and val:
                val_loss = all_reduce_mean(validation_loss(model, val, tok.pad_token_id, cfg.batch_tokens, d.device), d)
                metric = val_loss
            if cfg.select_by == "reward" and d.is_main:
                metric = -reward_of_samples(model, tok, val_convs, cfg.reward_model, d.device)
                log.log(step, epoch=ep + 1, val_reward=-metric)
            log.log(step, epoch=ep + 1, **({"val_loss": val_loss} if val_loss is not None else {}))
            if cfg.select_by != "last" and metric is not None and d.is_main and (best is None or metric < best):
                best, best_epoch = metric, ep + 1
                keep = work / "best"
                if keep.exists():
                    shutil.rmtree(keep)
                save_model(model, tok, keep)

        while step < min(total_steps, stop_at):
            epoch = step // per_epoch
            batches = length_grouped_batches(lengths, cfg.batch_tokens, cfg.seed, epoch)
            i = step % per_epoch
            group = batches[(i * d.world_size * cfg.grad_accum) : ((i + 1) * d.world_size * cfg.grad_accum)]
            mine = group[d.rank :: d.world_size]
            lr = lr_at(step, total_steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
            set_lr(opt, lr)
            loss_total, tok_total, ptx_total = 0.0, 0, 0.0
            examples_seen += sum(len(b) for b in mine) * d.world_size
            for micro, b in enumerate(mine):
                ids, att, lab = (t.to(d.device) for t in collate([train[j] for j in b], tok.pad_token_id))
                sync = micro == len(mine) - 1 or not d.enabled
                ctx = ddp_model.no_sync() if (d.enabled and not sync) else _Null()
                with ctx, torch.autocast(d.device.type, dtype=autocast, enabled=autocast is not None):
                    s, n = token_loss_sum(ddp_model, ids, att, lab)
                    loss = s / max(n, 1)
                    if ptx is not None:
                        x, y = ptx.next_batch()
                        x, y = x.to(d.device), y.to(d.device)
                        ps, pn = _lm_loss_sum(ddp_model, x, y)
                        loss = (s + ps) / max(n + pn, 1)
                        ptx_total += float(ps) / max(pn, 1)
                    (loss / len(mine)).backward()
                loss_total += float(s.detach())
                tok_total += n
            gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)) if cfg.grad_clip > 0 else 0.0
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            train_loss = all_reduce_mean(loss_total / max(tok_total, 1), d)
            check_finite("SFT loss", train_loss, f"step {step}")
            row = {"loss": train_loss, "lr": lr, "grad_norm": gn, "epoch": step / per_epoch, "examples_per_s": examples_seen / max(1e-9, time.time() - t0)}
            if ptx is not None:
                row["ptx_loss"] = ptx_total / max(1, len(mine))
            log.log(step, **row)
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_loss:.3f}" if val_loss is not None else "-")
            bar.update(1)
            if step % per_epoch == 0:
                end_of_epoch(step // per_epoch - 1)
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step % per_epoch == 0 or step == stop_at:
                if d.is_main:
                    save_checkpoint(work, {"model": model}, {"model": opt},
                                    {"step": step, "best": best, "best_epoch": best_epoch, "ptx": ptx.state() if ptx else None})
                barrier(d)
        bar.close()
        log.close()
        if step < total_steps:
            return work
        if d.is_main:
            if cfg.select_by != "last" and (work / "best").is_dir():
                from ..models import load_causal_lm as _load

                model = _load(work / "best")
                shutil.rmtree(work / "best")
            save_model(model, tok, work)
            save_config(cfg, work)
            shutil.rmtree(work / "checkpoint", ignore_errors=True)
            finish_output(work, out, {"val_loss": val_loss, "best_epoch": best_epoch if best_epoch > 0 else cfg.epochs,
                                      "examples": len(train), "dropped_overlong": dropped + dropped_val})
        barrier(d)
        return out
    finally:
        cleanup_distributed(d)


def _lm_loss_sum(model: Any, x: Any, y: Any) -> tuple[Any, int]:
    """Summed next-token loss on packed pretraining sequences (every token counts)."""
    import torch.nn.functional as F

    logits = model(input_ids=x).logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"), y.numel()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

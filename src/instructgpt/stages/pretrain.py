"""Step 1, pretraining: minimise -sum_t log P(x_t | x_<t) on a corpus, from scratch or continuing a Hugging Face model.

The story of the stage: tokenise the corpus once (cached), pack it into fixed-length sequences, build or load the model,
then loop: accumulate gradients over micro-batches, clip, step AdamW with warmup + cosine decay; every so often measure
validation loss and perplexity, log a few sampled continuations, and checkpoint. The finished folder is a standard
Hugging Face model folder with ``metrics.jsonl`` and the resolved config beside it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

from ..config import TrainConfig, field, save_config
from ..errors import UserError
from ..rundir import CACHE_FOLDER, begin_output, check_output, finish_output, in_run, partial_path


@dataclasses.dataclass
class PretrainConfig(TrainConfig):
    """Autoregressive pretraining with our own loop (AdamW, warmup + cosine, clipping, accumulation, DDP, exact resume)."""

    stage: ClassVar[str] = "pretrain"
    presets: ClassVar[dict] = {
        "tiny": dict(d_model=64, n_layers=2, n_heads=2, n_kv_heads=2, d_ff=192, seq_len=128, batch_size=8, max_steps=60,
                     warmup_steps=10, lr=3e-3, eval_every=30, eval_batches=4, sample_every=0, checkpoint_every=30),
        "default": dict(d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=768, seq_len=256, batch_size=16, max_steps=250,
                        warmup_steps=40, lr=2e-3, eval_every=100, eval_batches=8, sample_every=150, checkpoint_every=100),
        "gpu": dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, d_ff=2048, seq_len=512, batch_size=64, max_steps=6000,
                    warmup_steps=200, lr=6e-4, eval_every=500, eval_batches=20, sample_every=1000, checkpoint_every=1000, compile=True),
    }

    corpus: str = field("", "corpus: .txt, .jsonl (field text), a folder, a world folder, or hf:NAME (default: <run>/world)")
    run: str = field("", "run directory; reads <run>/tokenizer and writes <run>/pretrain")
    out: str = field("", "output model folder (overrides <run>/pretrain)")
    tokenizer: str = field("", "tokenizer folder (default: <run>/tokenizer, or the --model's own)")
    model: str = field("", "continue pretraining this model (folder or hub id) instead of starting from scratch")
    d_model: int = field(256, "hidden size of a from-scratch model", ge=1)
    n_layers: int = field(4, "number of transformer layers", ge=1)
    n_heads: int = field(4, "attention heads", ge=1)
    n_kv_heads: int = field(4, "key/value heads (grouped-query attention when fewer than --n-heads)", ge=1)
    d_ff: int = field(768, "MLP inner size (SwiGLU)", ge=1)
    seq_len: int = field(256, "training sequence length (also the model's context)", ge=2)
    dropout: float = field(0.0, "residual dropout", ge=0.0, le=0.9)
    batch_size: int = field(16, "sequences per micro-batch per process", ge=1)
    max_steps: int = field(450, "optimiser steps", ge=1)
    lr: float = field(2e-3, "peak learning rate", gt=0.0)
    min_lr_ratio: float = field(0.1, "final learning rate as a fraction of the peak (cosine decay)", ge=0.0, le=1.0)
    warmup_steps: int = field(40, "linear warmup steps", ge=0)
    weight_decay: float = field(0.1, "AdamW weight decay on weight matrices", ge=0.0)
    beta1: float = field(0.9, "AdamW beta1", ge=0.0, lt=1.0)
    beta2: float = field(0.95, "AdamW beta2", ge=0.0, lt=1.0)
    val_fraction: float = field(0.02, "share of documents held out for validation", ge=0.0, le=0.5)
    eval_every: int = field(100, "validation every N steps (and at the end)", ge=0)
    eval_batches: int = field(8, "validation batches per evaluation", ge=1)
    sample_every: int = field(150, "log sampled continuations every N steps (0 = only at the end)", ge=0)
    checkpoint_every: int = field(100, "checkpoint every N steps (and at the end)", ge=0)
    stop_after: int = field(0, "stop after this step as if interrupted, keeping the checkpoint (0 = run to --max-steps)", ge=0)
    compile: bool = field(False, "torch.compile the model")
    seed: int = field(0, "random seed (model init, data order)", ge=0)
    cache_dir: str = field("", "where tokenised corpora are cached (default: <run>/.cache or beside the output)")


def _paths(cfg: PretrainConfig) -> dict[str, Any]:
    run = Path(cfg.run) if cfg.run else None
    out = Path(cfg.out) if cfg.out else (in_run(run, "pretrain") if run else None)
    if out is None:
        raise UserError("--out: give an output folder (or --run)")
    corpus = cfg.corpus or (str(in_run(run, "world")) if run else "")
    if not corpus:
        raise UserError("--corpus: give a corpus (or --run with a world in it)")
    tokenizer = cfg.tokenizer or (cfg.model if cfg.model else (str(in_run(run, "tokenizer")) if run else ""))
    if not tokenizer:
        raise UserError("--tokenizer: give a tokenizer folder (or --run, or --model)")
    cache = Path(cfg.cache_dir) if cfg.cache_dir else ((run / CACHE_FOLDER) if run else out.parent / CACHE_FOLDER)
    return {"out": out, "corpus": corpus, "tokenizer": tokenizer, "cache": cache}


def validate(cfg: PretrainConfig) -> None:
    if not cfg.model and (cfg.d_model % cfg.n_heads or cfg.n_heads % cfg.n_kv_heads):
        raise UserError(f"--d-model ({cfg.d_model}) must divide by --n-heads ({cfg.n_heads}), which must divide by --n-kv-heads ({cfg.n_kv_heads})")


def sample_continuations(model: Any, tok: Any, prompts: list[str], max_new_tokens: int = 48, seed: int = 0) -> list[dict]:
    from ..sampling import SamplingParams, make_sampler, decode_responses
    from ..tokenizer import stop_token_ids

    sampler = make_sampler(model, tok)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    r = sampler.generate(ids, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.8, top_p=0.95, seed=seed, stop_token_ids=stop_token_ids(tok)))
    return [{"prompt": p, "continuation": t} for p, t in zip(prompts, decode_responses(tok, r, stop_token_ids(tok)))]


def run(cfg: PretrainConfig) -> Path:
    import torch

    from ..data.corpus import PackedBatches, tokenize_corpus, unigram_entropy
    from ..evaluation import heldout_lm_loss
    from ..adapters import add_lora, check_quantization, quantization_kwargs
    from ..sharding import Replica, choose, full_state, load_device, shard
    from ..models import autocast_dtype, build_llama, count_parameters, llama_config, load_causal_lm, resize_for_tokenizer, save_model, enable_residual_dropout
    from ..tokenizer import load_tokenizer
    from ..train import Loop, Part, all_reduce_mean, lm_loss, barrier, build_optimizer, in_process_group, seed_everything, wrap_ddp

    validate(cfg)
    paths = _paths(cfg)
    out: Path = paths["out"]
    if cfg.dry_run:
        from ..memory import dry_run

        source = cfg.model or llama_config(load_tokenizer(paths["tokenizer"]), cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
                                           cfg.d_ff, cfg.seq_len)
        dry_run("pretrain", cfg, [("model", source, True, False)], cfg.batch_size * cfg.seq_len, cfg.seq_len)
        return out

    def body(d: Any) -> Path:
        work = partial_path(out)
        check_output(out, cfg.overwrite, cfg.resume)
        seed_everything(cfg.seed)
        tok = load_tokenizer(paths["tokenizer"])
        if d.is_main:  # inputs are read and checked before anything is written
            train_tokens, val_tokens = tokenize_corpus(paths["corpus"], tok, paths["cache"], cfg.val_fraction)
            begin_output(out, overwrite=cfg.overwrite, resume=cfg.resume)
        barrier(d)
        train_tokens, val_tokens = tokenize_corpus(paths["corpus"], tok, paths["cache"], cfg.val_fraction)
        if len(val_tokens) < cfg.seq_len + 1:
            val_tokens = train_tokens[-(cfg.seq_len * cfg.eval_batches * cfg.batch_size + 1):]

        d.sharding = choose(cfg.sharding, d, [(cfg.model or llama_config(tok, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
                                                                          cfg.d_ff, cfg.seq_len), True)])
        if cfg.model:  # continued pretraining, with adapters when asked
            check_quantization(cfg, d.device)
            model = load_causal_lm(cfg.model, load_device(d), quantization=quantization_kwargs(cfg))
            vocab = model.get_input_embeddings().weight.shape[0]
            resize_for_tokenizer(model, tok)
            grown = model.get_input_embeddings().weight.shape[0] > vocab
            model = add_lora(model, cfg, trainable=(model.get_input_embeddings(), model.get_output_embeddings()) if grown else ())
        elif cfg.lora_r or cfg.load_in_4bit:
            raise UserError("--lora-r: a model pretrained from scratch has no base to adapt; pass --model to continue pretraining one")
        else:
            model = build_llama(tok, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff, cfg.seq_len, seed=cfg.seed)
        enable_residual_dropout(model, cfg.dropout)
        if not cfg.load_in_4bit and d.sharding != "fsdp":  # sharding moves each unit's shard to the device
            model.to(d.device)
        model.train()
        autocast = autocast_dtype(d.device, cfg.precision)
        shard(model, d, autocast)
        replica = Replica(model, model, d, everywhere=False)  # the main process samples from full weights
        opt = build_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
        batches = PackedBatches(train_tokens, cfg.seq_len, cfg.batch_size, cfg.seed, d.rank, d.world_size)

        loop = Loop("pretrain", cfg, d, work, {"model": Part(model, opt)}, cfg.max_steps, autocast)
        if loop.state:
            batches.load_state(loop.state["data"])
        ddp_model = wrap_ddp(model, d)
        fwd_model = torch.compile(ddp_model) if cfg.compile else ddp_model
        n_params = count_parameters(model)
        if d.is_main and loop.step == 0:
            ent = unigram_entropy(train_tokens, len(tok))
            loop.log.log(0, params=n_params, train_tokens=int(len(train_tokens)), val_tokens=int(len(val_tokens)), unigram_entropy=ent)

        tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * d.world_size
        t0, tokens_seen, val_loss = time.time(), 0, None
        while loop.running:
            lr = loop.begin_step()
            losses: list[float] = []

            def micro(_: int) -> Any:
                x, y = batches.next_batch()
                loss = lm_loss(fwd_model, x.to(d.device), y.to(d.device))
                losses.append(float(loss.detach()))
                return loss / cfg.grad_accum

            loop.accumulate(ddp_model, list(range(cfg.grad_accum)), micro)
            grad_norm = loop.optimizer_step()
            step = loop.step
            train_loss = all_reduce_mean(sum(losses) / cfg.grad_accum, d)
            tokens_seen += tokens_per_step
            elapsed = time.time() - t0
            row: dict[str, Any] = {"loss": train_loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_seen / max(elapsed, 1e-9)}
            last = loop.finished
            if cfg.eval_every and (step % cfg.eval_every == 0 or last):
                val_loss = all_reduce_mean(heldout_lm_loss(model, val_tokens, cfg.seq_len, cfg.batch_size, cfg.eval_batches, autocast), d)
                row.update(val_loss=val_loss, val_ppl=math.exp(min(val_loss, 50)))
            if (cfg.sample_every and step % cfg.sample_every == 0) or last:
                full = replica.refresh()
            if d.is_main and ((cfg.sample_every and step % cfg.sample_every == 0) or last):
                prompts = _sample_prompts(paths["corpus"], tok)
                samples = sample_continuations(full, tok, prompts, seed=cfg.seed + step)
                with open(work / "samples.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": step, "samples": samples}) + "\n")
            loop.log_step(row, "training loss", postfix={"loss": f"{train_loss:.3f}", "val": f"{val_loss:.3f}" if val_loss is not None else "-",
                                                          "tok_s": f"{row['tokens_per_s']:.0f}"})
            loop.checkpoint({"data": batches.state()}, force=last)
        loop.close()
        step = loop.step
        if step < cfg.max_steps:  # stopped early on purpose: leave the partial folder and its checkpoint
            return work
        state = full_state(model, d) if d.sharding == "fsdp" else None
        if d.is_main:
            save_model(model, tok, work, cfg.model if cfg.save_adapter else "", state=state)
            save_config(cfg, work)
            shutil.rmtree(work / "checkpoint", ignore_errors=True)
            info = {"step": step, "val_loss": val_loss, "params": n_params}
            finish_output(work, out, info)
        barrier(d)
        return out

    return in_process_group(cfg.device, body, owns=out)


def _sample_prompts(corpus: str, tok: Any, n: int = 3) -> list[str]:
    """Beginnings of a few held-out-looking documents, as prompts for the logged sample continuations."""
    import itertools

    from ..data.corpus import iter_documents

    docs = list(itertools.islice(iter_documents(corpus), 200))[::67][:n]
    return [" ".join(doc.split()[:6]) for doc in docs]

"""Step 4, reinforcement learning: PPO (and PPO-ptx) against the reward model, with a per-token KL penalty to the SFT model.

InstructGPT maximises  E[r(x, y) - beta * log(pi(y|x) / pi_SFT(y|x))] + gamma * E_pretrain[log pi(x)].

The story of one step:
  1. take the next batch of prompts (each data-parallel rank its own) and sample responses from the policy at temperature 1,
     cut after the first stop token; the sampler's log-probs are the "old" log-probs (same temperature, same maths);
  2. score in three batched no-grad passes: the frozen reference (SFT) model's log-probs, the value model's values, and the
     frozen reward model's normalised score of each finished response (with a penalty for responses that never end);
  3. per-token rewards = -beta * KL at every response token, plus the score at the last one; advantages by GAE, whitened;
  4. several epochs over shuffled minibatches: clipped policy loss + clipped value loss, and for PPO-ptx the pretraining
     LM loss on pretraining sequences, accumulated into the same policy update;
  5. adapt beta (when a target KL is set), log, sometimes evaluate with the gold judge, checkpoint.

Four models: the policy (from SFT), the reference (SFT, frozen), the reward model (frozen) and the value model
(initialised from the reward model, as InstructGPT did, or a value head on the policy's trunk with
``--value-head-on-policy``). Dropout is off in all four. Sequences are right-padded and trimmed to the longest real one,
so no work is spent on padding beyond each minibatch's longest sequence.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from ..config import TrainConfig, field, save_config
from ..episodes import PromptStream, batched, build_episodes, chunks, encode_records, truncate_after_stop
from ..errors import UserError
from ..policy import RewardScorer, build_value_module, load_sequence_classifier, no_dropout, policy_module, save_value_model, sequence_logprobs
from ..rundir import CACHE_FOLDER, SNAPSHOTS_FOLDER, begin_output, check_output, finish_output, in_run, partial_path, swap_in

# PPO-ptx's default pretraining-loss coefficient gamma. InstructGPT used 27.8 with its own loss scaling (and 175B
# models). With our per-token mean losses and whitened advantages the policy-gradient norm is ~1.5 on the default
# preset, and the pretraining gradient at gamma = 1 is ~2.4 times that: under the shared gradient clip it cut the RL
# part of each update to a third and PPO-ptx learned nothing the reward model taught (docs/ppo.md). At 0.1 the
# pretraining gradient is a fraction of the RL one and still keeps the held-out pretraining loss at or below SFT's.
RECOMMENDED_PTX_COEF = 0.1

RewardFn = Callable[[list[list[int]], list[list[int]]], Sequence[float]]


@dataclasses.dataclass
class PPOConfig(TrainConfig):
    """PPO-ptx (InstructGPT) from the SFT model against the reward model, writing <run>/ppo-ptx; with --ptx-coef 0 it is
    plain PPO, writing <run>/ppo."""

    stage: ClassVar[str] = "ppo"
    presets: ClassVar[dict] = {
        "tiny": dict(steps=4, batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=16, max_prompt_len=64, lr=1e-4,
                     value_lr=1e-4, eval_every=2, eval_prompts=8, sample_every=2, checkpoint_every=2, ptx_seq_len=32,
                     val_tokens=2048, save_policy_every=2),
        "default": dict(steps=20, batch_size=32, minibatch_size=8, ppo_epochs=2, max_new_tokens=48, max_prompt_len=96,
                        lr=5e-5, value_lr=1e-4, eval_every=10, eval_prompts=128, sample_every=5, checkpoint_every=5,
                        ptx_seq_len=64, ptx_per_episode=0.25, val_tokens=16384, save_policy_every=5),
        "gpu": dict(steps=400, batch_size=256, minibatch_size=64, ppo_epochs=4, max_new_tokens=64, max_prompt_len=256,
                    lr=1e-5, value_lr=1e-5, eval_every=25, eval_prompts=256, sample_every=50, checkpoint_every=50,
                    ptx_seq_len=256, ptx_per_episode=1.0, val_tokens=65536, rollout_batch_size=256, save_policy_every=50),
    }

    run: str = field("", "run directory: reads sft/, rm/, world/ and writes ppo/ (or ppo-ptx/)")
    policy: str = field("", "model to start from and to use as the KL reference (default: <run>/sft)")
    reward_model: str = field("", "reward-model folder (default: <run>/rm)")
    value_model: str = field("", "initialise the value model from this folder (default: the reward model)")
    value_head_on_policy: bool = field(False, "use a value head on the policy's trunk instead of a separate value model (less memory)")
    prompts: str = field("", "training prompts, {\"prompt\": text} or {\"messages\": [...]}: a JSONL / JSON / parquet / arrow file, a folder of them, a dataset saved with save_to_disk, or a dataset id (name[:config][[split]]) (default: the world's PPO split)")
    columns: str = field("", "read the prompts' fields under other column names: NAME=COLUMN (for example prompt=question)")
    heldout_share: float = field(0.0, "keep this share of --prompts out of training (chosen by a hash of the prompt), for igpt eval "
                                      "--heldout-share to evaluate on (0 = train on all)", ge=0.0, lt=1.0)
    world: str = field("", "built-in world folder, for prompts and the gold judge (default: <run>/world when present)")
    ptx_corpus: str = field("", "pretraining corpus for PPO-ptx and the held-out pretraining loss (default: <run>/world)")
    out: str = field("", "output folder (default: <run>/ppo, or <run>/ppo-ptx when the ptx coefficient is > 0)")
    ptx_coef: float = field(RECOMMENDED_PTX_COEF, "pretraining-loss coefficient gamma of PPO-ptx (InstructGPT: 27.8 at its scale); 0 = plain PPO", ge=0.0)
    ptx_per_episode: float = field(1.0, "pretraining sequences per RL episode in each policy update (PPO-ptx)", ge=0.0)
    ptx_seq_len: int = field(128, "length of each pretraining sequence (PPO-ptx)", ge=1)
    steps: int = field(20, "PPO steps (each: one batch of rollouts, then the PPO epochs over it)", ge=1)
    batch_size: int = field(32, "episodes (prompts) per step per process", ge=1)
    minibatch_size: int = field(16, "episodes per optimiser update", ge=1)
    grad_accum: int = field(1, "micro-batches per minibatch (gradient accumulation)", ge=1)
    ppo_epochs: int = field(2, "passes over each batch of rollouts", ge=1)
    max_new_tokens: int = field(48, "longest response", ge=1)
    max_prompt_len: int = field(128, "prompts are cut to their last N tokens", ge=1)
    temperature: float = field(1.0, "rollout temperature (log-probs for training use the same temperature)", gt=0.0)
    lr: float = field(1e-5, "policy learning rate", gt=0.0)
    value_lr: float = field(1e-4, "value-model learning rate", gt=0.0)
    lr_schedule: str = field("constant", "learning-rate schedule over --steps: constant, linear or cosine (decay to --min-lr-ratio)",
                             choices=("cosine", "linear", "constant"))
    min_lr_ratio: float = field(0.0, "final learning rate as a fraction of the peak (linear or cosine schedule)", ge=0.0, le=1.0)
    warmup_steps: int = field(0, "linear learning-rate warmup, in PPO steps", ge=0)
    adam_eps: float = field(1e-5, "Adam epsilon (a tiny epsilon makes the first updates too large)", gt=0.0)
    grad_clip: float = field(1.0, "clip each model's gradient norm to this (0 = off)", ge=0.0)
    kl_coef: float = field(0.02, "KL penalty coefficient beta (the initial value when adaptive)", ge=0.0)
    target_kl: float = field(0.0, "adaptive KL: steer the per-response KL to this many nats (0 = fixed beta)", ge=0.0)
    kl_horizon: int = field(10000, "adaptive KL controller horizon, in episodes", ge=1)
    kl_estimator: str = field("k1", "per-token KL estimate in the reward: k1 (log ratio), k2 or k3", choices=("k1", "k2", "k3"))
    gamma: float = field(1.0, "GAE discount", ge=0.0, le=1.0)
    lam: float = field(0.95, "GAE lambda", ge=0.0, le=1.0)
    clip_range: float = field(0.2, "PPO ratio clip", gt=0.0, le=10.0)
    value_clip_range: float = field(0.2, "value clip around the old values", ge=0.0)
    vf_coef: float = field(0.1, "value-loss coefficient", ge=0.0)
    no_eos_penalty: float = field(1.0, "subtract this from the normalised score of responses without a stop token (0 = off)", ge=0.0)
    score_clip: float = field(0.0, "clip normalised scores to +-N (0 = off)", ge=0.0)
    eval_every: int = field(5, "gold-judge evaluation on held-out prompts every N steps, and at the start and end (0 = off)", ge=0)
    eval_prompts: int = field(64, "held-out prompts in the gold-judge sample (fixed for the whole run)", ge=1)
    eval_temperature: float = field(1.0, "sampling temperature of the gold-judge evaluation", ge=0.0)
    val_tokens: int = field(16384, "held-out pretraining tokens for the pretraining-loss metric, measured with the gold evaluation (0 = off)", ge=0)
    sample_every: int = field(5, "write a table of sample responses to samples.jsonl every N steps (0 = off)", ge=0)
    n_samples: int = field(4, "rows in each sample table", ge=0)
    checkpoint_every: int = field(5, "checkpoint every N steps (and at the end)", ge=0)
    save_policy_every: int = field(0, "also keep the policy every N steps as a model folder in <out>/snapshots/step-N, for the "
                                      "over-optimisation curve of igpt eval (0 = off)", ge=0)
    stop_after: int = field(0, "stop after this step as if interrupted, keeping the checkpoint (0 = run to --steps)", ge=0)
    rollout_batch_size: int = field(64, "sequences sampled together", ge=1)
    forward_batch_size: int = field(64, "sequences per no-grad scoring pass (reference, value, reward)", ge=1)
    seed: int = field(0, "random seed (prompt order, sampling, minibatches)", ge=0)
    cache_dir: str = field("", "where the tokenised pretraining corpus is cached (default: <run>/.cache)")


def validate(cfg: PPOConfig) -> None:
    if cfg.minibatch_size > cfg.batch_size:
        raise UserError(f"--minibatch-size ({cfg.minibatch_size}) must not exceed --batch-size ({cfg.batch_size})")
    if cfg.batch_size % cfg.minibatch_size:
        raise UserError(f"--batch-size ({cfg.batch_size}) must be a multiple of --minibatch-size ({cfg.minibatch_size})")
    if cfg.minibatch_size % cfg.grad_accum:
        raise UserError(f"--minibatch-size ({cfg.minibatch_size}) must be a multiple of --grad-accum ({cfg.grad_accum})")


def kl_horizon_note(cfg: PPOConfig, world_size: int = 1) -> str | None:
    """A one-line note when the adaptive KL controller cannot act within the run: its horizon is in episodes (Ziegler et
    al.: 10,000, at 512 episodes a step), and each step moves beta by at most a factor 1 + 0.2 x episodes / horizon, so
    a short run with the default horizon leaves beta where it started."""
    if cfg.target_kl <= 0:
        return None
    per_step = cfg.batch_size * world_size
    reach = (1.0 + 0.2 * per_step / cfg.kl_horizon) ** cfg.steps
    if reach >= 2.0:
        return None
    total = per_step * cfg.steps
    return (f"ppo: --target-kl {cfg.target_kl:g} with --kl-horizon {cfg.kl_horizon}: over {cfg.steps} steps of {per_step} "
            f"episodes beta can change by at most x{reach:.2f}; a horizon of about a quarter of the run's {total} episodes "
            f"(--kl-horizon {max(1, total // 4)}) lets the controller act")


def resolve_paths(cfg: PPOConfig, have_reward_fn: bool = False) -> dict[str, Any]:
    """Where every input comes from and where the output goes; errors name the missing option."""
    run = Path(cfg.run) if cfg.run else None
    ptx = cfg.ptx_coef > 0
    out = Path(cfg.out) if cfg.out else (in_run(run, "ppo_ptx" if ptx else "ppo") if run else None)
    if out is None:
        raise UserError("--out: give an output folder (or --run)")
    policy = cfg.policy or (str(in_run(run, "sft")) if run else "")
    if not policy:
        raise UserError("--policy: give the SFT model folder (or --run)")
    if not Path(policy).exists() and Path(policy).is_absolute():
        raise UserError(f"--policy: {policy} does not exist (run igpt sft first)")
    if run and not cfg.policy and not in_run(run, "sft").is_dir():
        raise UserError(f"{in_run(run, 'sft')} is missing; run igpt sft first (or give --policy)")
    reward = cfg.reward_model or (str(in_run(run, "rm")) if run and in_run(run, "rm").is_dir() else "")
    if not reward and not have_reward_fn:
        raise UserError("--reward-model: give a reward-model folder (or --run with rm/ in it)")
    if reward and not Path(reward).exists():
        raise UserError(f"--reward-model: {reward} does not exist (run igpt rm first)")
    world = cfg.world or (str(in_run(run, "world")) if run and in_run(run, "world", "world.json").is_file() else "")
    if world and not (Path(world) / "world.json").is_file():
        raise UserError(f"--world: {world} is not a world folder (no world.json)")
    if not cfg.prompts and not world:
        raise UserError("--prompts: give a JSONL of prompts (or --run/--world with the built-in world)")
    corpus = cfg.ptx_corpus or world
    if ptx and not corpus:
        raise UserError("--ptx-corpus: PPO-ptx (--ptx-coef > 0, the default) needs a pretraining corpus; give --ptx-corpus "
                        "(or --run/--world with the built-in world), or --ptx-coef 0 for plain PPO")
    cache = Path(cfg.cache_dir) if cfg.cache_dir else ((run / CACHE_FOLDER) if run else out.parent / CACHE_FOLDER)
    return {"out": out, "policy": policy, "reward": reward, "value": cfg.value_model or reward, "world": world, "corpus": corpus,
            "cache": cache}


# ---------------------------------------------------------------------------------------------- prompts
def load_prompt_records(cfg: PPOConfig, world: Any) -> list[dict]:
    """Training prompts: the user's JSONL, or the world's PPO split."""
    if cfg.prompts:
        from ..data.chat import heldout_prompts, read_prompts
        from ..data.sources import parse_columns

        rows = read_prompts(cfg.prompts, parse_columns(cfg.columns))
        if cfg.heldout_share > 0:
            rows = heldout_prompts(rows, cfg.heldout_share, heldout=False)
        records = [{"id": r.get("id", i), "prompt": r["messages"] if isinstance(r.get("messages"), list) else r["prompt"]}
                   for i, r in enumerate(rows)]
    else:
        records = list(world.prompts("ppo"))
    if not records:
        kept = f" outside the --heldout-share {cfg.heldout_share:g}" if cfg.prompts and cfg.heldout_share > 0 else ""
        raise UserError(f"{cfg.prompts or 'the world'}: no training prompts{kept}")
    return records


# ---------------------------------------------------------------------------------------------- evaluation helpers
def gold_eval(policy_lm: Any, tok: Any, world: Any, records: list[dict], prompt_ids: list[list[int]], cfg: PPOConfig,
              stop_ids: list[int]) -> dict:
    """Mean gold-judge score of the policy's responses to a fixed held-out prompt sample (same sampling seed each time)."""
    from ..evaluation import sample_and_judge
    from ..sampling import SamplingParams, make_sampler

    sampler = make_sampler(policy_lm, tok, batch_size=cfg.rollout_batch_size)
    params = SamplingParams(cfg.max_new_tokens, cfg.eval_temperature, 0, 1.0, cfg.seed + 12345, stop_ids)
    _, scores, lengths = sample_and_judge(sampler, tok, prompt_ids, records, world.judge(), params)
    return {"gold_score": sum(scores) / max(1, len(scores)), "eval_response_len": sum(lengths) / max(1, len(lengths))}


def heldout_tokens(tok: Any, world: Any, corpus_val: Any, max_tokens: int, corpus_train: Any = None) -> Any:
    """Held-out pretraining tokens for the policy's pretraining loss: the world's held-out corpus when there is a world,
    else the corpus's validation split (or, for a corpus too small to have one, the end of its training split)."""
    from ..evaluation import heldout_ids

    if world is not None:
        return heldout_ids(tok, world.corpus("heldout"), max_tokens)
    for tokens, part in ((corpus_val, slice(0, max_tokens + 1)), (corpus_train, slice(-(max_tokens + 1), None))):
        if tokens is not None and len(tokens) > 1:
            return tokens[part]
    return None


# ---------------------------------------------------------------------------------------------- the stage
def run(cfg: PPOConfig, reward_fn: RewardFn | None = None) -> Path:
    """Train the policy with PPO (PPO-ptx when the ptx coefficient is > 0) and write it as a model folder.

    ``reward_fn(prompt_ids, response_ids) -> scores`` replaces the reward model (tests, custom rewards); the scores are
    used as they are (already "normalised").
    """
    import numpy as np
    import torch

    from .. import rl
    from ..adapters import BaseView, adapters_off_call, add_lora, check_quantization, has_lora, quantization_kwargs, reference
    from ..sharding import Replica, choose, full_state, load_device, shard
    from ..models import autocast_dtype, count_parameters, load_causal_lm, resize_for_tokenizer, save_model
    from ..memory import hard_context
    from ..sampling import SamplingParams, fit_context, make_sampler
    from ..tokenizer import load_tokenizer, stop_token_ids
    from ..evaluation import heldout_lm_loss
    from ..train import Loop, Part, all_reduce_mean, barrier, build_optimizer, check_finite, in_process_group, seed_everything, wrap_ddp

    from transformers.utils import logging as hf_logging

    validate(cfg)
    paths = resolve_paths(cfg, have_reward_fn=reward_fn is not None)
    hf_logging.disable_progress_bar()
    out: Path = paths["out"]
    ptx_coef = cfg.ptx_coef
    if cfg.dry_run:  # a minibatch's micro-batch of whole episodes (prompt and response) is what the update holds
        from ..memory import dry_run

        models = [("policy", paths["policy"], True, False), ("reference", paths["policy"], False, False)]
        shared = cfg.lora_r and not cfg.value_head_on_policy and paths["value"] == paths["reward"]  # the value adapter's trunk
        models += [("reward", paths["reward"], False, True)] if paths["reward"] and not shared else []
        models += [] if cfg.value_head_on_policy else [("value", paths["value"] or paths["policy"], True, True)]
        seq = cfg.max_prompt_len + cfg.max_new_tokens
        dry_run("ppo-ptx" if ptx_coef > 0 else "ppo", cfg, models, cfg.minibatch_size // cfg.grad_accum * seq, seq)
        return out

    def body(d: Any) -> Path:
        work = partial_path(out)
        check_output(out, cfg.overwrite, cfg.resume)
        seed_everything(cfg.seed)
        dev = d.device
        autocast = autocast_dtype(dev, cfg.precision)

        # ---- data: prompts, held-out gold sample, pretraining corpus
        world = None
        if paths["world"]:
            from ..world import World

            world = World.load(paths["world"])
        tok = load_tokenizer(paths["policy"])
        records = load_prompt_records(cfg, world)
        # a policy with learned positions (GPT-2, OPT) has no room past its context: prompts keep their end
        context = hard_context(paths["policy"])

        def encode(recs: list[dict]) -> list[list[int]]:
            return fit_context(encode_records(tok, recs, cfg.max_prompt_len), context, cfg.max_new_tokens)

        prompt_ids = encode(records)
        eval_records: list[dict] = []
        if world is not None and cfg.eval_every > 0:
            pool = list(world.prompts("eval"))
            pick = np.random.default_rng(cfg.seed).permutation(len(pool))[: cfg.eval_prompts]
            eval_records = [pool[i] for i in sorted(pick)]
        eval_ids = encode(eval_records) if eval_records else []
        ptx_batches, corpus_val, train_tokens = None, None, None
        if paths["corpus"] and (ptx_coef > 0 or (cfg.val_tokens > 0 and world is None)):
            from ..data.corpus import PackedBatches, tokenize_corpus

            if d.is_main:
                tokenize_corpus(paths["corpus"], tok, paths["cache"])
            barrier(d)
            train_tokens, corpus_val = tokenize_corpus(paths["corpus"], tok, paths["cache"])
            if ptx_coef > 0:
                n_ptx = max(1, round(cfg.ptx_per_episode * cfg.minibatch_size))
                ptx_batches = PackedBatches(train_tokens, cfg.ptx_seq_len, n_ptx, cfg.seed, d.rank, d.world_size)
        val_tokens = heldout_tokens(tok, world, corpus_val, cfg.val_tokens, train_tokens) if cfg.val_tokens > 0 else None
        if d.is_main:
            begin_output(out, overwrite=cfg.overwrite, resume=cfg.resume)
        barrier(d)

        # ---- the four models
        stop_ids = stop_token_ids(tok, None)
        check_quantization(cfg, dev)
        # replicated: the four models' weights, and the two trained ones' gradients and AdamW state
        d.sharding = choose(cfg.sharding, d, [(paths["policy"], True)] * 2 + [(paths["policy"], False)] * 2)
        sharded = d.sharding == "fsdp"
        where = load_device(d)  # sharded: loaded on the CPU, each unit's shard moved to the device as it is sharded
        # a policy whose tokenizer gained tokens (a base model's: pad, the chat markers) grows alike in both copies
        policy_lm = add_lora(no_dropout(resize_for_tokenizer(load_causal_lm(paths["policy"], where, quantization=quantization_kwargs(cfg)), tok)),
                             cfg, what="policy")
        stop_ids = sorted(set(stop_ids) | set(stop_token_ids(tok, getattr(policy_lm, "generation_config", None))))
        ref_lm = reference(policy_lm, lambda: no_dropout(resize_for_tokenizer(load_causal_lm(paths["policy"], device=where), tok)))
        value_src = paths["value"] or paths["policy"]
        # with adapters, the value model is a second adapter (and its own head) on the reward model's frozen trunk, which
        # scores with that adapter off: one reward-model trunk in memory, not two (unsharded: the scorer reads the trunk
        # directly, which a sharded model allows only through its root)
        share_rm = (bool(cfg.lora_r) and not cfg.value_head_on_policy and reward_fn is None and value_src == paths["reward"]
                    and not sharded)
        scorer = None
        if reward_fn is None and not share_rm:
            scorer = RewardScorer(no_dropout(load_sequence_classifier(paths["reward"], where)).requires_grad_(False))
        value_head, value_module = None, None
        if cfg.value_head_on_policy:
            value_head = torch.nn.Linear(policy_lm.config.hidden_size, 1).to(where)
            torch.nn.init.zeros_(value_head.weight)
            torch.nn.init.zeros_(value_head.bias)
        else:
            value_module = build_value_module(value_src, where, tok, own_head=share_rm)
            add_lora(value_module.model, cfg, trainable=() if share_rm else (value_module.head,), what="value model")
        if share_rm:
            scorer = RewardScorer(BaseView(value_module.model))
        if scorer is not None and scorer.model.get_input_embeddings().weight.shape[0] < len(tok):
            raise UserError(f"--reward-model: {paths['reward']} has a smaller vocabulary than the policy's tokenizer; "
                            "the reward model must share the policy's tokenizer")
        policy = policy_module(policy_lm, value_head).to(where)
        policy.eval()
        if sharded:  # every model's forwards go through a root module that gathers its shards
            shard(policy, d, autocast)
            ref_lm = adapters_off_call(policy) if has_lora(policy_lm) else shard(policy_module(ref_lm), d, autocast)
            shard(value_module, d, autocast)
            if scorer is not None:
                shard(scorer, d, autocast)
        # sharded: the full weights every process samples from (bf16 on a GPU: the old log-probs are recomputed anyway)
        replica = Replica(policy_lm, policy, d, prefix="lm.", dtype=autocast)
        opt_policy = build_optimizer(policy, cfg.lr, weight_decay=0.0, betas=(0.9, 0.999), eps=cfg.adam_eps)
        opt_value = build_optimizer(value_module, cfg.value_lr, 0.0, (0.9, 0.999), cfg.adam_eps) if value_module is not None else None
        if value_head is not None:  # the head on the policy trunk learns at the value learning rate
            head_ids = {id(p) for p in value_head.parameters()}
            for g in list(opt_policy.param_groups):
                g["params"] = [p for p in g["params"] if id(p) not in head_ids]
            opt_policy.add_param_group({"params": list(value_head.parameters()), "weight_decay": 0.0, "lr_scale": cfg.value_lr / cfg.lr})
        kl_ctl = rl.kl_controller(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
        note = kl_horizon_note(cfg, d.world_size)
        if note and d.is_main:
            print(note, file=sys.stderr)
        stream = PromptStream(len(prompt_ids), cfg.batch_size, cfg.seed, d.rank, d.world_size)

        # each model is clipped over its optimiser's parameters; the value model follows the policy's schedule, scaled
        parts = {"policy": Part(policy, opt_policy, clip=_params(opt_policy))}
        if value_module is not None:
            parts["value"] = Part(value_module, opt_value, clip=_params(opt_value), lr=cfg.value_lr)
        loop = Loop("ppo-ptx" if ptx_coef > 0 else "ppo", cfg, d, work, parts, cfg.steps, autocast)
        episodes_done = loop.state.get("episodes", 0)
        if loop.state:
            stream.load_state(loop.state["prompts"])
            kl_ctl.load_state(loop.state["kl"])
            if ptx_batches is not None and loop.state.get("ptx"):
                ptx_batches.load_state(loop.state["ptx"])

        ddp_policy, ddp_value = wrap_ddp(policy, d, find_unused=value_head is not None), wrap_ddp(value_module, d)
        sampler = make_sampler(replica.refresh(loop.step), tok, batch_size=cfg.rollout_batch_size)

        def ref_logprobs_of(e: Any) -> Any:
            if sharded:
                return ref_lm(e.input_ids, e.gather_pos, e.response, cfg.temperature)[0]
            return sequence_logprobs(ref_lm, e, cfg.temperature)

        def evaluate(at_step: int) -> dict:
            row: dict[str, Any] = {}
            full = replica.refresh(at_step)  # every process holds the full weights
            if eval_records and d.is_main:
                row.update(gold_eval(full, tok, world, eval_records, eval_ids, cfg, stop_ids))
            if val_tokens is not None:
                row["pretrain_val_loss"] = heldout_lm_loss(full, val_tokens, autocast=autocast)
            barrier(d)
            return row

        if loop.step == 0 and d.is_main:
            loop.log.log(0, policy_params=count_parameters(policy_lm), prompts=len(prompt_ids), ptx_coef=ptx_coef, **evaluate(0))
        elif loop.step == 0:
            evaluate(0)

        stop_set = set(stop_ids)
        last_gold = None
        while loop.running:
            step = loop.step
            t_start = time.time()
            lr = loop.begin_step()
            # 1. rollouts
            idx = stream.next()
            batch_prompts = [prompt_ids[i] for i in idx]
            params = SamplingParams(cfg.max_new_tokens, cfg.temperature, 0, 1.0, _seed(cfg.seed, step, d.rank), stop_ids)
            if sharded:
                sampler.update_weights(replica.refresh(step))
            roll = sampler.generate(batch_prompts, params)
            responses, finished, old_lp = [], [], []
            for r_ids, r_lp in zip(roll.response_ids, roll.logprobs):
                ids, fin = truncate_after_stop(list(r_ids), stop_set)
                responses.append(ids)
                finished.append(fin)
                old_lp.append(list(r_lp[: len(ids)]))
            ep = build_episodes(batch_prompts, responses, finished, tok.pad_token_id, dev)
            old_logprobs = torch.zeros_like(ep.mask)
            for i, lp in enumerate(old_lp):
                old_logprobs[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
            t_sampled = time.time()

            # 2. scoring: reference log-probs, old values, reward-model scores (no grad, batched)
            with torch.no_grad(), torch.autocast(dev.type, dtype=autocast, enabled=autocast is not None):
                if not sampler.logprobs_are_exact or sharded:  # sampled elsewhere than training computes: the policy's own
                    old_logprobs = batched(lambda e: policy(e.input_ids, e.gather_pos, e.response, cfg.temperature)[0], ep,
                                           cfg.forward_batch_size)
                ref_logprobs = batched(ref_logprobs_of, ep, cfg.forward_batch_size)
                if value_module is not None:
                    old_values = batched(lambda e: value_module(e.input_ids, e.gather_pos), ep, cfg.forward_batch_size)
                else:
                    old_values = batched(lambda e: policy(e.input_ids, e.gather_pos, e.response, cfg.temperature)[2], ep,
                                         cfg.forward_batch_size)
                if scorer is not None:
                    raw_scores = torch.cat([scorer(ep.input_ids[sl, : int(ep.seq_len[sl].max())], ep.seq_len[sl])
                                            for sl in chunks(len(idx), cfg.forward_batch_size)])
                else:
                    raw_scores = torch.tensor([float(s) for s in reward_fn(batch_prompts, responses)], dtype=torch.float32, device=dev)
            scores = raw_scores.float()
            if cfg.score_clip > 0:
                scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
            if cfg.no_eos_penalty > 0:
                scores = torch.where(ep.finished, scores, scores - cfg.no_eos_penalty)
            old_values = old_values * ep.mask
            check_finite("reward-model score", all_reduce_mean(float(scores.sum()), d), f"step {step + 1}")
            check_finite("reference log-prob", all_reduce_mean(float((ref_logprobs * ep.mask).sum()), d), f"step {step + 1}")

            # 3. rewards and advantages
            rewards, kl = rl.kl_penalty_rewards(scores, old_logprobs, ref_logprobs, ep.mask, kl_ctl.beta, cfg.kl_estimator)
            advantages, returns = rl.gae(rewards, old_values, ep.mask, cfg.gamma, cfg.lam)
            advantages = rl.masked_whiten(advantages, ep.mask, stats=rl.global_stats(advantages, ep.mask, d))
            t_scored = time.time()
            if sharded:  # the sampler's copy is gathered again for the next rollouts: its memory is training's meanwhile
                sampler.update_weights(None)
                replica.release()

            # 4. PPO epochs over shuffled minibatches
            value_lr = lr * cfg.value_lr / cfg.lr
            gen = torch.Generator().manual_seed(_seed(cfg.seed, step, d.rank) + 1)
            totals: dict[str, float] = {}
            n_updates, B = 0, len(idx)
            micro = cfg.minibatch_size // cfg.grad_accum
            for _epoch in range(cfg.ppo_epochs):
                perm = torch.randperm(B, generator=gen).to(dev)
                for mb_start in range(0, B, cfg.minibatch_size):
                    mb_rows = perm[mb_start : mb_start + cfg.minibatch_size]
                    n_tok = rl.minibatch_tokens(ep.mask[mb_rows], d)  # losses are means over the minibatch's tokens on every rank
                    mb: dict[str, float] = {}

                    def add(**stats: Any) -> None:
                        for key, val in stats.items():
                            mb[key] = mb.get(key, 0.0) + float(val)

                    def rl_loss(rows: Any) -> Any:
                        sub = ep.select(rows)
                        m, R = sub.mask, sub.mask.shape[1]
                        logprobs, entropy, head_values = ddp_policy(sub.input_ids, sub.gather_pos, sub.response, cfg.temperature)
                        pg_loss, pg = rl.policy_loss(logprobs, old_logprobs[rows, :R], advantages[rows, :R], m, cfg.clip_range, n_tok)
                        values = head_values if ddp_value is None else ddp_value(sub.input_ids, sub.gather_pos)
                        vf_loss, vf = rl.value_loss(values, old_values[rows, :R], returns[rows, :R], m, cfg.value_clip_range, n_tok)
                        add(policy_loss=pg_loss.detach(), value_loss=vf_loss.detach(), clipfrac=pg["clipfrac"], value_clipfrac=vf["clipfrac"],
                            approx_kl=pg["approx_kl"], entropy=(entropy * m).sum() / n_tok)
                        return pg_loss + cfg.vf_coef * vf_loss

                    # PPO-ptx: the pretraining gradients are accumulated into the same policy update, after the RL ones
                    loop.accumulate((ddp_policy, ddp_value), [mb_rows[k * micro : (k + 1) * micro] for k in range(cfg.grad_accum)],
                                    rl_loss, hold=(ddp_policy,) if ptx_batches is not None else ())
                    if ptx_batches is not None:
                        mb["rl_grad_norm"] = _grad_norm(opt_policy)  # before the pretraining term (this rank's, unsynced)
                        ptx_x, ptx_y = (x.to(dev) for x in ptx_batches.next_batch())

                        def ptx_loss(sl: slice) -> Any:
                            loss = ddp_policy(ptx_x[sl], ptx_targets=ptx_y[sl])
                            frac = (sl.stop - sl.start) / ptx_x.shape[0]
                            add(ptx_loss=float(loss.detach()) * frac)
                            return ptx_coef * frac * loss

                        loop.accumulate(ddp_policy, list(chunks(ptx_x.shape[0], math.ceil(ptx_x.shape[0] / cfg.grad_accum))), ptx_loss)
                    check_finite("loss", all_reduce_mean(mb["policy_loss"] + mb["value_loss"] + mb.get("ptx_loss", 0.0), d), f"step {step + 1}")
                    norms = loop.update()
                    mb["grad_norm"] = norms["policy"]
                    if "value" in norms:
                        mb["value_grad_norm"] = norms["value"]
                    for key, val in mb.items():
                        totals[key] = totals.get(key, 0.0) + val
                    n_updates += 1
            sampler.update_weights(policy_lm)  # the next rollouts sample from the updated policy
            t_trained = time.time()

            # 5. statistics, KL controller, logging
            seq_kl = float(all_reduce_mean(float((kl.sum(-1)).mean()), d))
            mean_score = all_reduce_mean(float(scores.mean()), d)
            check_finite("reward", mean_score, f"step {step + 1}")
            check_finite("KL", seq_kl, f"step {step + 1}")
            beta_used = kl_ctl.beta
            kl_ctl.update(seq_kl, B * d.world_size)
            loop.advance()
            step = loop.step
            episodes_done += B * d.world_size
            if cfg.save_policy_every and step % cfg.save_policy_every == 0 and step < cfg.steps:
                state = full_state(policy, d, "lm.") if sharded else None
                if d.is_main:
                    tmp = work / SNAPSHOTS_FOLDER / f"step-{step}.tmp"
                    shutil.rmtree(tmp, ignore_errors=True)
                    save_model(policy_lm, tok, tmp, state=state)
                    swap_in(tmp, tmp.with_name(f"step-{step}"))
            row: dict[str, Any] = {
                "reward": all_reduce_mean(float(rewards.sum(-1).mean()), d),
                "score": mean_score,
                "kl": seq_kl,
                "kl_k3": all_reduce_mean(float(rl.kl_estimate(old_logprobs, ref_logprobs, "k3").mul(ep.mask).sum(-1).mean()), d),
                "beta": beta_used,
                "response_len": all_reduce_mean(float(ep.mask.sum(-1).mean()), d),
                "finished_frac": all_reduce_mean(float(ep.finished.float().mean()), d),
                "explained_variance": rl.global_explained_variance(old_values, returns, ep.mask, d),
                "value_mean": float(rl.global_stats(old_values, ep.mask, d)[0]),
                "lr": lr, "value_lr": value_lr, "episodes": episodes_done,
                "time_sample": t_sampled - t_start, "time_score": t_scored - t_sampled, "time_train": t_trained - t_scored,
            }
            for key, val in totals.items():
                row[key] = all_reduce_mean(val / max(1, n_updates), d)
            if cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
                row.update(evaluate(step))
                last_gold = row.get("gold_score", last_gold)
            if d.is_main and cfg.sample_every > 0 and (step % cfg.sample_every == 0 or step == cfg.steps):
                _write_samples(work, step, tok, roll, responses, batch_prompts, scores, kl, idx, records, world, stop_ids, cfg.n_samples)
            row["episodes_per_s"] = B * d.world_size / max(time.time() - t_start, 1e-9)
            loop.log_step(row, postfix={"score": f"{mean_score:.3f}", "kl": f"{seq_kl:.2f}", "beta": f"{beta_used:.3g}",
                                        "gold": f"{last_gold:.3f}" if last_gold is not None else "-"})
            loop.checkpoint({"episodes": episodes_done, "prompts": stream.state(), "kl": kl_ctl.state(),
                             "ptx": ptx_batches.state() if ptx_batches is not None else None})
        loop.close()
        if not loop.finished:  # stopped early on purpose: leave the partial folder and its checkpoint
            return work
        step = loop.step
        whole = full_state(policy, d) if sharded else None  # the policy module: the LM, and a value head on its trunk
        state = {k[3:]: v for k, v in whole.items() if k.startswith("lm.")} if sharded else None
        value_state = full_state(value_module, d) if sharded and value_module is not None else None
        if d.is_main:
            save_model(policy_lm, tok, work, str(paths["policy"]) if cfg.save_adapter else "", state=state)
            if value_module is not None:
                save_value_model(value_module, work / "value", state=value_state)
            elif value_head is not None:
                from safetensors.torch import save_file

                (work / "value").mkdir(exist_ok=True)
                head = {k[11:]: v for k, v in whole.items() if k.startswith("value_head.")} if sharded else value_head.state_dict()
                save_file({k: v.detach().cpu().contiguous() for k, v in head.items()}, str(work / "value" / "value_head.safetensors"))
            save_config(cfg, work)
            shutil.rmtree(work / "checkpoint", ignore_errors=True)
            finish_output(work, out, {"step": step, "episodes": episodes_done, "ptx_coef": ptx_coef, "gold_score": last_gold,
                                      "final_beta": kl_ctl.beta})
        barrier(d)
        return out

    return in_process_group(cfg.device, body, owns=out)


# ---------------------------------------------------------------------------------------------- small helpers
def _seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 4099 + rank * 7919 + 17) % (2**62)


def _params(opt: Any) -> list:
    """The optimiser's parameters, in its order."""
    return [p for g in opt.param_groups for p in g["params"]]


def _grad_norm(opt: Any) -> float:
    """The global L2 norm of the gradients the optimiser holds now (no clipping)."""
    import torch

    norms = [p.grad.detach().float().norm() for p in _params(opt) if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _write_samples(work: Path, step: int, tok: Any, roll: Any, responses: list[list[int]], prompts: list[list[int]], scores: Any,
                   kl: Any, idx: list[int], records: list[dict], world: Any, stop_ids: list[int], n: int) -> None:
    stops = set(stop_ids)
    rows = []
    judge = world.judge() if world is not None else None
    for i in range(min(n, len(responses))):
        ids = responses[i][:-1] if responses[i] and responses[i][-1] in stops else responses[i]
        text = tok.decode(ids, skip_special_tokens=True)
        row = {"prompt": tok.decode(prompts[i], skip_special_tokens=True), "response": text, "score": round(float(scores[i]), 4),
               "kl": round(float(kl[i].sum()), 4), "length": len(responses[i])}
        if judge is not None and "family" in records[idx[i]]:
            row["gold"] = round(float(judge.score(records[idx[i]], text).score), 4)
        rows.append(row)
    with open(work / "samples.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "samples": rows}, ensure_ascii=False) + "\n")

"""Beyond the paper: direct preference optimisation (DPO, Rafailov et al. 2023) on the comparisons the reward model learns from.

The story of the stage: read the comparisons exactly as ``igpt rm`` does (the run's comparison store, or ranked /
pairwise / Anthropic HH files, with the same held-out split); start the policy from the SFT model and keep a frozen copy
of it as the reference; for each comparison, score every response once under both (the sum of the response tokens'
log-probabilities, the end-of-turn token included), and train on the implicit rewards beta * log(pi / pi_ref) with the
reward model's own loss: all C(K, 2) pairs of a prompt in one batch element, -log sigmoid(r_better - r_worse) averaged
over them (``--loss ipo``: IPO's squared loss, Azar et al. 2023). No reward model, no sampling, no value model.
Measured on the held-out comparisons: how often the implicit reward orders a pair the way the labelers did, and the mean
margin r_better - r_worse (both 0.5 and 0 before the first step, when the policy is the reference).

Output ``<run>/dpo/``: a plain Hugging Face causal-LM folder (``AutoModelForCausalLM`` loads it).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

from ..config import field, save_config
from ..errors import UserError
from ..rundir import begin_output, check_output, finish_output, partial_path
from .reward import ComparisonsConfig


@dataclasses.dataclass
class DPOConfig(ComparisonsConfig):
    """DPO (or IPO) from the SFT model, with the SFT model as the reference, on the reward model's comparisons."""

    stage: ClassVar[str] = "dpo"
    presets: ClassVar[dict] = {
        "tiny": dict(batch_size=8, lr=1e-4, warmup_steps=2, eval_every=0, checkpoint_every=20),
        # lr: the best held-out implicit-reward accuracy of 5e-5, 2e-4 and 1e-3 on seed 0's comparisons (docs/beyond.md)
        "default": dict(batch_size=16, lr=2e-4, warmup_steps=4, eval_every=25, checkpoint_every=20),
        "gpu": dict(batch_size=32, lr=5e-7, warmup_steps=10, eval_every=50, checkpoint_every=100),
    }

    run: str = field("", "run directory; reads <run>/comparisons and <run>/sft; writes <run>/dpo")
    out: str = field("", "output folder (overrides <run>/dpo)")
    model: str = field("", "the model to start from, also the frozen reference (default: <run>/sft)")
    beta: float = field(0.1, "strength of the implicit KL constraint to the reference (DPO's and IPO's beta)", gt=0.0)
    loss: str = field("dpo", "dpo (logistic loss on the implicit rewards) or ipo (squared loss, Azar et al. 2023)", choices=("dpo", "ipo"))
    epochs: int = field(1, "passes over the training comparisons", ge=1)
    batch_size: int = field(16, "comparisons (prompts with all their pairs) per micro-batch per process", ge=1)
    lr: float = field(5e-5, "peak learning rate", gt=0.0)
    warmup_steps: int = field(4, "linear warmup steps", ge=0)
    weight_decay: float = field(0.0, "AdamW weight decay on weight matrices", ge=0.0)
    eval_every: int = field(25, "held-out accuracy and margin every N steps (0 = at the start and the end only)", ge=0)
    checkpoint_every: int = field(20, "checkpoint every N steps (and at the end)", ge=0)
    seed: int = field(0, "random seed (data order)", ge=0)


class ResponseEncoder:
    """(prompt ids, response ids) of a comparison's response, rendered as one finished chat: the response is what the
    chat template adds after the generation prompt (its end-of-turn token included). Cached, so a response shared by
    many pairs is tokenised once; an overlong one loses the start of its prompt (then of its response) to ``max_len``."""

    def __init__(self, tok: Any, max_len: int):
        self.tok, self.max_len = tok, max_len
        self.cache: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self.truncated = 0

    def __call__(self, prompt: Any, response: str) -> tuple[list[int], list[int]]:
        from ..data.preferences import prompt_key

        key = (prompt_key(prompt), response)
        if key not in self.cache:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            head = list(self.tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False))
            full = list(self.tok.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=True,
                                                     add_generation_prompt=False, return_dict=False))
            if full[: len(head)] != head or len(full) == len(head):
                raise UserError("the tokenizer's chat template does not render a reply as the generation prompt followed by "
                                "the response; DPO needs to know which tokens are the response's")
            p, r = head, full[len(head) :]
            if self.max_len and len(p) + len(r) > self.max_len:
                self.truncated += 1
                r = r[: max(1, self.max_len - 1)]
                p = p[max(0, len(p) + len(r) - self.max_len) :]
            self.cache[key] = (p, r)
        return self.cache[key]


def response_logprobs(model: Any, batch: list[tuple[list[int], list[int]]], pad_id: int, device: Any) -> Any:
    """The sum of each response's token log-probabilities after its prompt, shape (N,); ``model`` is a causal LM or the
    (DDP-wrapped) policy module, whose forward is ``policy.token_logprobs``'s."""
    from ..episodes import build_episodes
    from ..policy import sequence_logprobs

    ep = build_episodes([p for p, _ in batch], [r for _, r in batch], [True] * len(batch), pad_id, device)
    if hasattr(model, "get_output_embeddings"):
        logprobs = sequence_logprobs(model, ep, 1.0)
    else:
        logprobs = model(ep.input_ids, ep.gather_pos, ep.response, 1.0)[0]
    return (logprobs * ep.mask).sum(-1)


def implicit_rewards(policy: Any, ref: Any, batch: list[tuple[list[int], list[int]]], beta: float, pad_id: int, device: Any) -> Any:
    """beta * (log pi(y|x) - log pi_ref(y|x)) for each (prompt, response): DPO's implicit reward."""
    import torch

    with torch.no_grad():
        ref_lp = response_logprobs(ref, batch, pad_id, device)
    return beta * (response_logprobs(policy, batch, pad_id, device) - ref_lp)


def evaluate(policy_lm: Any, ref_lm: Any, items: list[dict], encode: ResponseEncoder, beta: float, pad_id: int, device: Any,
             autocast: Any, batch_size: int = 32) -> dict:
    """Held-out comparisons: the share of labelled pairs the implicit reward orders the labelers' way (by labeler pool,
    and overall; ties count half) and the mean margin r_better - r_worse over those pairs."""
    import torch

    from .reward import accuracy_by_pool

    flat = [encode(it["prompt"], r) for it in items for r in it["responses"]]
    raw: list[float] = []
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        for s in range(0, len(flat), batch_size):
            raw += implicit_rewards(policy_lm, ref_lm, flat[s : s + batch_size], beta, pad_id, device).float().cpu().tolist()
    scores, n, margins = [], 0, []
    for it in items:
        sc = raw[n : n + len(it["responses"])]
        n += len(it["responses"])
        scores.append(sc)
        margins += [sc[i] - sc[j] for r in it["rankings"] for i, j in r["pairs"]]
    return {**accuracy_by_pool(items, scores), "margin": sum(margins) / len(margins) if margins else None, "eval_pairs": len(margins)}


def run(cfg: DPOConfig) -> Path:
    from ..adapters import adapters_off_call, add_lora, check_quantization, has_lora, quantization_kwargs, reference
    from ..sharding import choose, full_state, load_device, shard
    from ..models import autocast_dtype, load_causal_lm, resize_for_tokenizer, save_model
    from ..policy import no_dropout, policy_module
    from ..reward_model import flatten_comparisons, ranking_loss
    from ..tokenizer import load_tokenizer
    from ..train import Loop, Part, all_reduce_mean, barrier, build_optimizer, in_process_group, seed_everything, wrap_ddp
    from .reward import ComparisonSteps, comparison_dry_run, comparison_paths, group_items, load_data

    paths = comparison_paths(cfg, "dpo", "the SFT model")
    out: Path = paths["out"]
    if cfg.dry_run:
        comparison_dry_run("dpo", cfg, paths, [("policy", paths["model"], True, False), ("reference", paths["model"], False, False)])
        return out

    def body(d: Any) -> Path:
        import torch

        work = partial_path(out)
        check_output(out, cfg.overwrite, cfg.resume)
        seed_everything(cfg.seed)
        train, held, skips = load_data(cfg, paths["data"])
        tok = load_tokenizer(paths["model"])
        check_quantization(cfg, d.device)
        d.sharding = choose(cfg.sharding, d, [(paths["model"], True)] + ([] if cfg.lora_r else [(paths["model"], False)]))
        sharded = d.sharding == "fsdp"
        where = load_device(d)
        # a model whose tokenizer gained tokens (a base model's: pad, the chat markers) grows alike in both copies
        policy_lm = add_lora(no_dropout(resize_for_tokenizer(load_causal_lm(paths["model"], where, quantization=quantization_kwargs(cfg)), tok)),
                             cfg, what="policy")
        ref_lm = reference(policy_lm, lambda: no_dropout(resize_for_tokenizer(load_causal_lm(paths["model"], device=where), tok)))
        max_len = cfg.max_len or int(getattr(policy_lm.config, "max_position_embeddings", 0) or 0)
        encode = ResponseEncoder(tok, max_len)
        examples = [([encode(c.prompt, r) for r in c.responses], c.pairs) for c in train]
        items = group_items(held)
        if d.is_main:
            begin_output(out, overwrite=cfg.overwrite, resume=cfg.resume)
        barrier(d)

        autocast = autocast_dtype(d.device, cfg.precision)
        policy = policy_module(policy_lm).to(where)
        ev_policy, ev_ref = policy_lm, ref_lm
        if sharded:  # every forward through a root: the policy module, and the reference's own (or the policy's, adapters off)
            shard(policy, d, autocast)
            ref_lm = adapters_off_call(policy) if has_lora(policy_lm) else shard(policy_module(ref_lm), d, autocast)
            ev_policy, ev_ref = policy, ref_lm
        opt = build_optimizer(policy, cfg.lr, cfg.weight_decay)
        steps = ComparisonSteps(len(examples), cfg, d)
        loop = Loop("dpo", cfg, d, work, {"model": Part(policy, opt)}, steps.total, autocast)
        fwd = wrap_ddp(policy, d)
        ipo_beta = cfg.beta if cfg.loss == "ipo" else 0.0

        def held_out() -> dict:
            """The held-out evaluation: on the main process, or on every one when sharded (each forward gathers from all;
            the others would wait for the main one anyway)."""
            if not items or not (d.is_main or sharded):
                return {}
            return evaluate(ev_policy, ev_ref, items, encode, cfg.beta, tok.pad_token_id, d.device, autocast)

        first = held_out() if loop.step == 0 else {}
        if d.is_main and loop.step == 0:
            n_pairs = sum(len(p) for _, p in examples)
            loop.log.log(0, train_comparisons=len(examples), train_pairs=n_pairs, eval_items=len(items), skipped=skips.total,
                         truncated=encode.truncated, **{f"eval_{k}": v for k, v in first.items() if v is not None})
            print(f"igpt dpo: {len(examples)} training comparisons ({n_pairs} pairs), {len(items)} held-out; "
                  f"skipped: {skips.summary()}")

        t0, seen, ev = time.time(), 0, {}
        while loop.running:
            mine = steps.mine(loop.step)
            lr = loop.begin_step()
            sums = [0.0, 0.0, 0, 0.0]  # loss x comparisons, right pairs, pairs, margin sum

            def micro(idx: list[int]) -> Any:
                nonlocal seen
                if not idx:
                    return None
                responses, pairs, groups = flatten_comparisons([examples[i] for i in idx])
                rewards = implicit_rewards(fwd, ref_lm, responses, cfg.beta, tok.pad_token_id, d.device)
                pairs_t = torch.tensor(pairs, dtype=torch.long, device=d.device).reshape(-1, 2)
                loss, st = ranking_loss(rewards.float(), pairs_t, torch.tensor(groups, dtype=torch.long, device=d.device), len(idx),
                                        ipo_beta=ipo_beta)
                sums[0] += float(loss.detach()) * len(idx)
                sums[1] += st["acc"] * st["pairs"] if st["pairs"] else 0.0
                sums[2] += st["pairs"]
                sums[3] += float((rewards[pairs_t[:, 0]] - rewards[pairs_t[:, 1]]).detach().sum())
                seen += len(idx)
                return loss * len(idx) / max(1, len(mine))

            loop.accumulate(fwd, steps.micro_batches(mine), micro)
            grad_norm = loop.optimizer_step()
            n_pairs_step = max(all_reduce_mean(float(sums[2]), d), 1e-9)
            row: dict[str, Any] = {"loss": all_reduce_mean(sums[0] / max(1, len(mine)), d), "acc": all_reduce_mean(sums[1], d) / n_pairs_step,
                                   "margin": all_reduce_mean(sums[3], d) / n_pairs_step, "lr": lr, "grad_norm": grad_norm,
                                   "comparisons_per_s": seen * d.world_size / max(time.time() - t0, 1e-9)}
            if cfg.eval_every and loop.step % cfg.eval_every == 0 and not loop.finished:
                ev = held_out()
                row.update({f"eval_{k}": v for k, v in ev.items() if v is not None})
            loop.log_step(row, "DPO loss" if cfg.loss == "dpo" else "IPO loss", postfix={
                "loss": f"{row['loss']:.3f}", "margin": f"{row['margin']:.3f}",
                "eval": f"{ev['accuracy_all']:.2f}" if ev.get("accuracy_all") is not None else "-"})
            loop.checkpoint()
        loop.close(log=False)
        if not loop.finished:  # stopped early on purpose: keep the partial folder and its checkpoint
            loop.log.close()
            return work
        last = held_out()
        state = full_state(policy, d, "lm.") if sharded else None
        if d.is_main:
            final = {"final": True, **last, "train_comparisons": len(examples), "skipped": skips.total,
                     "truncated": encode.truncated, "seconds": round(time.time() - t0, 1)}
            loop.log.log(loop.step, **final)
            save_model(policy_lm, tok, work, str(paths["model"]) if cfg.save_adapter else "", state=state)
            save_config(cfg, work)
            shutil.rmtree(work / "checkpoint", ignore_errors=True)
            finish_output(work, out, {"step": loop.step, **{k: v for k, v in final.items()
                                                             if isinstance(v, (int, float)) and not isinstance(v, bool)}})
            acc, margin = final.get("accuracy_all"), final.get("margin")
            print(f"dpo model: {out}\n  held-out pairs ordered by the implicit reward: "
                  f"{'-' if acc is None else f'{100 * acc:.1f}%'}, mean margin {'-' if margin is None else f'{margin:+.3f}'}")
        loop.log.close()
        barrier(d)
        return out

    return in_process_group(cfg.device, body, owns=out)

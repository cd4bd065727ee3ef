"""Gold-score gain per episode: our PPO (``igpt ppo``) against TRL's PPO trainer (``trl==1.12.0``, ``trl.experimental.ppo``)
on the real trained models of a finished run, at the same settings, judged by the built-in world's gold judge.

    python benchmarks/ppo_gold_vs_trl.py --run runs/default --trl-path /tmp/trlpkgs --threads 1
    python benchmarks/ppo_gold_vs_trl.py --run runs/default --trl-path /tmp/trlpkgs --seeds 0,1,2   # three training seeds

The run directory is only read: its ``sft/``, ``rm/`` and ``world/`` are copied into ``--work`` and everything is written
there. Both trainers start from the same SFT policy (also the frozen KL reference), the same reward model (also the value
model's start) and the same PPO prompts (the world's ``ppo`` split through the chat template, token ids computed once
and handed to both), and run the ``default`` preset of ``igpt ppo`` with ``--ptx-coef 0`` (plain PPO): 20 steps x 32
episodes (640), responses of at most 48 tokens at temperature 1, 2 PPO epochs over minibatches of 8 (one optimiser
update each, no gradient accumulation: 8 updates per step), policy lr 5e-5 and value lr 1e-4 (constant), Adam betas
(0.9, 0.999), eps 1e-5, no weight decay, beta 0.02 (fixed, k1 estimator), GAE gamma 1 and lambda 0.95, advantages
whitened over the batch's response tokens, clip 0.2, value clip 0.2, value-loss coefficient 0.1 (with the factor 0.5 in
both), missing-stop-token penalty 1, dropout off, fp32, seed 0. TRL runs in a subprocess with ``--trl-path`` on its
PYTHONPATH, so it never touches this environment; it needs the workarounds of ``benchmarks/ppo_throughput.py`` (explicit
dataset fingerprint, ``padding_side = "left"``).

How TRL is made to match (all through its public API):
  - minibatches of 8 with one update each: ``per_device_train_batch_size=32, gradient_accumulation_steps=1,
    num_mini_batches=4`` (a larger ``gradient_accumulation_steps`` would make accelerate accumulate across minibatches,
    so one update would span the whole batch); the optimiser's step count is checked after training (expect 160);
  - reward normalisation: TRL reads the raw head output ``score(h_last)``; ours uses ``(head + reward_bias) /
    reward_std``. The reward model's and the value model's ``score`` head (a bias-free Linear) is replaced by a Linear
    with a bias holding exactly that normalisation, so TRL's scores are ours and its value model starts where ours does
    (our value model is the reward model with its head divided by ``reward_std`` and a trainable bias
    ``reward_bias / reward_std``);
  - two learning rates: TRL builds one AdamW over policy and value model; we pass our own (``optimizers=``) with two
    parameter groups (5e-5 and 1e-4), eps 1e-5, no weight decay, and ``lr_scheduler_type="constant"`` (TRL's default
    would decay linearly to 0);
  - the missing-stop penalty: TRL checks the tokenizer's ``eos_token``, so the worker's tokenizer has ``eos_token =
    "<|end|>"`` (the chat turn's end, the token the SFT model stops with) and ``missing_eos_penalty=1``;
  - ``bf16=False``, ``gradient_checkpointing=False`` (TRL's PPOConfig defaults differ), ``temperature=1``, ``kl_coef=0.02``.

What cannot be matched (TRL has no setting for it):
  - gradient clipping: ours clips each model's gradient norm at 1 (``--grad-clip``); TRL's PPO loop calls
    ``optimizer.step()`` without clipping (``max_grad_norm`` is ignored);
  - stop tokens: ours stops at ``<|end|>`` or ``<|endoftext|>``; TRL takes one ``stop_token_id`` (``<|end|>``) and treats
    a response with ``<|endoftext|>`` as unfinished (it keeps generating, and the penalty applies);
  - where the score lands: TRL adds the score one position after the last response token (``sequence_lengths + 1``,
    inside the value loss's mask but outside the policy loss's), so its value model bootstraps the score from that padding
    position; ours adds it at the last response token (the stop token), where the values stop;
  - prompt order: ours takes a seeded permutation of the prompts (``PromptStream``), TRL a shuffling DataLoader; both draw
    640 of the 1,200 prompts, not the same ones;
  - rollout sampling (TRL: ``model.generate``; ours: the KV-cache sampler) and random streams differ, so the same seed is
    not the same run.

Evaluation: the SFT model and both trained policies sample the first ``--eval-prompts`` (200) of the world's held-out
win-rate prompts with our ``TorchSampler`` at temperature 0.7 and top-p 0.95 (``igpt eval``'s settings), ``--eval-samples``
samples per prompt with fixed seeds (the same for every model), and the gold judge scores them. Reported: gold mean and
its standard error over prompts (each prompt's mean over its samples), the gain over SFT per 1000 episodes with the
paired standard error (same prompts, same seeds), the ours-minus-TRL difference, and each trainer's wall time. The
standard errors measure evaluation noise only; training-seed noise needs ``--seeds`` with several seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics as st
import subprocess
import sys
import time
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                   "special_tokens_map.json")


# ---------------------------------------------------------------------------------------------- inputs
def copy_inputs(run: Path, work: Path) -> dict[str, Path]:
    """Copy sft/, rm/ and world/ out of the (read-only) run directory."""
    paths = {}
    for name in ("sft", "rm", "world"):
        src, dst = run / name, work / "inputs" / name
        if not src.is_dir():
            sys.exit(f"{src} is missing: --run must be a finished run directory with sft/, rm/ and world/")
        if not dst.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tensorboard", "*.partial"))
        paths[name] = dst
    return paths


def settings(a: argparse.Namespace) -> dict:
    """The default preset of ``igpt ppo`` with the benchmark's overrides: what both trainers get."""
    from instructgpt.stages.ppo import PPOConfig

    base = PPOConfig()
    p = dict(PPOConfig.presets["default"])
    s = {k: getattr(base, k) for k in ("kl_coef", "gamma", "lam", "clip_range", "value_clip_range", "vf_coef", "no_eos_penalty",
                                        "adam_eps", "grad_clip", "temperature", "grad_accum", "kl_estimator")}
    s.update({k: p[k] for k in ("steps", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "max_prompt_len", "lr", "value_lr")})
    for k in ("steps", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "lr", "kl_coef"):
        if getattr(a, k) is not None:
            s[k] = getattr(a, k)
    if s["batch_size"] % s["minibatch_size"]:
        sys.exit("--batch-size must be a multiple of --minibatch-size")
    s["episodes"] = s["steps"] * s["batch_size"]
    return s


# ---------------------------------------------------------------------------------------------- ours
def run_ours(paths: dict, out: Path, s: dict, seed: int) -> dict:
    from instructgpt.stages import ppo

    cfg = ppo.PPOConfig(
        policy=str(paths["sft"]), reward_model=str(paths["rm"]), world=str(paths["world"]), out=str(out), overwrite=True,
        ptx_coef=0.0, steps=s["steps"], batch_size=s["batch_size"], minibatch_size=s["minibatch_size"], grad_accum=1,
        ppo_epochs=s["ppo_epochs"], max_new_tokens=s["max_new_tokens"], max_prompt_len=s["max_prompt_len"], lr=s["lr"],
        value_lr=s["value_lr"], kl_coef=s["kl_coef"], temperature=1.0, seed=seed,
        eval_every=0, val_tokens=0, sample_every=0, checkpoint_every=0, tensorboard=False, progress=False,
        rollout_batch_size=max(64, s["batch_size"]), forward_batch_size=max(64, s["batch_size"]), device="cpu", precision="fp32")
    t0 = time.perf_counter()
    ppo.run(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time_train" in r]
    loop = sum(r["time_sample"] + r["time_score"] + r["time_train"] for r in rows)
    last = rows[-5:]
    avg = lambda k, rs: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    return {"wall_s": wall, "train_loop_s": loop, "steps": len(rows), "episodes": rows[-1]["episodes"],
            "score_first5": avg("score", rows[:5]), "score_last5": avg("score", last), "kl_last5": avg("kl", last),
            "response_len_last5": avg("response_len", last), "finished_frac_last5": avg("finished_frac", last),
            "grad_norm_mean": avg("grad_norm", rows), "grad_norm_max": max(r["grad_norm"] for r in rows),
            "optimizer_updates": len(rows) * s["ppo_epochs"] * (s["batch_size"] // s["minibatch_size"])}


# ---------------------------------------------------------------------------------------------- TRL (runs in a subprocess)
TRL_WORKER = r'''
import json, os, sys, time
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
spec = json.load(open(sys.argv[1]))
t_start = time.perf_counter()
import torch, trl, transformers
if spec["threads"]:
    torch.set_num_threads(spec["threads"])
from datasets import Dataset
from datasets.table import InMemoryTable
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer

s = spec["settings"]
tok = AutoTokenizer.from_pretrained(spec["sft"])
tok.padding_side = "left"          # as TRL's PPO examples do
stop_id = tok.convert_tokens_to_ids("<|end|>")
tok.eos_token = "<|end|>"          # TRL's missing-EOS penalty checks eos_token_id: make it the chat turn's stop token
# an explicit fingerprint: datasets 5.2's own fingerprint hashing fails to pickle a pyarrow type in this environment
ds = Dataset(InMemoryTable.from_pydict({"input_ids": spec["prompt_ids"]}), fingerprint="igpt-gold-bench")

def normalised_head(model, bias, std):
    """Replace the bias-free ``score`` head by one computing (head(h) + reward_bias) / reward_std, as our scorer does."""
    old = model.score
    new = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_(old.weight / std)
        new.bias.fill_(bias / std)
    model.score = new
    return model

policy = AutoModelForCausalLM.from_pretrained(spec["sft"])
ref = AutoModelForCausalLM.from_pretrained(spec["sft"])
rm = AutoModelForSequenceClassification.from_pretrained(spec["rm"], num_labels=1)
value = AutoModelForSequenceClassification.from_pretrained(spec["rm"], num_labels=1)
bias, std = float(rm.config.reward_bias or 0.0), float(rm.config.reward_std or 1.0)
normalised_head(rm, bias, std)
normalised_head(value, bias, std)
rm.requires_grad_(False)

B, mb = s["batch_size"], s["minibatch_size"]
args = PPOConfig(
    output_dir=spec["out"] + ".trainer", per_device_train_batch_size=B, gradient_accumulation_steps=1,
    num_mini_batches=B // mb, num_ppo_epochs=s["ppo_epochs"], total_episodes=s["episodes"], response_length=s["max_new_tokens"],
    temperature=1.0, stop_token_id=stop_id, missing_eos_penalty=s["no_eos_penalty"] or None, kl_coef=s["kl_coef"],
    kl_estimator=s["kl_estimator"], cliprange=s["clip_range"], cliprange_value=s["value_clip_range"], vf_coef=s["vf_coef"],
    gamma=s["gamma"], lam=s["lam"], whiten_rewards=False, learning_rate=s["lr"], lr_scheduler_type="constant",
    weight_decay=0.0, adam_epsilon=s["adam_eps"], local_rollout_forward_batch_size=max(64, B), report_to="none",
    use_cpu=True, save_strategy="no", num_sample_generations=0, logging_steps=1, disable_tqdm=True, seed=spec["seed"],
    bf16=False, fp16=False, gradient_checkpointing=False)
# one AdamW, two learning rates (TRL's own optimiser would give the value model the policy's)
opt = torch.optim.AdamW([{"params": list(policy.parameters()), "lr": s["lr"]},
                         {"params": list(value.parameters()), "lr": s["value_lr"]}],
                        lr=s["lr"], betas=(0.9, 0.999), eps=s["adam_eps"], weight_decay=0.0)
times = []
class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        times.append(time.perf_counter())
trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=rm, value_model=value,
                     train_dataset=ds, optimizers=(opt, None), callbacks=[Clock()])
t_load = time.perf_counter()
trainer.train()
t_train = time.perf_counter() - t_load
policy.save_pretrained(spec["out"], safe_serialization=True)
p0 = next(iter(policy.parameters()))
updates = int(opt.state[p0]["step"]) if p0 in opt.state else 0
logs = [r for r in trainer.state.log_history if "objective/kl" in r]
print("TRL_RESULT " + json.dumps({
    "trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
    "train_loop_s": t_train, "load_s": t_load - t_start, "step_seconds": [b - a for a, b in zip([t_load] + times, times)],
    "optimizer_updates": updates, "steps": len(logs), "episodes": logs[-1]["episode"] if logs else 0,
    "lr_groups": [g["lr"] for g in opt.param_groups],
    "log": [{k: r[k] for k in ("objective/scores", "objective/kl", "objective/entropy", "val/num_eos_tokens") if k in r} for r in logs]}))
'''


def run_trl(paths: dict, out: Path, s: dict, seed: int, prompt_ids: list[list[int]], trl_path: str, threads: int, work: Path) -> dict:
    spec = {"sft": str(paths["sft"]), "rm": str(paths["rm"]), "out": str(out), "settings": s, "seed": seed, "threads": threads,
            "prompt_ids": prompt_ids}
    (work / "trl_spec.json").write_text(json.dumps(spec))
    script = work / "trl_worker.py"
    script.write_text(TRL_WORKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (trl_path, env.get("PYTHONPATH", "")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(script), str(work / "trl_spec.json")], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    (work / f"trl_seed{seed}.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("TRL_RESULT ")), None)
    if p.returncode != 0 or line is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        sys.exit("TRL failed: " + " | ".join(tail) + f" (full log: {work / f'trl_seed{seed}.log'})")
    res = json.loads(line[len("TRL_RESULT "):])
    for name in TOKENIZER_FILES:  # the SFT model's tokenizer and generation config (TRL rewrote eos_token_id in the latter)
        if (paths["sft"] / name).is_file():
            shutil.copy(paths["sft"] / name, out / name)
    log = res.pop("log")
    avg = lambda k, rs: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    res.update({"wall_s": wall, "score_first5": avg("objective/scores", log[:5]), "score_last5": avg("objective/scores", log[-5:]),
                "kl_last5": avg("objective/kl", log[-5:]),
                "finished_frac_last5": avg("val/num_eos_tokens", log[-5:]) / s["batch_size"]})
    return res


# ---------------------------------------------------------------------------------------------- gold evaluation
def gold_scores(path: Path, recs: list[dict], judge, stops: list[int], a: argparse.Namespace) -> tuple[list[list[float]], list[str]]:
    """Gold score of every (prompt, sample) pair: scores[p][k], and the first sample's texts."""
    import torch

    from instructgpt.evaluation import sample_and_judge
    from instructgpt.sampling import SamplingParams, TorchSampler, encode_prompt, load_model

    model, tok = load_model(str(path), torch.device("cpu"))
    ids = [encode_prompt(tok, r["prompt"]) for r in recs]
    sampler = TorchSampler(model, tok.pad_token_id, batch_size=64)
    scores: list[list[float]] = [[] for _ in recs]
    first: list[str] = []
    for k in range(a.eval_samples):
        params = SamplingParams(a.max_eval_tokens, a.eval_temperature, 0, a.eval_top_p, a.eval_seed + k, stops)
        texts, got, _ = sample_and_judge(sampler, tok, ids, recs, judge, params)
        first = first or texts
        for p, g in enumerate(got):
            scores[p].append(g)
    return scores, first


def mean_se(xs: list[float]) -> tuple[float, float]:
    return st.mean(xs), (st.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan"))


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/default", help="finished run directory (read only) with sft/, rm/ and world/")
    ap.add_argument("--work", default="/tmp/igpt_gold_bench", help="work folder: copies of the inputs, both trained policies, logs")
    ap.add_argument("--trl-path", default="/tmp/trlpkgs", help="folder with trl==1.12.0 and its dependencies (pip install --target)")
    ap.add_argument("--seeds", default="0", help="training seeds, comma-separated (each trains both trainers once)")
    ap.add_argument("--steps", type=int, default=None, help="PPO steps (default: the preset's)")
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="episodes per step (default 32)")
    ap.add_argument("--minibatch-size", dest="minibatch_size", type=int, default=None, help="episodes per update (default 8)")
    ap.add_argument("--ppo-epochs", dest="ppo_epochs", type=int, default=None, help="default 2")
    ap.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=None, help="response length (default 48)")
    ap.add_argument("--lr", type=float, default=None, help="policy learning rate (default 5e-5)")
    ap.add_argument("--kl-coef", dest="kl_coef", type=float, default=None, help="beta (default 0.02)")
    ap.add_argument("--eval-prompts", type=int, default=200, help="held-out win-rate prompts")
    ap.add_argument("--eval-samples", type=int, default=4, help="samples per prompt (seeds eval-seed, eval-seed+1, ...)")
    ap.add_argument("--eval-temperature", type=float, default=0.7)
    ap.add_argument("--eval-top-p", type=float, default=0.95)
    ap.add_argument("--eval-seed", type=int, default=0)
    ap.add_argument("--max-eval-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads for every phase (0 = torch's default); "
                    "1 on a machine shared with other jobs")
    ap.add_argument("--reuse", action="store_true", help="skip training where --work already has a policy trained with the same settings")
    ap.add_argument("--json", default="", help="also write the results here (default: <work>/results.json)")
    a = ap.parse_args()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from instructgpt.episodes import encode_records
    from instructgpt.tokenizer import load_tokenizer, stop_token_ids
    from instructgpt.world import World

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    paths = copy_inputs(Path(a.run), work)
    s = settings(a)
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    world = World.load(paths["world"])
    tok = load_tokenizer(paths["sft"])
    prompt_ids = encode_records(tok, list(world.prompts("ppo")), s["max_prompt_len"])  # what our trainer encodes, for TRL too

    runs: dict[str, dict] = {}
    t_all = time.perf_counter()
    for seed in seeds:
        for name in ("ours", "trl"):
            out = work / f"{name}-seed{seed}"
            meta = work / f"{name}-seed{seed}.json"
            if a.reuse and meta.is_file() and (out / "model.safetensors").is_file():
                old = json.loads(meta.read_text())
                if old.get("settings") == s:
                    runs[f"{name}-seed{seed}"] = old
                    continue
                print(f"{meta}: trained with other settings (or before they were recorded); training again", flush=True)
            print(f"training {name} (seed {seed}) ...", flush=True)
            res = run_ours(paths, out, s, seed) if name == "ours" else run_trl(paths, out, s, seed, prompt_ids, a.trl_path, a.threads, work)
            res["load_avg_1min_after"] = os.getloadavg()[0]
            res["settings"] = s
            meta.write_text(json.dumps(res, indent=1))
            runs[f"{name}-seed{seed}"] = res
            print(f"  {name}: {res['train_loop_s']:.0f} s training loop, {res['wall_s']:.0f} s wall, "
                  f"{res['optimizer_updates']} updates, score {res['score_first5']:.3f} -> {res['score_last5']:.3f}, "
                  f"KL {res['kl_last5']:.3f}", flush=True)

    # ---- gold evaluation: the same prompts and sampling seeds for every model
    judge = world.judge()
    recs = world.eval_sets()["winrate"][: a.eval_prompts]
    from transformers import GenerationConfig

    stops = stop_token_ids(tok, GenerationConfig.from_pretrained(str(paths["sft"])))
    per_prompt: dict[str, list[float]] = {}
    samples: dict[str, list[str]] = {}
    for key, path in [("sft", paths["sft"])] + [(k, work / k) for k in runs]:
        sc, first = gold_scores(path, recs, judge, stops, a)
        per_prompt[key] = [st.mean(x) for x in sc]
        samples[key] = first
        print(f"gold {key}: {st.mean(per_prompt[key]):.4f}", flush=True)
    with open(work / "responses.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(recs):
            f.write(json.dumps({"id": r["id"], "prompt": r["prompt"], **{k: v[i] for k, v in samples.items()},
                                **{f"gold_{k}": round(v[i], 4) for k, v in per_prompt.items()}}, ensure_ascii=False) + "\n")

    # ---- summary: per trainer, pooled over seeds (each prompt's mean over seeds and samples)
    n = len(recs)
    per1k = 1000.0 / s["episodes"]
    pooled = {"sft": per_prompt["sft"]}
    for name in ("ours", "trl"):
        keys = [f"{name}-seed{sd}" for sd in seeds]
        pooled[name] = [st.mean(per_prompt[k][i] for k in keys) for i in range(n)]
    table = {}
    for name in ("sft", "ours", "trl"):
        m, se = mean_se(pooled[name])
        row = {"gold": m, "gold_se": se}
        if name != "sft":
            dm, dse = mean_se([x - y for x, y in zip(pooled[name], pooled["sft"])])
            keys = [f"{name}-seed{sd}" for sd in seeds]
            row.update({"gain": dm, "gain_se": dse, "gain_per_1k_episodes": dm * per1k, "gain_per_1k_se": dse * per1k,
                        "gold_per_seed": [st.mean(per_prompt[k]) for k in keys],
                        "train_loop_s": st.mean(runs[k]["train_loop_s"] for k in keys),
                        "wall_s": st.mean(runs[k]["wall_s"] for k in keys)})
        table[name] = row
    diff_m, diff_se = mean_se([x - y for x, y in zip(pooled["ours"], pooled["trl"])])
    result = {
        "settings": {**s, "seeds": seeds, "eval_prompts": n, "eval_samples": a.eval_samples, "eval_temperature": a.eval_temperature,
                     "eval_top_p": a.eval_top_p, "eval_seed": a.eval_seed, "torch_threads": torch.get_num_threads(),
                     "run": str(a.run)},
        "table": table,
        "ours_minus_trl": {"gold": diff_m, "se": diff_se, "per_1k_episodes": diff_m * per1k, "per_1k_se": diff_se * per1k},
        "runs": runs,
        "unmatched": ["gradient clipping (ours: each model's gradient norm clipped at 1; TRL: none)",
                      "stop tokens (ours: <|end|> or <|endoftext|>; TRL: <|end|> only)",
                      "TRL adds the score one position after the last response token, ours at the last one",
                      "prompt order (seeded permutation vs TRL's shuffling DataLoader) and all random streams"],
        "total_s": time.perf_counter() - t_all,
    }
    text = json.dumps(result, indent=1)
    (Path(a.json) if a.json else work / "results.json").write_text(text)
    print(text)
    print(f"\n{'':6} {'gold (SE)':>16} {'gain / 1k episodes (SE)':>25} {'train loop s':>13} {'wall s':>8}")
    for name in ("sft", "ours", "trl"):
        r = table[name]
        g = f"{r['gold']:.3f} ({r['gold_se']:.3f})"
        gain = f"{r['gain_per_1k_episodes']:+.3f} ({r['gain_per_1k_se']:.3f})" if name != "sft" else ""
        tl = f"{r['train_loop_s']:.0f}" if name != "sft" else ""
        w = f"{r['wall_s']:.0f}" if name != "sft" else ""
        print(f"{name:6} {g:>16} {gain:>25} {tl:>13} {w:>8}")
    print(f"ours - TRL: {diff_m:+.4f} gold (paired SE {diff_se:.4f})")


if __name__ == "__main__":
    main()

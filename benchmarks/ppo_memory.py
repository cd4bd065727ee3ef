"""PPO's peak memory per process on a ~100M-parameter model: full fine-tuning against LoRA adapters, and replicated
(DDP) against sharded (FSDP2) on 2 processes, with episodes/s.

    python benchmarks/ppo_memory.py                  # full and LoRA (rank 16) in one process; DDP and FSDP on 2
    python benchmarks/ppo_memory.py --modes lora --lora-r 64

Each mode runs ``igpt ppo`` in its own process (so that one's peak does not hide the other's) on the same random-weight
models: a Llama of d 768, 12 layers, 12 heads, MLP 2304 and a 4096-token vocabulary (about 98M parameters), its
sequence-classification twin as the reward model and the value model's start, and the same prompts, batch (16
episodes, minibatches of 4, 2 PPO epochs) and response length (32 tokens). The peak is what the stage itself records
(``peak_rss_mb`` in its completion record: the process's resident set on CPU, the allocator's peak on CUDA).
Full PPO holds four models (policy and value with gradients and AdamW state, reference and reward model frozen); LoRA
PPO holds two bases: the policy's (its adapters off give the reference) and the reward model's (a second adapter and
head on it are the value model). ``ddp`` and ``fsdp`` run full PPO under ``torchrun --nproc_per_node 2`` (one thread
each) with ``--sharding ddp`` or ``fsdp``, each process with the same 16 episodes a step (so 32 a step in all); the
peak is the main process's (under FSDP it also holds, while it samples, the full-weight copy every process samples
from). ``--mmap-threshold 131072`` gives glibc a fixed mmap threshold, so that the resident set is the memory in use
rather than what the allocator kept after it was freed; the figures are given both ways.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ppo_throughput import make_models  # noqa: E402


def run_mode(work: Path, mode: str, args: argparse.Namespace) -> dict:
    out = work / f"ppo-{mode}"
    cmd = [sys.executable, "-m", "instructgpt.cli", "ppo", "--policy", str(work / "sft"), "--reward-model", str(work / "rm"),
           "--prompts", str(work / "prompts.jsonl"), "--out", str(out), "--overwrite", "--steps", str(args.steps),
           "--batch-size", "16", "--minibatch-size", "4", "--ppo-epochs", "2", "--max-new-tokens", "32", "--max-prompt-len", "64",
           "--ptx-coef", "0", "--eval-every", "0", "--val-tokens", "0", "--sample-every", "0", "--checkpoint-every", "0",
           "--no-eos-penalty", "0", "--no-progress", "--no-tensorboard"]
    if mode == "lora":
        cmd += ["--lora-r", str(args.lora_r), "--lora-alpha", str(2 * args.lora_r)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.mmap_threshold:  # glibc: every allocation above this size mapped on its own, so a freed one leaves the RSS
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    if mode in ("ddp", "fsdp"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29650",
               "-m", "instructgpt.cli"] + cmd[3:] + ["--sharding", mode]
        env["OMP_NUM_THREADS"] = "1"
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{mode}: igpt ppo failed:\n{r.stderr[-3000:]}")
    done = json.loads((out / "igpt_complete.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    eps = [row["episodes_per_s"] for row in rows if "episodes_per_s" in row][1:]  # the first step warms up
    return {"mode": mode, "peak_rss_mb": done.get("peak_rss_mb"), "peak_cuda_mb": done.get("peak_cuda_mb"),
            "episodes_per_s": sum(eps) / len(eps) if eps else None, "wall_s": round(time.time() - t0, 1),
            "policy_params": rows[0].get("policy_params"), **({"lora_r": args.lora_r} if mode == "lora" else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/igpt-ppo-memory")
    ap.add_argument("--modes", default="full,lora,ddp,fsdp")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mmap-threshold", type=int, default=0,
                    help="set glibc's MALLOC_MMAP_THRESHOLD_ for the runs (0: glibc's default, a threshold that grows "
                         "with what is freed, so the resident set keeps memory the program already released)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    info = make_models(work, vocab=4096, n_prompts=256, d_model=768, n_layers=12, n_heads=12, d_ff=2304)
    results = [run_mode(work, m, args) for m in args.modes.split(",")]
    by = {r["mode"]: r for r in results}
    summary = {"params": info["params"], "mmap_threshold": args.mmap_threshold or "glibc default", "results": results}
    if "full" in by and "lora" in by:
        summary["lora_over_full_memory"] = round(by["lora"]["peak_rss_mb"] / by["full"]["peak_rss_mb"], 3)
        if by["full"]["episodes_per_s"] and by["lora"]["episodes_per_s"]:
            summary["lora_over_full_speed"] = round(by["lora"]["episodes_per_s"] / by["full"]["episodes_per_s"], 3)
    if "ddp" in by and "fsdp" in by:
        summary["fsdp_over_ddp_memory"] = round(by["fsdp"]["peak_rss_mb"] / by["ddp"]["peak_rss_mb"], 3)
        if by["ddp"]["episodes_per_s"] and by["fsdp"]["episodes_per_s"]:
            summary["fsdp_over_ddp_speed"] = round(by["fsdp"]["episodes_per_s"] / by["ddp"]["episodes_per_s"], 3)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

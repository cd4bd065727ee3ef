"""PPO throughput: episodes per second, the time split (sampling, scoring, training), FLOPs against the measured matmul
peak, and the same batch through TRL's PPO trainer (``trl==1.12.0``, ``trl.experimental.ppo``) when it is installed.

    python benchmarks/ppo_throughput.py                       # default-preset model size, batch 64, 48 new tokens, 4 epochs
    python benchmarks/ppo_throughput.py --trl-path /tmp/trlpkgs   # also run TRL (imported from that folder, see docs/ppo.md)

Both trainers get the same random-weight models (a ~3.5M-parameter Llama: d 256, 4 layers, vocabulary 4096), the same
prompts, batch size, response length, PPO epochs, minibatch structure (one minibatch of 64 as 4 micro-batches of 16)
and rollout temperature 1. Random weights rarely emit a stop token, so every response runs to its full length: the
worst case for a trainer that stops early, and the same work for both. The first step of each is a warm-up, not timed.
TRL is run in a subprocess with its packages on PYTHONPATH, so it never changes this environment.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path


# ---------------------------------------------------------------------------------------------- shared setup
def make_models(work: Path, vocab: int = 4096, n_prompts: int = 512, seed: int = 0, d_model: int = 256, n_layers: int = 4,
                n_heads: int = 4, d_ff: int = 768) -> dict:
    """A tokenizer, a random SFT-sized policy (or of the size given), a random reward model (also the value model's
    start) and chat prompts."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from instructgpt.models import build_llama, save_model
    from instructgpt.tokenizer import load_tokenizer, train_bpe

    if (work / "ready.json").is_file():
        return json.loads((work / "ready.json").read_text())
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ren", "tas", "vo", "ul", "dri", "sen", "pa", "quo", "zel", "ith", "mar", "no", "bes"]
    words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    texts = [" ".join(rng.choice(words) for _ in range(30)) + "." for _ in range(6000)]
    tok = train_bpe(texts, vocab_size=vocab)
    (work / "tok").mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(work / "tok"))
    tok = load_tokenizer(work / "tok")
    model = build_llama(tok, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads, d_ff=d_ff, max_seq_len=256, seed=seed)
    save_model(model, tok, work / "sft")
    torch.manual_seed(seed + 1)
    rm = AutoModelForSequenceClassification.from_pretrained(str(work / "sft"), num_labels=1)
    rm.config.reward_bias, rm.config.reward_std = 0.0, 1.0
    rm.save_pretrained(str(work / "rm"))
    tok.save_pretrained(str(work / "rm"))
    with open(work / "prompts.jsonl", "w") as f:
        for _ in range(n_prompts):
            f.write(json.dumps({"prompt": "Tell me about " + " ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + "."}) + "\n")
    info = {"vocab": len(tok), "params": sum(p.numel() for p in model.parameters())}
    (work / "ready.json").write_text(json.dumps(info))
    return info


def measure_matmul_peak(seconds: float = 2.0, n: int = 1024) -> float:
    """FLOP/s of a large fp32 matmul on this machine, with the thread count torch uses now (the compute roofline)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best, t_end = 0.0, time.time() + seconds
    while time.time() < t_end:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def flops_per_step(d: int, L: int, d_ff: int, d_kv: int, V: int, prompt_lens: list[int], resp_lens: list[int], epochs: int,
                   separate_value: bool = True) -> dict[str, float]:
    """Useful FLOPs of one PPO step over real tokens only (padding is overhead, not work).

    Per token and layer: projections 2*(2d^2 + 2*d*d_kv), SwiGLU MLP 2*3*d*d_ff, attention 4*d*position. The vocabulary
    projection (2*d*V) counts only where logits are needed: each sampled token, and response tokens in training and the
    reference pass. Backward = 2x forward.
    """
    dense = L * (4 * d * d + 4 * d * d_kv + 6 * d * d_ff)
    head = 2 * d * V

    def seq_fwd(p: int, r: int, lm_head_tokens: int) -> float:
        n = p + r
        attn = L * 4 * d * (n * (n + 1) / 2)
        return n * dense + attn + lm_head_tokens * head

    sample = sum(seq_fwd(p, r, r) for p, r in zip(prompt_lens, resp_lens))  # KV cache: each token once
    ref = sample
    value = sum(seq_fwd(p, r, 0) for p, r in zip(prompt_lens, resp_lens))
    reward = value
    train_policy = 3 * epochs * ref
    train_value = 3 * epochs * value if separate_value else 0.0
    return {"sample": sample, "score": ref + value + reward, "train": train_policy + train_value}


# ---------------------------------------------------------------------------------------------- ours
def run_ours(work: Path, steps: int, batch: int, new_tokens: int, epochs: int, minibatch: int, grad_accum: int) -> dict:
    from instructgpt.config import build_config
    from instructgpt.stages import ppo

    out = work / "ours"
    cfg = build_config(ppo.PPOConfig, overrides=dict(
        policy=str(work / "sft"), reward_model=str(work / "rm"), prompts=str(work / "prompts.jsonl"), out=str(out), overwrite=True,
        ptx_coef=0.0, steps=steps + 1, batch_size=batch, minibatch_size=minibatch, grad_accum=grad_accum, ppo_epochs=epochs,
        max_new_tokens=new_tokens, temperature=1.0, eval_every=0, val_tokens=0, sample_every=0, checkpoint_every=0,
        progress=False, tensorboard=False, rollout_batch_size=batch, forward_batch_size=batch, lr=1e-5))
    t0 = time.time()
    ppo.run(cfg)
    wall = time.time() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time_train" in r][1:]  # step 1 is the warm-up
    mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    split = {k: mean("time_" + k) for k in ("sample", "score", "train")}
    per_batch = sum(split.values())
    return {"seconds_per_batch": per_batch, "episodes_per_s": batch / per_batch, "split": split,
            "response_len": mean("response_len"), "wall_incl_load_and_warmup": wall}


# ---------------------------------------------------------------------------------------------- TRL (runs in a subprocess)
TRL_WORKER = r'''
import json, sys, time, os
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
work, steps, batch, new_tokens, epochs, minibatch, grad_accum, threads = sys.argv[1], *map(int, sys.argv[2:9])
import torch, trl, transformers
if threads:
    torch.set_num_threads(threads)
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer
tok = AutoTokenizer.from_pretrained(f"{work}/sft")
tok.padding_side = "left"  # as TRL's PPO examples do
prompts = [json.loads(l)["prompt"] for l in open(f"{work}/prompts.jsonl")]
ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True, return_dict=False) for p in prompts]
from datasets.table import InMemoryTable
# an explicit fingerprint: datasets 5.2's own fingerprint hashing fails to pickle a pyarrow type in this environment
ds = Dataset(InMemoryTable.from_pydict({"input_ids": [list(x) for x in ids]}), fingerprint="igpt-bench")
times = []
class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        times.append(time.perf_counter())
args = PPOConfig(output_dir=f"{work}/trl_out", per_device_train_batch_size=batch // grad_accum, gradient_accumulation_steps=grad_accum,
                 num_mini_batches=batch // minibatch, num_ppo_epochs=epochs, response_length=new_tokens, temperature=1.0,
                 total_episodes=batch * (steps + 1), stop_token_id=tok.convert_tokens_to_ids("<|end|>"), learning_rate=1e-5,
                 report_to="none", use_cpu=True, save_strategy="no", num_sample_generations=0, local_rollout_forward_batch_size=batch,
                 kl_coef=0.02, logging_steps=1, disable_tqdm=True, seed=0, bf16=False, fp16=False)
policy = AutoModelForCausalLM.from_pretrained(f"{work}/sft")
ref = AutoModelForCausalLM.from_pretrained(f"{work}/sft")
rm = AutoModelForSequenceClassification.from_pretrained(f"{work}/rm", num_labels=1)
value = AutoModelForSequenceClassification.from_pretrained(f"{work}/rm", num_labels=1)
trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=rm, value_model=value,
                     train_dataset=ds, callbacks=[Clock()])
t0 = time.perf_counter()
trainer.train()
per = [b - a for a, b in zip(times, times[1:])]
print("TRL_RESULT " + json.dumps({"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
      "step_seconds": per, "first_step": times[0] - t0 if times else None}))
'''


def run_trl(work: Path, trl_path: str, steps: int, batch: int, new_tokens: int, epochs: int, minibatch: int, grad_accum: int,
            threads: int) -> dict:
    script = work / "trl_worker.py"
    script.write_text(TRL_WORKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (trl_path, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, str(script), str(work), *map(str, (steps, batch, new_tokens, epochs, minibatch, grad_accum, threads))]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("TRL_RESULT ")), None)
    if p.returncode != 0 or line is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)}
    res = json.loads(line[len("TRL_RESULT "):])
    per = res["step_seconds"]
    res["seconds_per_batch"] = sum(per) / len(per) if per else float("nan")
    res["episodes_per_s"] = batch / res["seconds_per_batch"]
    return res


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="timed PPO steps (after one warm-up step)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--minibatch", type=int, default=64)
    ap.add_argument("--grad-accum", type=int, default=4)
    ap.add_argument("--work", default="/tmp/igpt_ppo_bench")
    ap.add_argument("--trl-path", default="", help="folder with trl==1.12.0 and its dependencies (pip install --target); '' = skip TRL")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads for both trainers (0 = torch's default); "
                    "1 gives steadier numbers on a machine that other jobs share")
    ap.add_argument("--skip-ours", action="store_true", help="only run TRL")
    a = ap.parse_args()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    info = make_models(work)
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(work / "sft"))
    peak = measure_matmul_peak()
    ours = run_ours(work, a.steps, a.batch, a.new_tokens, a.epochs, a.minibatch, a.grad_accum)
    prompt_lens = _prompt_lens(work)
    B = a.batch
    plens = (prompt_lens * (B // len(prompt_lens) + 1))[:B]
    rlen = round(ours["response_len"])
    d_kv = c.hidden_size * c.num_key_value_heads // c.num_attention_heads
    fl = flops_per_step(c.hidden_size, c.num_hidden_layers, c.intermediate_size, d_kv, c.vocab_size, plens, [rlen] * B, a.epochs)
    total = sum(fl.values())
    result = {
        "settings": {"batch": B, "new_tokens": a.new_tokens, "ppo_epochs": a.epochs, "minibatch": a.minibatch, "grad_accum": a.grad_accum,
                     "timed_steps": a.steps, "params": info["params"], "vocab": info["vocab"], "torch_threads": torch.get_num_threads(),
                     "load_avg_1min": os.getloadavg()[0]},
        "matmul_peak_gflops": peak / 1e9,
        "flops_per_step_g": {k: v / 1e9 for k, v in fl.items()},
        "roofline_seconds": total / peak,
        "ours": {**ours, "x_roofline": ours["seconds_per_batch"] / (total / peak),
                 "split_x_roofline": {k: ours["split"][k] / (fl[k] / peak) for k in fl}},
    }
    if a.trl_path:
        trl = run_trl(work, a.trl_path, a.steps, a.batch, a.new_tokens, a.epochs, a.minibatch, a.grad_accum, a.threads)
        if "seconds_per_batch" in trl:
            trl["x_roofline"] = trl["seconds_per_batch"] / (total / peak)
            result["speedup_vs_trl"] = trl["seconds_per_batch"] / ours["seconds_per_batch"]
        result["trl"] = trl
    text = json.dumps(result, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text)


def _prompt_lens(work: Path) -> list[int]:
    from instructgpt.sampling import encode_prompt
    from instructgpt.tokenizer import load_tokenizer

    tok = load_tokenizer(work / "sft")
    return [len(encode_prompt(tok, json.loads(x)["prompt"])) for x in (work / "prompts.jsonl").read_text().splitlines()[:256]]


if __name__ == "__main__":
    main()

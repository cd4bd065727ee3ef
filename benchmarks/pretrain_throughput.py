"""Pretraining throughput: tokens/s and model FLOPs utilisation (MFU) for a preset, against this machine's measured matmul peak.

    python benchmarks/pretrain_throughput.py [--preset default] [--steps 20] [--device cpu]

MFU counts the model's matmul FLOPs per token as 6 * (non-embedding parameters + the output projection) plus the attention
score and value products (6 * n_layers * seq_len * d_model, forward and backward), i.e. the usual PaLM-style estimate,
divided by the peak measured here with large fp32 (CPU) or bf16 (CUDA) matmuls in the same run.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import torch

    from instructgpt.models import autocast_dtype, build_llama, resolve_device
    from instructgpt.stages.pretrain import PretrainConfig, lm_loss
    from instructgpt.train import build_optimizer, matmul_peak

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    p = {**{f: getattr(PretrainConfig(), f) for f in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "seq_len", "batch_size")},
         **PretrainConfig.presets.get(args.preset, {})}
    dev = resolve_device(args.device)
    amp = autocast_dtype(dev, "auto")
    peak = matmul_peak(dev, amp or torch.float32)

    class _Tok:  # a tokenizer stand-in of the right size: throughput does not depend on the vocabulary's contents
        def __init__(self, n):
            self.n, self.bos_token_id, self.eos_token_id, self.pad_token_id = n, None, 0, 1

        def __len__(self):
            return self.n

    model = build_llama(_Tok(args.vocab_size), p["d_model"], p["n_layers"], p["n_heads"], p["n_kv_heads"], p["d_ff"], p["seq_len"]).to(dev)
    model.train()
    fwd = torch.compile(model) if args.compile else model
    opt = build_optimizer(model, 1e-3)
    B, T = p["batch_size"], p["seq_len"]
    n_params = sum(x.numel() for x in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    flops_per_token = 6 * (n_params - emb) + 6 * emb + 6 * p["n_layers"] * T * p["d_model"]
    x = torch.randint(0, args.vocab_size, (B, T + 1), device=dev)
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss = lm_loss(fwd, x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    tps = B * T / step
    achieved = tps * flops_per_token
    print(f"device={dev} threads={torch.get_num_threads()} preset={args.preset} params={n_params/1e6:.2f}M (embedding {emb/1e6:.2f}M, tied) "
          f"batch={B}x{T} vocab={args.vocab_size}")
    print(f"matmul peak {peak/1e9:.1f} GFLOP/s ({'bf16' if amp is not None else 'fp32'})")
    print(f"median step {step*1000:.0f} ms  tokens/s {tps:,.0f}  model FLOP/s {achieved/1e9:.1f} G  MFU {achieved/peak:.1%}")


if __name__ == "__main__":
    main()

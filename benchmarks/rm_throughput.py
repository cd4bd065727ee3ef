"""Reward-model training throughput: InstructGPT's all-pairs batching against one forward pass per pair.

    python benchmarks/rm_throughput.py [--ks 4,9] [--comparisons 32] [--device cpu] [--model PATH]

Same data (random token ids shaped like the built-in world's comparisons: a prompt and K responses of varying length),
same model (the default preset's size, d_model 256 x 4 layers, or --model), same optimiser step. The only difference is
how the C(K, 2) pairs of a prompt reach the model:

* all-pairs (InstructGPT): one batch element per prompt, each of its K responses forwarded once, the loss over all pairs;
* per-pair: every pair an independent example, its chosen and rejected response forwarded for that pair alone, so each
  response is forwarded K - 1 times (2 * C(K, 2) sequences per prompt instead of K).

Both are given the same number of sequences per forward call. Reported: sequence forward passes, training steps, wall
time, comparisons (ranked prompts) per second and pairs per second.
"""

from __future__ import annotations

import argparse
import math
import random
import time


def build_model(args, device):
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    if args.model:
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
        vocab = model.config.vocab_size
        if model.config.pad_token_id is None:
            model.config.pad_token_id = 0
    else:
        vocab = args.vocab_size
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=4, max_position_embeddings=256, num_labels=1, pad_token_id=1)
        torch.manual_seed(0)
        model = LlamaForSequenceClassification(cfg)
    return model.to(device).train(), vocab


def make_data(n: int, k: int, vocab: int, prompt_len: int, resp_len: tuple[int, int], seed: int):
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        prompt = [rng.randrange(8, vocab) for _ in range(prompt_len)]
        responses = [prompt + [rng.randrange(8, vocab) for _ in range(rng.randint(*resp_len))] for _ in range(k)]
        order = list(range(k))
        rng.shuffle(order)
        pairs = [(order[a], order[b]) for a in range(k) for b in range(a + 1, k)]
        data.append((responses, pairs))
    return data


def train_steps(model, opt, batches, pad_id, device):
    """Run the batches as training steps; returns (seconds, sequences forwarded, steps)."""
    import torch

    from instructgpt.reward_model import collate, ranking_loss, raw_rewards

    seqs = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for examples in batches:
        b = collate(examples, pad_id).to(device)
        rewards = raw_rewards(model, b.input_ids, b.attention_mask)
        loss, _ = ranking_loss(rewards, b.pairs, b.pair_group, b.n_groups)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seqs += b.input_ids.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, seqs, len(batches)


def main() -> None:
    import torch

    from instructgpt.models import resolve_device
    from instructgpt.train import build_optimizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", default="4,9", help="values of K")
    ap.add_argument("--comparisons", type=int, default=32, help="ranked prompts per measurement")
    ap.add_argument("--seqs-per-step", type=int, default=64, help="sequences per forward call (the same for both methods)")
    ap.add_argument("--prompt-len", type=int, default=24)
    ap.add_argument("--min-response", type=int, default=16)
    ap.add_argument("--max-response", type=int, default=48)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--model", default="", help="a model folder to use instead of a random default-size Llama")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, vocab = build_model(args, device)
    pad = int(model.config.pad_token_id)
    opt = build_optimizer(model, 1e-5, 0.0)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device {device}, threads {torch.get_num_threads()}, model {n_params / 1e6:.1f}M parameters, "
          f"{args.comparisons} comparisons per K, {args.seqs_per_step} sequences per forward call")
    warm = make_data(2, 4, vocab, args.prompt_len, (args.min_response, args.max_response), seed=99)
    train_steps(model, opt, [warm], pad, device)

    rows = []
    for k in [int(x) for x in args.ks.split(",")]:
        data = make_data(args.comparisons, k, vocab, args.prompt_len, (args.min_response, args.max_response), seed=k)
        per = max(1, args.seqs_per_step // k)
        all_pairs = [data[i : i + per] for i in range(0, len(data), per)]
        singles = [([resp[i], resp[j]], [(0, 1)]) for resp, prs in data for i, j in prs]
        per_pair = [singles[i : i + args.seqs_per_step // 2] for i in range(0, len(singles), args.seqs_per_step // 2)]
        n_pairs = len(singles)
        for name, batches in (("all-pairs", all_pairs), ("per-pair", per_pair)):
            secs, seqs, steps = train_steps(model, opt, batches, pad, device)
            rows.append((k, name, seqs, steps, secs, args.comparisons / secs, n_pairs / secs))
    print()
    print("| K | method | sequence forwards | per comparison | steps | seconds | comparisons/s | pairs/s |")
    print("|---|---|---|---|---|---|---|---|")
    for k, name, seqs, steps, secs, cps, pps in rows:
        print(f"| {k} | {name} | {seqs} | {seqs / args.comparisons:.0f} | {steps} | {secs:.2f} | {cps:.2f} | {pps:.1f} |")
    print()
    for k in sorted({r[0] for r in rows}):
        a = next(r for r in rows if r[0] == k and r[1] == "all-pairs")
        b = next(r for r in rows if r[0] == k and r[1] == "per-pair")
        print(f"K={k}: all-pairs forwards {a[2] / b[2]:.3f}x the sequences of per-pair (expected 1/(K-1) = {1 / (k - 1):.3f}; "
              f"in the paper's count, K vs C(K,2) = {math.comb(k, 2)} passes per prompt) and is {b[4] / a[4]:.2f}x faster")


if __name__ == "__main__":
    main()

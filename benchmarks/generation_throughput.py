"""Rollout throughput: our sampler against ``model.generate`` from transformers, in the same run.

A batch of 64 left-padded prompts (16..48 tokens) x 64 new tokens on the ``default``-size model (Llama, d 256, 4 layers,
4 heads, d_ff 768, vocab 4096; random weights: speed does not depend on them). Every row generates all 64 tokens
(no stop token can occur), sampling at temperature 1 with the full vocabulary, so both sides do the same work.
The machine is shared, so each engine runs ``--repeats`` times, interleaved, and the best and median are reported.

    python benchmarks/generation_throughput.py [--repeats 5] [--batch 64] [--new-tokens 64] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time


def build(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.d_model, intermediate_size=args.d_ff, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=args.heads, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(16, 49, (args.batch,), generator=g).tolist()
    prompts = [torch.randint(2, args.vocab, (n,), generator=g).tolist() for n in lens]
    return model, prompts


def time_ours(model, prompts, args, engine: str) -> float:
    from instructgpt.sampling import SamplingParams, TorchSampler

    sampler = TorchSampler(model, pad_token_id=1, batch_size=len(prompts), engine=engine)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, seed=0, stop_token_ids=())
    t, c = time.perf_counter(), time.process_time()
    r = sampler.generate(prompts, params)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    assert sum(map(len, r.response_ids)) == len(prompts) * args.new_tokens
    return dt, dc


def time_generate(model, prompts, args) -> float:
    import torch

    from instructgpt.sampling import left_pad

    ids, mask = left_pad(prompts, 1)
    t, c = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=1, eos_token_id=None,
                             return_dict_in_generate=True)  # no scores: the faster generate, though ours also returns log-probs
    dt, dc = time.perf_counter() - t, time.process_time() - c
    assert out.sequences.shape[1] == ids.shape[1] + args.new_tokens
    return dt, dc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-ff", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args()

    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    model, prompts = build(args)
    tokens = args.batch * args.new_tokens
    runs = {"ours (static cache)": lambda: time_ours(model, prompts, args, "static"),
            "ours (hf cache)": lambda: time_ours(model, prompts, args, "hf"),
            "transformers generate": lambda: time_generate(model, prompts, args)}
    for f in runs.values():  # warm-up
        f()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, f in runs.items():
            times[k].append(f())
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}; "
          f"{args.batch} prompts x {args.new_tokens} new tokens, d {args.d_model}, {args.layers} layers, vocab {args.vocab}, "
          f"{args.repeats} interleaved repeats")
    print("tokens/s by wall clock (best / median) and by process CPU time (best / median; robust on a shared machine)")
    ref = times["transformers generate"]
    for k, ts in times.items():
        cols = []
        for j, name in ((0, "wall"), (1, "cpu")):
            xs, rs = [t[j] for t in ts], [t[j] for t in ref]
            best, med = min(xs), statistics.median(xs)
            cols.append(f"{name} {tokens / best:6.0f} / {tokens / med:6.0f} tok/s ({min(rs) / best:4.2f}x / {statistics.median(rs) / med:4.2f}x)")
        print(f"{k:<22} " + "   ".join(cols))

if __name__ == "__main__":
    main()

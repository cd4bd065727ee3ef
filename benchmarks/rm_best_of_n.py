"""Is the reward model good enough to optimise against?  Best-of-n by the reward model against the gold judge.

For the held-out win-rate prompts of a run's built-in world, sample n responses per prompt from the SFT model, pick the one
the reward model scores highest, and measure the gold judge's mean score of the picks for n = 1, 2, 4, ..., beside the
oracle (the pick with the highest gold score). A reward model that helps PPO raises the gold score with n; one that only
tells SFT-like text from pretrained-like text leaves it flat or lowers it (over-optimisation in miniature). Also prints the
held-out labelers' win rate of each pick against the first sample, which bounds what selection among n samples can buy.

Also prints how often the reward model orders two samples of the same prompt like the gold judge does (pairs whose gold
scores differ by at least 0.1): the signal PPO gets from it among the policy's own samples.

    python benchmarks/rm_best_of_n.py --run runs/default [--rm runs/default/rm] [--n 8] [--prompts 200]
"""

from __future__ import annotations

import argparse
import random
import statistics as st
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run directory with world/, sft/ and rm/")
    ap.add_argument("--rm", default="", help="reward-model folder (default: <run>/rm)")
    ap.add_argument("--policy", default="", help="model to sample from (default: <run>/sft)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--prompts", type=int, default=200, help="held-out win-rate prompts")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    a = ap.parse_args()

    import torch

    from instructgpt.reward_model import load_reward_model
    from instructgpt.evaluation import sample_and_judge
    from instructgpt.sampling import SamplingParams, TorchSampler, encode_prompt, load_model
    from instructgpt.tokenizer import stop_token_ids
    from instructgpt.world import World

    if a.threads:
        torch.set_num_threads(a.threads)
    run = Path(a.run)
    world = World.load(run / "world")
    judge = world.judge()
    recs = world.eval_sets()["winrate"][: a.prompts]
    cpu = torch.device("cpu")
    model, tok = load_model(str(a.policy or run / "sft"), cpu)
    stops = stop_token_ids(tok, model.generation_config)
    ids = [encode_prompt(tok, r["prompt"], chat=True) for r in recs]
    sampler = TorchSampler(model, tok.pad_token_id)
    judged = [sample_and_judge(sampler, tok, ids, recs, judge, SamplingParams(a.max_new_tokens, a.temperature, 0, 0.95, s, stops))
              for s in range(a.n)]
    samples, gold = [j[0] for j in judged], [j[1] for j in judged]
    rm = load_reward_model(a.rm or run / "rm", cpu)
    rewards = [rm.score_texts([r["prompt"] for r in recs], s) for s in samples]
    labs, rng = world.labelers("heldout"), random.Random(0)
    P = range(len(recs))
    print(f"{len(recs)} prompts, {a.n} samples each at temperature {a.temperature}")
    # the reward model's ordering of the policy's own samples: pairs of one prompt whose gold scores differ by >= 0.1
    agree = [(gold[i][p] > gold[j][p]) == (rewards[i][p] > rewards[j][p])
             for p in P for i in range(a.n) for j in range(i + 1, a.n) if abs(gold[i][p] - gold[j][p]) >= 0.1]
    print(f"reward model orders {len(agree)} pairs of same-prompt samples (gold differs by >= 0.1) like the gold judge: "
          f"{st.mean(agree) if agree else float('nan'):.3f} (chance 0.5)")
    print(f"{'n':>4} {'gold, RM pick':>14} {'gold, oracle':>13} {'win vs 1 (RM)':>14} {'win vs 1 (oracle)':>18}")
    ks = sorted({2 ** i for i in range(a.n.bit_length()) if 2 ** i <= a.n} | {a.n})
    for k in ks:
        rm_pick = [max(range(k), key=lambda i: rewards[i][p]) for p in P]
        or_pick = [max(range(k), key=lambda i: gold[i][p]) for p in P]
        win_rm = st.mean(labs[p % len(labs)].prefer(recs[p], samples[rm_pick[p]][p], samples[0][p], rng) for p in P)
        win_or = st.mean(labs[p % len(labs)].prefer(recs[p], samples[or_pick[p]][p], samples[0][p], rng) for p in P)
        print(f"{k:>4} {st.mean(gold[rm_pick[p]][p] for p in P):>14.3f} {st.mean(gold[or_pick[p]][p] for p in P):>13.3f} "
              f"{win_rm:>14.3f} {win_or:>18.3f}")


if __name__ == "__main__":
    main()

"""PPO against the gold judge itself (an oracle reward model): is the reward model or the PPO budget the bottleneck?

Runs `igpt ppo`'s trainer (plain PPO, the chosen preset) on a finished run's SFT model, with the reward model replaced by
the built-in world's gold judge: the score of each response is (gold - center) / scale. The gold evaluation that the
stage logs every --eval-every steps (metrics.jsonl, `gold_score`) then shows how far PPO gets when the reward is the
truth. If the gold score does not rise even here, the PPO budget (episodes, learning rate), not the reward model, limits
the gain.

    python benchmarks/ppo_oracle_reward.py --run runs/default --out /tmp/ppo_oracle [--lr 5e-5] [--steps 20]

--center should be about the SFT model's mean gold score at the rollout temperature (the trainer logs it as the gold
score of step 0): 0.45 on the default world with careless demonstrations, about 0.7 with ideal ones (--careless-share 0).
Then `igpt eval --run RUN --models oracle=OUT` measures the win rate such a policy reaches.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run directory with world/ and sft/")
    ap.add_argument("--out", required=True, help="output folder for the policy (overwritten)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--lr", type=float, default=0.0, help="policy learning rate (0 = the preset's)")
    ap.add_argument("--steps", type=int, default=0, help="PPO steps (0 = the preset's)")
    ap.add_argument("--center", type=float, default=0.45, help="subtracted from the gold score (about SFT's mean gold score)")
    ap.add_argument("--scale", type=float, default=0.3, help="the centred gold score is divided by this")
    a = ap.parse_args()

    from instructgpt.config import build_config
    from instructgpt.episodes import encode_records
    from instructgpt.stages.ppo import PPOConfig, load_prompt_records, run
    from instructgpt.tokenizer import load_tokenizer, stop_token_ids
    from instructgpt.world import World

    over = {"run": a.run, "out": a.out, "ptx_coef": 0.0, "progress": False, "overwrite": True}
    if a.lr:
        over["lr"] = a.lr
    if a.steps:
        over["steps"] = a.steps
    cfg = build_config(PPOConfig, a.preset, overrides=over)
    world = World.load(Path(a.run) / "world")
    judge = world.judge()
    tok = load_tokenizer(Path(a.run) / "sft")
    records = load_prompt_records(cfg, world)
    by_ids = {tuple(ids): rec for ids, rec in zip(encode_records(tok, records, cfg.max_prompt_len), records)}
    stops = set(stop_token_ids(tok, None))

    def gold_reward(prompts: list[list[int]], responses: list[list[int]]) -> list[float]:
        # the trainer passes each response cut after its first stop token (kept), unpadded: the rule of decode_responses
        texts = [tok.decode(r[:-1] if r and r[-1] in stops else r, skip_special_tokens=True) for r in responses]
        return [(judge.score(by_ids[tuple(p)], t).score - a.center) / a.scale for p, t in zip(prompts, texts)]

    out = run(cfg, reward_fn=gold_reward)
    rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    print("gold score by step:", [(r["step"], round(r["gold_score"], 3)) for r in rows if "gold_score" in r])
    print("KL to SFT by step:", [(r["step"], round(r["kl"], 2)) for r in rows if "kl" in r][:: max(1, cfg.steps // 5)])


if __name__ == "__main__":
    main()

"""The reward model: a causal-LM trunk with a scalar head on the last real token, and the InstructGPT ranking loss.

A reward-model folder is a standard Hugging Face sequence-classification folder (``num_labels=1``, ``pad_token_id``
set), so ``transformers.AutoModelForSequenceClassification.from_pretrained(folder)`` loads it with no code of ours.
Llama's ``score`` head has no bias, so the normalising offset lives in the config:

* ``config.reward_bias`` (float): added to the head's output so labeler demonstrations average a reward of 0;
* ``config.reward_std`` (float): the std of the (biased) reward on those demonstrations, for PPO to normalise with.

``reward = score(hidden state of the last real token) + reward_bias``. The input is the prompt and the response rendered
through the chat template as one finished conversation (``<|user|>prompt<|end|><|assistant|>response<|end|>`` with our
tokenizer), so the last real token is the end-of-turn token, where PPO also reads the reward.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import UserError

STATS_FILE = "reward_stats.json"
PROMPTS_FILE = "prompts_seen.txt"  # a hash of every prompt the reward model trained or validated on (stages/reward.prompt_fingerprints)


# ---------------------------------------------------------------------------------------------- rendering
def encode_pair(tok: Any, prompt: Any, response: str, max_len: int = 0) -> tuple[list[int], bool]:
    """Token ids of (prompt, response) as one finished chat, and whether it was cut to ``max_len``.

    ``prompt`` is a user string or chat messages. Overlong inputs keep their last ``max_len`` tokens (the reward is read
    at the end, so the end must stay).
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    messages = messages + [{"role": "assistant", "content": response}]
    ids = list(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=False, return_dict=False))
    if max_len and len(ids) > max_len:
        return ids[-max_len:], True
    return ids, False


def last_token_index(attention_mask: Any) -> Any:
    """Index of the last real token in each row, for left- or right-padded batches."""
    width = attention_mask.shape[-1]
    return width - 1 - attention_mask.long().flip(-1).argmax(-1)


def head_name(model: Any) -> str:
    """The attribute holding a sequence-classification model's scalar head (``score`` for Llama/GPT-2/Qwen,
    ``classifier`` for others)."""
    for name in ("score", "classifier"):
        if getattr(model, name, None) is not None:
            return name
    raise UserError(f"{type(model).__name__} has no 'score' or 'classifier' head")


def head_of(model: Any) -> Any:
    """The scalar head of a sequence-classification model."""
    return getattr(model, head_name(model))


def raw_rewards(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """The head's output at each row's last real token (no bias), shape (B,). Works for left and right padding:
    position ids count real tokens only."""
    import torch

    from .sampling import position_ids_from_mask

    base = model.base_model
    hidden = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)).last_hidden_state
    last = last_token_index(attention_mask)
    h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return head_of(model)(h).squeeze(-1).float()


def init_head(model: Any, seed: int = 0) -> None:
    """Reward head init N(0, 1/sqrt(d_model + 1)) (Ziegler et al.), zero bias where there is one."""
    import torch

    head = head_of(model)
    d = head.weight.shape[1]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) / math.sqrt(d + 1))
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()


# ---------------------------------------------------------------------------------------------- the loss
@dataclass
class RankingBatch:
    """Every response of every comparison in a batch, flattened; ``pairs`` index into the flattened rows."""

    input_ids: Any  # (N, L) right-padded
    attention_mask: Any  # (N, L)
    pairs: Any  # (P, 2) long: rows of (better, worse)
    pair_group: Any  # (P,) long: which comparison each pair belongs to
    n_groups: int

    def to(self, device: Any) -> "RankingBatch":
        return RankingBatch(self.input_ids.to(device), self.attention_mask.to(device), self.pairs.to(device),
                            self.pair_group.to(device), self.n_groups)


def flatten_comparisons(examples: Sequence[tuple[list[Any], list[tuple[int, int]]]]) -> tuple[list[Any], list[tuple[int, int]], list[int]]:
    """Comparisons, each (its K responses, its (better, worse) pairs), as one list of responses, the pairs indexing into
    it and each pair's comparison: every response appears once, however many pairs it is in."""
    items, pairs, groups = [], [], []
    for g, (responses, prs) in enumerate(examples):
        base = len(items)
        items += responses
        for i, j in prs:
            pairs.append((base + i, base + j))
            groups.append(g)
    return items, pairs, groups


def collate(examples: Sequence[tuple[list[list[int]], list[tuple[int, int]]]], pad_id: int) -> RankingBatch:
    """Batch comparisons: each is (token ids of its K responses, its (better, worse) pairs). One row per response,
    so each response gets one forward pass however many pairs it is in."""
    import torch

    seqs, pairs, groups = flatten_comparisons(examples)
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        input_ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
    return RankingBatch(input_ids, mask, torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
                        torch.tensor(groups, dtype=torch.long), len(examples))


def ranking_loss(rewards: Any, pairs: Any, pair_group: Any, n_groups: int, ipo_beta: float = 0.0) -> tuple[Any, dict]:
    """InstructGPT's loss: for each comparison, -1/P * sum over its P pairs of log sigmoid(r_better - r_worse), with
    P = C(K, 2) when nothing is tied; then the mean over comparisons (each prompt weighs the same whatever its K).

    DPO (Rafailov et al. 2023) is this loss on the implicit rewards beta * log(pi / pi_ref). ``ipo_beta`` > 0 replaces
    each pair's term by IPO's (Azar et al. 2023) squared one, (h - 1 / (2 beta))^2 with h the difference of the pair's
    log-ratios, given implicit rewards beta * log(pi / pi_ref): ((r_better - r_worse - 1/2) / beta)^2.

    Returns (loss, {"acc": share of pairs ordered right (ties in reward count half), "pairs": P_total}).
    """
    import torch
    import torch.nn.functional as F

    diff = rewards[pairs[:, 0]] - rewards[pairs[:, 1]]
    per_pair = ((diff - 0.5) / ipo_beta) ** 2 if ipo_beta > 0 else -F.logsigmoid(diff)
    sums = torch.zeros(n_groups, dtype=per_pair.dtype, device=per_pair.device).index_add(0, pair_group, per_pair)
    counts = torch.zeros(n_groups, dtype=per_pair.dtype, device=per_pair.device).index_add(0, pair_group, torch.ones_like(per_pair))
    has = counts > 0
    loss = (sums[has] / counts[has]).mean()
    with torch.no_grad():
        acc = ((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item() if len(diff) else float("nan")
    return loss, {"acc": acc, "pairs": int(len(diff))}


# ---------------------------------------------------------------------------------------------- loading and scoring
class RewardModel:
    """A loaded reward model: ``score(ids, mask)`` on token ids, ``score_texts(prompts, responses)`` on text."""

    def __init__(self, model: Any, tok: Any, device: Any, bias: float = 0.0, std: float = 1.0, max_len: int = 0):
        self.model = model
        self.tok = tok
        self.device = device
        self.bias = float(bias)
        self.std = float(std)
        self.max_len = int(max_len or getattr(model.config, "max_position_embeddings", 0) or 0)

    def score(self, input_ids: Any, attention_mask: Any) -> Any:
        """Rewards (B,) = head(last real token's hidden state) + reward_bias; left or right padding."""
        import torch

        with torch.no_grad():
            return raw_rewards(self.model, input_ids.to(self.device), attention_mask.to(self.device)) + self.bias

    def encode(self, prompt: Any, response: str) -> list[int]:
        return encode_pair(self.tok, prompt, response, self.max_len)[0]

    def score_texts(self, prompts: Sequence[Any], responses: Sequence[str], batch_size: int = 32) -> list[float]:
        """Rewards of (prompt, response) pairs; a prompt is a user string or chat messages."""
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        seqs = [self.encode(p, r) for p, r in zip(prompts, responses)]
        out: list[float] = []
        pad = int(self.tok.pad_token_id)
        for s in range(0, len(seqs), batch_size):
            chunk = seqs[s : s + batch_size]
            width = max(len(x) for x in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, x in enumerate(chunk):
                ids[r, : len(x)] = torch.tensor(x)
                mask[r, : len(x)] = 1
            out += self.score(ids, mask).float().cpu().tolist()
        return out


def load_reward_model(path: str | Path, device: Any = None) -> RewardModel:
    """Load a reward-model folder written by ``igpt rm`` (or any 1-label sequence-classification folder), in eval mode."""
    from transformers import AutoModelForSequenceClassification

    from .models import load_pretrained, resolve_device
    from .tokenizer import load_tokenizer

    path = Path(path)
    if path.exists() and not (path / "config.json").is_file():  # (else a hub id, or a one-line error from the loader)
        raise UserError(f"not a reward model folder: {path} (no config.json; run igpt rm first)")
    dev = device if device is not None else resolve_device("auto")
    tok = load_tokenizer(path)
    model = load_pretrained(AutoModelForSequenceClassification, path, "reward model")
    if model.config.num_labels != 1:
        raise UserError(f"{path}: a reward model has one output (num_labels=1), this one has {model.config.num_labels}")
    model.to(dev).eval()
    bias = getattr(model.config, "reward_bias", None)
    std = getattr(model.config, "reward_std", None)
    if (bias is None or std is None) and (path / STATS_FILE).is_file():
        stats = json.loads((path / STATS_FILE).read_text())
        bias = stats.get("reward_bias", bias)
        std = stats.get("reward_std", std)
    return RewardModel(model, tok, dev, bias=float(bias or 0.0), std=float(std or 1.0))

"""PPO's rollout data: prompts in a seeded, resumable order (each data-parallel rank its own), and sampled episodes laid
out for training and scoring (``Episodes``), with the chunked no-grad passes over them."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .errors import UserError


def encode_records(tok: Any, records: list[dict], max_len: int) -> list[list[int]]:
    """Chat-template token ids of each prompt, keeping the last ``max_len`` tokens (the generation prompt is at the end)."""
    from .sampling import encode_prompt

    out = []
    for r in records:
        try:
            ids = encode_prompt(tok, r["prompt"])
        except Exception as e:  # malformed messages in a user's file
            raise UserError(f"prompt {r.get('id')!r}: cannot apply the chat template ({str(e).splitlines()[0]})") from None
        out.append(ids[-max_len:])
    return out


class PromptStream:
    """Prompt indices in a seeded order, epoch after epoch, with an exact resumable position.

    Rank r of W takes items r, r+W, ... of each global batch, so every rank samples its own prompts.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.B, self.seed, self.rank, self.world = n, batch_size, seed, rank, world_size
        self.epoch, self.pos = 0, 0

    def _perm(self, epoch: int):
        import numpy as np

        return np.random.default_rng([self.seed, 7, epoch]).permutation(self.n)

    def next(self) -> list[int]:
        want, idx = self.B * self.world, []
        perm = self._perm(self.epoch)
        while len(idx) < want:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                perm = self._perm(self.epoch)
            take = min(want - len(idx), self.n - self.pos)
            idx.extend(int(i) for i in perm[self.pos : self.pos + take])
            self.pos += take
        return idx[self.rank :: self.world]

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state(self, s: dict) -> None:
        self.epoch, self.pos = int(s["epoch"]), int(s["pos"])


def truncate_after_stop(ids: list[int], stop_ids: set[int]) -> tuple[list[int], bool]:
    """Cut a response after its first stop token (kept); True when there was one."""
    for i, t in enumerate(ids):
        if t in stop_ids:
            return ids[: i + 1], True
    return ids, False


@dataclasses.dataclass
class Episodes:
    """A batch of (prompt, response) pairs laid out for training, every tensor on one device.

    ``input_ids`` (B, W): prompt then response, right-padded (no attention mask is needed: attention is causal and the
    padding is after every real token). Response token t of row i sits at position P_i + t and is predicted from
    position ``gather_pos[i, t]`` = P_i + t - 1.
    """

    input_ids: Any
    gather_pos: Any
    response: Any  # (B, R) response token ids, padded
    mask: Any  # (B, R) float, 1 on real response tokens
    seq_len: Any  # (B,) real length P_i + R_i
    finished: Any  # (B,) bool

    def select(self, rows: Any) -> "Episodes":
        """Rows ``rows`` trimmed to their own longest sequence and response."""
        W = int(self.seq_len[rows].max())
        R = int(self.mask[rows].sum(-1).max())
        return Episodes(self.input_ids[rows, :W], self.gather_pos[rows, :R].clamp(max=W - 1), self.response[rows, :R], self.mask[rows, :R],
                        self.seq_len[rows], self.finished[rows])


def build_episodes(prompts: list[list[int]], responses: list[list[int]], finished: list[bool], pad_id: int, device: Any) -> Episodes:
    import torch

    B = len(prompts)
    lens = [len(p) + len(r) for p, r in zip(prompts, responses)]
    W, R = max(lens), max(1, max(len(r) for r in responses))
    ids = torch.full((B, W), pad_id, dtype=torch.long)
    resp = torch.full((B, R), pad_id, dtype=torch.long)
    mask = torch.zeros((B, R), dtype=torch.float32)
    gpos = torch.zeros((B, R), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        if r:
            resp[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1.0
        gpos[i] = (torch.arange(R) + len(p) - 1).clamp(max=W - 1)
    return Episodes(ids.to(device), gpos.to(device), resp.to(device), mask.to(device), torch.tensor(lens).to(device),
                    torch.tensor(finished, dtype=torch.bool).to(device))


def chunks(n: int, size: int):
    """Slices of ``range(n)`` of at most ``size``."""
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def batched(fn: Callable[[Episodes], Any], ep: Episodes, size: int) -> Any:
    """Apply ``fn`` to row chunks of ``ep`` (each trimmed to its own longest sequence) and stitch the results."""
    import torch

    n = ep.input_ids.shape[0]
    if n <= size:
        return fn(ep)
    parts = []
    R = ep.mask.shape[1]
    for sl in chunks(n, size):
        rows = torch.arange(sl.start, sl.stop, device=ep.input_ids.device)
        out = fn(ep.select(rows))
        if out.dim() == 2 and out.shape[1] < R:
            out = torch.nn.functional.pad(out, (0, R - out.shape[1]))
        parts.append(out)
    return torch.cat(parts)

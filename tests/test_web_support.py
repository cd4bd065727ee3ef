"""Shared helpers for the web tests (no tests here): a deterministic streaming backend and a small run folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from instructgpt.store import ComparisonStore
from instructgpt.web.auth import Access

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'

TOKENS = [
    {"name": "owner", "role": "owner", "token": "owner-token-0123456789"},
    {"name": "alice", "role": "labeler", "token": "alice-token-0123456789"},
    {"name": "bob", "role": "labeler", "token": "bob-token-0123456789ab"},
]


def auth(name: str) -> dict:
    token = next(t["token"] for t in TOKENS if t["name"] == name)
    return {"Authorization": f"Bearer {token}"}


class FakeBackend:
    """Test-only ChatBackend: a fixed reply per model, streamed word by word with a small delay."""

    def __init__(self, models=("sft", "ppo-ptx"), delay_s: float = 0.0, words: int = 8, payload: str = ""):
        self.models = list(models)
        self.delay_s = delay_s
        self.words = words
        self.payload = payload
        self.calls: list[tuple[str, list[dict]]] = []

    def stream(self, model_name: str, messages: list[dict]) -> Iterator[str]:
        self.calls.append((model_name, messages))
        prompt = messages[-1]["content"]
        pieces = [f"{model_name}-says-{i} " for i in range(self.words)]
        pieces.insert(1, f"(re: {prompt[:40]}) ")
        if self.payload:
            pieces.insert(2, self.payload)
        for p in pieces:
            if self.delay_s:
                time.sleep(self.delay_s)
            yield p


def make_run(tmp_path: Path, n_tasks: int = 3, k: int = 4, want_labels: int = 1, xss: bool = False) -> tuple[Path, ComparisonStore]:
    run = tmp_path / "run"
    (run / "comparisons").mkdir(parents=True)
    store = ComparisonStore(run / "comparisons" / "comparisons.sqlite")
    with store.batch():
        for t in range(n_tasks):
            store.add_prompt(f"p{t}", f"Prompt number {t}: explain something.", split="train")
            responses = [{"text": f"Response {i} to prompt {t}.", "model": "sft", "temperature": 0.7 + 0.1 * i}
                         for i in range(k)]
            if xss and t == 0:
                responses[0]["text"] = "Evil: " + XSS
            store.add_task(f"p{t}", responses, task_key=f"human/{t}", want_labels=want_labels)
    return run, store


def access() -> Access:
    return Access(TOKENS)

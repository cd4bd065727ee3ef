"""Shared fixtures: a tiny tokenizer and tiny random Llama models built locally (no downloads)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

NAMES = ["Alba", "Borin", "Cetra", "Dovel", "Eskar", "Fanwe", "Gorim", "Helta"]
CAPITALS = ["Mira", "Toln", "Vessa", "Quor", "Lirr", "Pand", "Seft", "Uron"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: a second intra-op thread only adds synchronisation and stalls badly
    when other processes compete for the cores. Test modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_torchrun(script: Path, port: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``script`` in 2 processes under torchrun (gloo on CPU, one thread each); the test fails with the stderr tail."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), str(script), *args]
    r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def toy_documents(n: int = 600, seed: int = 0) -> list[str]:
    """A small templated corpus with learnable facts (the capital of each country)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        j = rng.randrange(len(NAMES))
        docs.append(
            rng.choice(
                [
                    f"The capital of {NAMES[j]} is {CAPITALS[j]}.",
                    f"Question: What is the capital of {NAMES[j]}?\nAnswer: {CAPITALS[j]}.",
                    f"{CAPITALS[j]} is the capital city of {NAMES[j]}. It is a large city.",
                ]
            )
        )
    return docs


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_text("\n\n".join(toy_documents()), encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from instructgpt.tokenizer import train_bpe

    tok = train_bpe(toy_documents() + ["Hello there. How are you? I am fine, thank you."] * 5, vocab_size=320)
    out = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A random 2-layer Llama saved as a standard Hugging Face folder with its tokenizer."""
    from instructgpt.models import build_llama, save_model
    from instructgpt.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer_dir)
    model = build_llama(tok, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64, max_seq_len=128, seed=0)
    out = tmp_path_factory.mktemp("model")
    save_model(model, tok, out)
    return out


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The built-in world at size tiny, saved to a folder."""
    from instructgpt.world import World

    out = tmp_path_factory.mktemp("world") / "world"
    World.generate(seed=0, size="tiny").save(out)
    return out

"""Step 2: the assistant-only loss mask, the demonstration formats, SFT training and resume, and `igpt chat`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from instructgpt.data.chat import render as render_conversation
from instructgpt.stages.sft import SFTConfig
from instructgpt.stages.sft import run as sft

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of Alba?"},
    {"role": "assistant", "content": "Mira."},
    {"role": "user", "content": "And of Borin?"},
    {"role": "assistant", "content": "The capital of Borin is Toln."},
]


def test_loss_mask_covers_exactly_the_assistant_tokens(tiny_tokenizer_dir):
    from instructgpt.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer_dir)
    ids, mask = render_conversation(tok, CONV)
    assert len(ids) == len(mask)
    assert tok.decode(ids) == tok.apply_chat_template(CONV, tokenize=False)
    # the masked tokens, read in order, are the two answers each closed by <|end|>; nothing else
    runs, cur = [], []
    for t, m in zip(ids, mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    assert runs == ["Mira.<|end|>", "The capital of Borin is Toln.<|end|>"]
    single = render_conversation(tok, CONV[1:3])
    assert tok.decode([t for t, m in zip(*single) if m]) == "Mira.<|end|>"


def _demos(tmp_path):
    from conftest import CAPITALS, NAMES

    f = tmp_path / "demos.jsonl"
    rows = []
    for i in range(160):
        j = i % len(NAMES)
        rows.append({"prompt": f"What is the capital of {NAMES[j]}?", "response": f"The capital of {NAMES[j]} is {CAPITALS[j]}."})
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def _cfg(model, data, out, **kw):
    base = dict(model=str(model), data=str(data), out=str(out), epochs=3, batch_tokens=512, lr=3e-3, warmup_steps=2, max_len=64,
                val_fraction=0.1, progress=False, tensorboard=False, checkpoint_every=5)
    return SFTConfig(**{**base, **kw})


def test_sft_lowers_validation_loss_and_reports_dropped(tiny_model_dir, tmp_path):
    data = _demos(tmp_path)
    with open(data, "a") as f:
        f.write(json.dumps({"prompt": "long " * 200, "response": "x"}) + "\n")
    out = sft(_cfg(tiny_model_dir, data, tmp_path / "sft"))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(vals) == 3 and vals[-1] < vals[0] and rows[0]["dropped_overlong"] == 1
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(out))
    info = json.loads((out / "igpt_complete.json").read_text())
    assert info["dropped_overlong"] == 1 and info["best_epoch"] >= 1


def test_sft_resume_equals_uninterrupted(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    data = _demos(tmp_path)
    a = sft(_cfg(tiny_model_dir, data, tmp_path / "a", select_by="last", dropout=0.1))
    part = sft(_cfg(tiny_model_dir, data, tmp_path / "b", select_by="last", dropout=0.1, stop_after=4))
    assert part.name == "b.partial"
    b = sft(_cfg(tiny_model_dir, data, tmp_path / "b", select_by="last", dropout=0.1, resume=True))
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    for k in x:
        assert torch.equal(x[k], y[k]), k


def test_chat_command_streams_and_handles_commands(tiny_model_dir):
    r = subprocess.run(
        [sys.executable, "-m", "instructgpt.cli", "chat", "--model", str(tiny_model_dir), "--max-new-tokens", "6"],
        input="Hello\n/system Be brief.\nHi again\n/reset\n/nope\n/quit\nnever read\n", capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "(system message set: Be brief.; conversation reset)" in out and "(conversation reset)" in out
    assert "(unknown command /nope" in out and "never read" not in out

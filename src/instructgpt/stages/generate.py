"""Sample from a model: one prompt or a JSONL of prompts, plain text or chat, batched with a KV cache."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import ClassVar

from ..config import StageConfig, field
from ..data.chat import read_prompts
from ..errors import UserError


@dataclasses.dataclass
class GenerateConfig(StageConfig):
    """Prompts come from --prompt or --prompts (JSONL with "prompt" text or chat "messages"); results go to stdout or --out."""

    stage: ClassVar[str] = "generate"

    model: str = field("", "model folder or hub id")
    prompt: str = field("", "one prompt")
    prompts: str = field("", "JSONL file of prompts: {\"prompt\": text} or {\"messages\": [...]}, optional \"id\"")
    out: str = field("", "write JSONL results here instead of printing")
    chat: bool = field(True, "apply the chat template (off: continue the raw text, like a pretrained model)")
    max_new_tokens: int = field(64, "tokens to generate at most", ge=1)
    temperature: float = field(0.7, "sampling temperature (0 = greedy)", ge=0.0)
    top_p: float = field(0.95, "nucleus sampling mass", ge=0.0, le=1.0)
    top_k: int = field(0, "sample among the k most likely tokens (0 = all)", ge=0)
    batch_size: int = field(32, "prompts per batch", ge=1)
    seed: int = field(0, "random seed", ge=0)
    device: str = field("auto", "auto, cpu, cuda or cuda:N")


def run(cfg: GenerateConfig) -> list[dict]:
    from ..models import resolve_device
    from ..sampling import SamplingParams, make_sampler, decode_responses, encode_prompt, load_model
    from ..tokenizer import stop_token_ids

    if not cfg.model:
        raise UserError("--model: give a model folder or hub id")
    if not cfg.prompt and not cfg.prompts:
        raise UserError("give --prompt TEXT or --prompts FILE")
    rows = [{"prompt": cfg.prompt}] if cfg.prompt else read_prompts(cfg.prompts)
    model, tok = load_model(cfg.model, resolve_device(cfg.device))
    ids = [encode_prompt(tok, r.get("messages") or r["prompt"], chat=cfg.chat) for r in rows]
    stops = stop_token_ids(tok, getattr(model, "generation_config", None))
    sampler = make_sampler(model, tok, batch_size=cfg.batch_size)
    params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed, stops)
    rollout = sampler.generate(ids, params)
    texts = decode_responses(tok, rollout, stops)
    results = [{**r, "response": t, "finished": f} for r, t, f in zip(rows, texts, rollout.finished)]
    if cfg.out:
        tmp = Path(cfg.out + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results), encoding="utf-8")
        tmp.replace(cfg.out)
    else:
        for r in results:
            if cfg.prompt:
                print(r["response"])
            else:
                print(json.dumps(r, ensure_ascii=False))
        sys.stdout.flush()
    return results

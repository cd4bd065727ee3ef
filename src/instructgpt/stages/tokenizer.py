"""Train the byte-level BPE tokenizer on a corpus, with the chat format's special tokens and chat template."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import ClassVar

from ..config import StageConfig, field, save_config
from ..errors import UserError
from ..rundir import begin_output, finish_output, in_run, own_output


@dataclasses.dataclass
class TokenizerConfig(StageConfig):
    """Byte-level BPE trained with the `tokenizers` library; saved as a Hugging Face tokenizer folder."""

    stage: ClassVar[str] = "tokenizer"
    presets: ClassVar[dict] = {"tiny": {"vocab_size": 1024}, "default": {"vocab_size": 4096}, "gpu": {"vocab_size": 8192}}

    corpus: str = field("", "corpus: .txt, .jsonl (field text), a folder, a world folder, or hf:NAME (default: <run>/world)")
    run: str = field("", "run directory; the output goes to <run>/tokenizer")
    out: str = field("", "output folder (overrides <run>/tokenizer)")
    vocab_size: int = field(4096, "vocabulary size including the special tokens", ge=1)
    min_frequency: int = field(2, "minimum pair frequency for a merge", ge=0)
    max_docs: int = field(200000, "train on at most this many documents (the first ones)", ge=1)
    overwrite: bool = field(False, "replace an existing output folder")


def resolve_paths(cfg: TokenizerConfig) -> tuple[str, Path]:
    corpus = cfg.corpus or (str(in_run(cfg.run, "world")) if cfg.run else "")
    out = Path(cfg.out) if cfg.out else (in_run(cfg.run, "tokenizer") if cfg.run else None)
    if not corpus:
        raise UserError("--corpus: give a corpus (or --run with a world in it)")
    if out is None:
        raise UserError("--out: give an output folder (or --run)")
    return corpus, out


def run(cfg: TokenizerConfig) -> Path:
    from ..data.corpus import iter_documents
    from ..tokenizer import check_vocab_size, train_bpe

    check_vocab_size(cfg.vocab_size)
    corpus, out = resolve_paths(cfg)
    docs = list(itertools.islice(iter_documents(corpus), cfg.max_docs))  # reads and validates before anything is written
    if not docs:
        raise UserError(f"corpus {corpus} holds no documents")
    with own_output(out):
        work = begin_output(out, overwrite=cfg.overwrite, resume=False)
        tok = train_bpe(docs, cfg.vocab_size, cfg.min_frequency)
        tok.save_pretrained(str(work))
        save_config(cfg, work)
        return finish_output(work, out, {"vocab_size": len(tok), "documents": len(docs)})

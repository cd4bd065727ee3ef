"""Pretraining corpora: read documents, tokenise once into a memory-mapped cache, pack into fixed-length sequences.

Sources: a ``.txt`` file (documents separated by blank lines), records with a ``text`` field from any ``sources``
source (a JSONL, JSON, parquet or arrow file, a dataset saved with ``save_to_disk``, a dataset id ``name[:config][[split]]``),
a folder of such files, or a built-in world folder (its ``corpus.jsonl``); ``hf:NAME[:split]`` streams a dataset from the hub.
Documents are joined with EOS between them. The train/validation split is by document, decided by a hash of its text,
so it is deterministic and does not depend on the order of the files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UserError
from ..textio import text_lines


def _read_txt(path: Path) -> Iterator[str]:
    buf: list[str] = []
    for _, line in text_lines(path, "corpus file"):
        if line.strip():
            buf.append(line)
        elif buf:
            yield "\n".join(buf)
            buf = []
    if buf:
        yield "\n".join(buf)


def iter_documents(source: str | Path, world_split: str = "train") -> Iterator[str]:
    """Yield the documents of a corpus source (see the module docstring)."""
    from .sources import records, resolve

    s = str(source)
    if s.startswith("hf:"):  # the older spelling of a dataset id, streamed
        yield from _hf_documents(s[3:])
        return
    p = Path(s)
    if p.is_dir() and (p / "world.json").is_file():
        from ..world import World

        yield from World.load(p).corpus(world_split)
        return
    if p.is_file() and p.suffix == ".txt":
        yield from _read_txt(p)
        return
    if p.is_dir() and resolve(p, "corpus").kind == "folder":
        files = sorted(x for x in p.rglob("*") if x.suffix in (".txt", ".jsonl", ".json", ".parquet", ".arrow"))
        if not files:
            raise UserError(f"{p}: folder holds no .txt, .jsonl, .json, .parquet or .arrow files")
        for f in files:
            yield from iter_documents(f)
        return
    for where, obj in records(source, "corpus"):
        text = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(text, str):
            raise UserError(f"{where}: expected an object with a string field 'text'")
        yield text


def _hf_documents(spec: str) -> Iterator[str]:
    name, _, split = spec.partition(":")
    try:
        import datasets  # type: ignore
    except ModuleNotFoundError:
        raise UserError("hf: corpora need the 'datasets' package (pip install datasets)") from None
    try:
        ds = datasets.load_dataset(name, split=split or "train", streaming=True)
    except Exception as e:  # network or name errors
        raise UserError(f"cannot load dataset {name}: {str(e).splitlines()[0]}") from None
    for row in ds:
        if isinstance(row.get("text"), str):
            yield row["text"]


def is_validation(doc: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(doc.encode("utf-8"), digest_size=8).digest(), "little")
    return (h % 1_000_000) < val_fraction * 1_000_000


def _source_fingerprint(source: str | Path, tokenizer_dir_hash: str, val_fraction: float) -> str:
    h = hashlib.sha256()
    h.update(f"{source}|{tokenizer_dir_hash}|{val_fraction}".encode())
    p = Path(str(source))
    if p.exists():
        files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
        for f in files:
            st = f.stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def tokenizer_hash(tok) -> str:
    vocab = tok.get_vocab()
    h = hashlib.sha256(json.dumps(sorted(vocab.items())[:5000]).encode())
    h.update(str(len(vocab)).encode())
    return h.hexdigest()[:16]


def tokenize_corpus(
    source: str | Path, tok, cache_dir: str | Path, val_fraction: float = 0.01, batch_docs: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise a corpus once and cache it as two memory-mapped arrays (train, validation) of token ids."""
    cache_dir = Path(cache_dir)
    key = _source_fingerprint(source, tokenizer_hash(tok), val_fraction)
    dtype = np.uint16 if len(tok) < 65535 else np.uint32
    paths = {s: cache_dir / f"tokens-{key}-{s}.bin" for s in ("train", "val")}
    meta_path = cache_dir / f"tokens-{key}.json"
    if not meta_path.is_file():
        eos = tok.eos_token_id
        if eos is None:
            raise UserError("the tokenizer has no end-of-sequence token (eos_token), which separates the corpus's documents; "
                            "add one to its tokenizer_config.json")
        made = [d for d in [cache_dir, *cache_dir.parents] if not d.exists()]
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the token cache {cache_dir}: {e.strerror or e}") from None
        tmp = {s: open(str(p) + ".tmp", "wb") for s, p in paths.items()}
        counts = {"train": 0, "val": 0, "docs_train": 0, "docs_val": 0}
        try:
            docs: list[str] = []

            def flush() -> None:
                enc = tok(docs, add_special_tokens=False)["input_ids"]
                for d, ids in zip(docs, enc):
                    s = "val" if is_validation(d, val_fraction) else "train"
                    arr = np.asarray(ids + [eos], dtype=dtype)
                    tmp[s].write(arr.tobytes())
                    counts[s] += len(arr)
                    counts["docs_" + s] += 1
                docs.clear()

            for d in iter_documents(source):
                docs.append(d)
                if len(docs) >= batch_docs:
                    flush()
            if docs:
                flush()
            if counts["docs_train"] == 0:
                raise UserError(f"corpus {source} holds no documents")
        except BaseException:  # nothing half-written stays behind
            for f in tmp.values():
                f.close()
            for p in paths.values():
                Path(str(p) + ".tmp").unlink(missing_ok=True)
            for d in made:  # the folders this call made, innermost first
                try:
                    d.rmdir()
                except OSError:
                    break
            raise
        for f in tmp.values():
            f.close()
        for s, p in paths.items():
            os.replace(str(p) + ".tmp", p)
        meta_path.write_text(json.dumps({"source": str(source), "dtype": np.dtype(dtype).name, **counts}))
    meta = json.loads(meta_path.read_text())
    out = []
    for s in ("train", "val"):
        n = meta[s]
        out.append(np.memmap(paths[s], dtype=meta["dtype"], mode="r", shape=(n,)) if n else np.zeros(0, dtype=dtype))
    return out[0], out[1]


class PackedBatches:
    """Fixed-length sequences cut from a token array, served in a seeded order with an exact, resumable position.

    Sequence i is tokens[i*T : i*T + T + 1] (inputs are the first T, targets the last T). Each epoch is a new
    permutation seeded by (seed, epoch). In data-parallel training rank r of W takes rows r, r+W, ... of each global batch,
    so the union over ranks is exactly the single-process global batch.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.tokens, self.T, self.B = tokens, seq_len, batch_size
        self.n_seq = (len(tokens) - 1) // seq_len
        if self.n_seq < 1:
            raise UserError(f"corpus too small: {len(tokens)} tokens for sequences of {seq_len}")
        self.seed, self.rank, self.world = seed, rank, world_size
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_seq)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation(self.epoch)

    def next_batch(self):
        """Return (inputs, targets) as int64 tensors of shape (B, T) for this rank."""
        import torch

        global_b = self.B * self.world
        idx = []
        while len(idx) < global_b:
            if self.pos >= self.n_seq:
                self.epoch += 1
                self.pos = 0
                self._perm = self._permutation(self.epoch)
            take = min(global_b - len(idx), self.n_seq - self.pos)
            idx.extend(self._perm[self.pos : self.pos + take].tolist())
            self.pos += take
        mine = idx[self.rank :: self.world]
        rows = np.stack([np.asarray(self.tokens[i * self.T : i * self.T + self.T + 1], dtype=np.int64) for i in mine])
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats per token) of the corpus's unigram distribution: the loss of a model that ignores context."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())

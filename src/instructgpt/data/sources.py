"""Where a stage's records come from: one name for every kind of source, read as (where, record) pairs.

A source is any of:

* a local file: ``.jsonl`` (also ``.jsonl.gz``; one object a line), ``.json`` (a list of objects, or an object holding
  one list of them, or columns of equal length), ``.parquet`` or ``.arrow``;
* a local folder: a dataset written by ``datasets.Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``: its
  ``train`` split unless one is named), or a folder of the files above, read in name order;
* a Hugging Face dataset id, with an optional configuration and split: ``Anthropic/hh-rlhf``,
  ``trl-lib/ultrafeedback_binarized[train]``, ``openai/gsm8k:main[test]``. It is loaded with ``datasets.load_dataset``,
  which caches it and honours ``HF_DATASETS_OFFLINE=1`` (a dataset not in the cache is then a one-line error).

Every record carries where it came from (``file:line``, ``file:row N``, ``id[split]:row N``), so a malformed one is a
one-line error naming it. ``columns`` renames fields before a reader sees them (``{"chosen": "pos"}``: the source's
``pos`` is read as ``chosen``), for data whose columns go by other names (``--columns chosen=pos,rejected=neg``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError

FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".arrow")
_HUB_ID = re.compile(r"^(?P<name>[A-Za-z0-9][\w.\-]*(?:/[\w.\-]+)?)(?::(?P<config>[\w.\-]+))?(?:\[(?P<split>[\w.\-:%+]+)\])?$")


@dataclass
class Source:
    kind: str  # file, disk (save_to_disk), folder, hub
    path: str
    config: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        return self.path + (f":{self.config}" if self.config else "") + (f"[{self.split}]" if self.split else "")


def parse_columns(text: str | dict | None, option: str = "--columns") -> dict[str, str]:
    """``chosen=pos,rejected=neg`` (or a dict) -> ``{"chosen": "pos", "rejected": "neg"}``: the name a reader expects,
    then the source's."""
    if not text:
        return {}
    if isinstance(text, dict):
        pairs = list(text.items())
    else:
        pairs = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise UserError(f"{option}: '{part.strip()}' is not NAME=COLUMN (for example chosen=pos,rejected=neg)")
            a, b = part.split("=", 1)
            pairs.append((a.strip(), b.strip()))
    out = {}
    for a, b in pairs:
        if not a or not b:
            raise UserError(f"{option}: empty name in '{a}={b}'")
        out[str(a)] = str(b)
    return out


def hash_share(key: str, salt: str) -> float:
    """Where ``key`` falls in [0, 1), by a hash salted by what the share is for: ``hash_share(k, s) < f`` picks a share f
    of the keys that is the same on every machine and every run, and independent of the shares of other salts. Used to
    set a prompt's comparisons aside for a judge, and a prompt aside for the evaluation, whatever the source."""
    import hashlib

    digest = hashlib.blake2b(f"{salt}\0{key}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def resolve(text: str | Path, what: str = "data") -> Source:
    """What kind of source ``text`` names; a path that looks local but does not exist is an error at once."""
    raw = str(text)
    split = None
    m = re.match(r"^(?P<base>.*)\[(?P<split>[\w.\-:%+]+)\]$", raw)
    p = Path(raw).expanduser()
    if not p.exists() and m and Path(m.group("base")).expanduser().exists():  # a local dataset folder with a split
        p, split = Path(m.group("base")).expanduser(), m.group("split")
    if p.is_file():  # by its name: parquet, arrow, JSON; anything else is read as JSON lines
        return Source("file", str(p))
    if p.is_dir():
        if (p / "dataset_info.json").is_file() or (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return Source("disk", str(p), split=split)
        return Source("folder", str(p))
    looks_local = (raw.startswith((".", "/", "~")) or raw.endswith(FILE_SUFFIXES + (".txt", ".csv", ".tsv", ".gz", ".sqlite", ".db"))
                   or raw.count("/") > 1)
    hub = _HUB_ID.match(raw)
    if looks_local or hub is None:
        raise UserError(f"{raw}: {what} not found")
    return Source("hub", hub.group("name"), hub.group("config"), hub.group("split"))


def records(text: str | Path, what: str = "data", columns: dict[str, str] | None = None) -> Iterator[tuple[str, dict]]:
    """Every record of a source as ``(where, object)``; ``columns`` maps the names a reader expects to the source's."""
    src = resolve(text, what)
    rename = {b: a for a, b in (columns or {}).items()}
    for where, obj in _raw(src, what):
        if rename and isinstance(obj, dict):
            missing = [b for b in rename if b not in obj]
            if missing:
                raise UserError(f"{where}: no column '{missing[0]}' (named in --columns); it has {', '.join(map(str, obj))}")
            obj = {rename.get(k, k): v for k, v in obj.items()}
        yield where, obj


def _raw(src: Source, what: str) -> Iterator[tuple[str, Any]]:
    if src.kind == "file":
        yield from _file(Path(src.path), what)
    elif src.kind == "folder":
        files = sorted(f for f in Path(src.path).iterdir() if f.is_file() and f.name.endswith(FILE_SUFFIXES))
        if not files:
            raise UserError(f"{src.path}: the folder holds no .jsonl, .json, .parquet or .arrow file (nor a saved dataset)")
        for f in files:
            yield from _file(f, what)
    elif src.kind == "disk":
        yield from _rows(_load_from_disk(src, what), src.path)
    else:
        yield from _rows(_load_hub(src, what), str(src))


def _file(path: Path, what: str) -> Iterator[tuple[str, Any]]:
    from ..textio import jsonl_objects, read_text

    name = path.name
    if name.endswith(".parquet") or name.endswith(".arrow"):
        yield from _rows(_load_file(path, "parquet" if name.endswith(".parquet") else "arrow", what), str(path))
        return
    if name.endswith(".json"):
        text = read_text(path, what)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if len([ln for ln in text.splitlines() if ln.strip()]) > 1:  # JSON lines under a .json name
                yield from _jsonl(path, what, jsonl_objects)
                return
            raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        for i, obj in enumerate(_json_rows(data, path)):
            yield f"{path}:item {i}", obj
        return
    yield from _jsonl(path, what, jsonl_objects)


def _jsonl(path: Path, what: str, jsonl_objects: Any) -> Iterator[tuple[str, Any]]:
    for i, obj in jsonl_objects(path, what):
        yield f"{path}:{i}", obj


def _json_rows(data: Any, path: Path) -> list:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if lists and all(isinstance(v, list) for v in data.values()) and len({len(v) for v in lists}) == 1 and not all(
                isinstance(x, dict) for x in lists[0]):
            keys = list(data)
            return [dict(zip(keys, row)) for row in zip(*data.values())]  # columns of equal length
        if len(lists) == 1 and all(isinstance(x, dict) for x in lists[0]):
            return lists[0]  # {"data": [...]} and the like
    raise UserError(f"{path}: a .json file must hold a list of records, an object with one list of them, or columns of "
                    "equal length")


def _rows(dataset: Any, label: str) -> Iterator[tuple[str, Any]]:
    for i, row in enumerate(dataset):
        yield f"{label}:row {i}", row


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise UserError("reading parquet, arrow, saved datasets or hub ids needs the datasets package: pip install datasets") from None
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    return datasets


def _load_file(path: Path, kind: str, what: str) -> Any:
    ds = _datasets()
    try:
        if kind == "parquet":
            return ds.Dataset.from_parquet(str(path), keep_in_memory=True)
        import pyarrow as pa

        with pa.memory_map(str(path)) as f:
            try:
                table = pa.ipc.open_stream(f).read_all()
            except pa.ArrowInvalid:
                f.seek(0)
                table = pa.ipc.open_file(f).read_all()
        return ds.Dataset(table)
    except UserError:
        raise
    except Exception as e:  # a truncated or foreign file: pyarrow's and datasets' errors, in one line
        raise UserError(f"{path}: cannot read this {kind} file as {what} ({_first_line(e)})") from None


def _load_from_disk(src: Source, what: str) -> Any:
    ds = _datasets()
    try:
        data = ds.load_from_disk(src.path)
    except Exception as e:
        raise UserError(f"{src.path}: cannot load this saved dataset as {what} ({_first_line(e)})") from None
    return _pick_split(data, src, what)


def _load_hub(src: Source, what: str) -> Any:
    ds = _datasets()
    try:
        data = ds.load_dataset(src.path, src.config, split=src.split)
    except Exception as e:
        import os

        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (offline mode is on and it is not in the datasets cache)" if offline else ""
        raise UserError(f"{what}: cannot load the dataset {src}{hint}: {_first_line(e)}") from None
    return _pick_split(data, src, what)


def _pick_split(data: Any, src: Source, what: str) -> Any:
    if not hasattr(data, "keys"):  # a Dataset
        if src.split and src.kind == "disk":
            raise UserError(f"{src}: this saved dataset has no splits; name it without [{src.split}]")
        return data
    splits = list(data.keys())
    split = src.split or ("train" if "train" in splits else splits[0] if len(splits) == 1 else None)
    if split not in splits:
        raise UserError(f"{src}: {'no split ' + repr(src.split) if src.split else 'several splits'}; name one of "
                        f"{', '.join(splits)} in brackets, for example {src.path}[{splits[0]}]")
    return data[split]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__

"""Reading users' text files: one reader, so that every command says the same thing about the same broken file.

A file that is missing, unreadable, not UTF-8 (the line and byte offset of the first bad byte), not valid JSON (the
line and column), or a JSON value that is not an object is one line naming the file; ``.gz`` files are read through
gzip (a truncated or non-gzip file is one line too).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

from .errors import UserError, data_error


def text_lines(path: str | Path, what: str = "file") -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its newline) of a UTF-8 text file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: {what} not found" if not p.exists() else f"{p}: {what} is a folder, not a file")
    offset = 0
    try:
        with (gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")) as f:
            for i, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise data_error(p, i, f"not UTF-8 text (byte offset {offset + e.start}: {e.reason})") from None
                offset += len(raw)
                yield i, line.rstrip("\r\n") if i > 1 else line.lstrip("\ufeff").rstrip("\r\n")
    except (OSError, EOFError) as e:  # unreadable, or a truncated or non-gzip .gz file
        raise data_error(p, None, f"cannot read: {getattr(e, 'strerror', None) or e}") from None


def jsonl_objects(path: str | Path, what: str = "file") -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSON-lines file."""
    p = Path(path)
    for i, line in text_lines(p, what):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise data_error(p, i, f"not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise data_error(p, i, "not valid JSON (nested too deeply)") from None
        if not isinstance(obj, dict):
            raise data_error(p, i, f"expected a JSON object, got {type(obj).__name__}")
        yield i, obj


def read_text(path: str | Path, what: str = "file") -> str:
    """A whole UTF-8 text file."""
    return "\n".join(line for _, line in text_lines(path, what))

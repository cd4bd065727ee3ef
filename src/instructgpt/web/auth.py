"""Access tokens for ``igpt serve``: one per named labeler, plus owner tokens for the owner page.

``tokens.json`` (written with mode 0600)::

    {"version": 1, "tokens": [{"name": "alice", "role": "labeler", "token": "...", "created_at": "..."}, ...]}

A file given with ``--tokens`` may also be a plain mapping ``{"alice": "<token>", ...}`` (the name ``owner`` gets the
owner role, everyone else the labeler role).  Roles: ``labeler`` (label, arena) and ``owner`` (also the owner page and
the export).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from instructgpt.errors import UserError
from instructgpt.rundir import file_lock

ROLES = ("labeler", "owner")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_TOKEN_LEN = 16


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Access:
    """Token -> principal lookup.  Tokens are kept only as SHA-256 digests in memory."""

    def __init__(self, entries: list[dict]):
        self._by_digest: dict[bytes, Principal] = {}
        self.principals: list[Principal] = []
        seen = set()
        for e in entries:
            name, role, token = e.get("name"), e.get("role", "labeler"), e.get("token")
            check_name(name)
            if role not in ROLES:
                raise UserError(f"access token for {name!r}: role must be one of {ROLES}, got {role!r}")
            if not isinstance(token, str) or len(token) < MIN_TOKEN_LEN:
                raise UserError(f"access token for {name!r} must be a string of at least {MIN_TOKEN_LEN} characters")
            d = _digest(token)
            if d in self._by_digest:
                raise UserError(f"access token for {name!r} is the same as another labeler's")
            if name in seen:
                raise UserError(f"labeler {name!r} appears twice in the access tokens")
            seen.add(name)
            p = Principal(name, role)
            self._by_digest[d] = p
            self.principals.append(p)

    def check(self, token: str | None) -> Principal | None:
        if not token:
            return None
        # the lookup is on a SHA-256 digest of the token, so its timing says nothing useful about stored tokens
        return self._by_digest.get(_digest(token))

    def names(self) -> list[str]:
        return [p.name for p in self.principals]


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UserError(
            f"labeler name {name!r:.70} is not allowed: use 1-64 letters, digits, '_', '-', '.', '@', starting with a "
            "letter or digit"
        )
    return name


def new_token() -> str:
    return secrets.token_urlsafe(24)


def read_tokens_file(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: tokens file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read tokens file: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: tokens file is not valid JSON: {exc.msg}") from None
    if isinstance(raw, dict) and isinstance(raw.get("tokens"), list):
        entries = raw["tokens"]
        if not all(isinstance(e, dict) for e in entries):
            raise UserError(f"{path}: every entry of 'tokens' must be an object with name, role and token")
    elif isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values()):
        entries = [{"name": k, "token": v, "role": "owner" if k == "owner" else "labeler"} for k, v in raw.items()]
    else:
        raise UserError(f"{path}: expected {{\"tokens\": [{{\"name\", \"role\", \"token\"}}, ...]}} or {{name: token}}")
    try:
        Access(entries)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return [dict(e, role=e.get("role", "labeler")) for e in entries]


def write_tokens_file(path: str | os.PathLike, entries: list[dict]) -> None:
    """Write tokens atomically, readable by the owner only (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps({"version": 1, "tokens": entries}, indent=1) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def ensure_tokens(path: str | os.PathLike, labelers: list[str] | None, owner: str = "owner") -> tuple[list[dict], list[dict]]:
    """Load ``path`` (if it exists) and add a token for every labeler (and the owner) that lacks one.

    Returns ``(all_entries, new_entries)``; the file is rewritten (0600) only when something was added.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock"), remove=True):  # two servers started at once share one set
        return _add_tokens(path, labelers, owner)


def _add_tokens(path: Path, labelers: list[str] | None, owner: str) -> tuple[list[dict], list[dict]]:
    entries = read_tokens_file(path) if path.exists() else []
    have = {e["name"] for e in entries}
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    new: list[dict] = []
    wanted = [(owner, "owner")] if not any(e["role"] == "owner" for e in entries) else []
    wanted += [(check_name(n), "labeler") for n in (labelers or [])]
    if not entries and not labelers:
        wanted.append(("labeler1", "labeler"))
    for name, role in wanted:
        if name in have:
            continue
        have.add(name)
        new.append({"name": name, "role": role, "token": new_token(), "created_at": now})
    if new:
        entries = entries + new
        Access(entries)
        write_tokens_file(path, entries)
    return entries, new

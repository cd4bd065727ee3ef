"""`igpt serve`: the labeling interface, the owner's page and the model arena, on the run's comparison store."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from ..config import StageConfig, field
from ..errors import UserError


@dataclasses.dataclass
class ServeConfig(StageConfig):
    """Serves http://HOST:PORT/ ; labelers log in with the per-labeler links printed at start-up."""

    stage: ClassVar[str] = "serve"

    run: str = field("", "run directory (its comparisons/comparisons.sqlite is the store)")
    host: str = field("127.0.0.1", "address to listen on (keep 127.0.0.1 unless behind a proxy)")
    port: int = field(8000, "port", ge=1, le=65535)
    labelers: list[str] = field([], "labeler names to create access tokens for")
    tokens_file: str = field("", "JSON file of labeler tokens to use instead of generating them")
    models: list[str] = field([], "arena models: run folder names or paths (default: every model folder in the run)")


def run(cfg: ServeConfig) -> None:
    from ..web import serve

    if not cfg.run:
        raise UserError("--run: give the run directory")
    if not Path(cfg.run).is_dir():
        raise UserError(f"--run: not a directory: {cfg.run}")
    serve(cfg.run, host=cfg.host, port=cfg.port, tokens_file=cfg.tokens_file or None, labelers=cfg.labelers or None, models=cfg.models or None)

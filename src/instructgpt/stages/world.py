"""`igpt world` and `igpt judge`: generate the built-in world, and score responses with its gold judge."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from ..config import StageConfig, field
from ..errors import UserError
from ..rundir import in_run
from ..world.core import CARELESS_SHARE


@dataclasses.dataclass
class WorldConfig(StageConfig):
    """A seeded fictional universe: knowledge base, pretraining corpus, instruction tasks, demonstrations, eval sets, labelers."""

    stage: ClassVar[str] = "world"
    presets: ClassVar[dict] = {"tiny": {"size": "tiny"}, "default": {"size": "default"}, "gpu": {"size": "large"}}

    out: str = field("", "output folder (default: <run>/world)")
    run: str = field("", "run directory")
    seed: int = field(0, "world seed: the same seed gives byte-identical files", ge=0)
    size: str = field("default", "tiny, small, default or large", choices=("tiny", "small", "default", "large"))
    careless_share: float = field(CARELESS_SHARE, "the labelers' average share of careless demonstrations (0: all ideal; see docs/world.md)", ge=0.0, le=1.0)
    overwrite: bool = field(False, "replace an existing output folder")


def run(cfg: WorldConfig) -> Path:
    from ..world.commands import world_command

    out = cfg.out or (str(in_run(cfg.run, "world")) if cfg.run else "")
    if not out:
        raise UserError("--out: give an output folder (or --run)")
    import json

    from ..rundir import COMPLETE_MARKER

    path = Path(world_command(out, seed=cfg.seed, size=cfg.size, overwrite=cfg.overwrite,
                                    careless_share=cfg.careless_share))
    meta = json.loads((path / "world.json").read_text())
    info = {"size": cfg.size, "seed": cfg.seed, "careless_share": cfg.careless_share, "entities": meta.get("counts", {}).get("entities_total")}
    (path / COMPLETE_MARKER).write_text(json.dumps(info))
    return path


@dataclasses.dataclass
class JudgeConfig(StageConfig):
    """Reads lines of {"id": prompt id, "response": text}; writes the score and breakdown per line; prints the summary."""

    stage: ClassVar[str] = "judge"

    world: str = field("", "world folder (from igpt world)")
    in_: str = field("", "JSONL of {\"id\", \"response\"} to score")
    out: str = field("", "JSONL to write the scores to")


def run_judge(cfg: JudgeConfig) -> dict:
    from ..world.commands import judge_command

    for name, value in (("--world", cfg.world), ("--in", cfg.in_), ("--out", cfg.out)):
        if not value:
            raise UserError(f"{name}: required")
    return judge_command(cfg.world, cfg.in_, cfg.out)

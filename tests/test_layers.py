"""The layering of docs/CONVENTIONS.md: a module imports only from its own layer or the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "instructgpt"

# lowest first; a package name stands for every module in it
LAYERS = [
    ["errors", "textio", "config", "rundir"],
    ["models", "adapters", "sharding", "tokenizer", "sampling", "train", "checkpoint", "memory", "rl", "overopt", "evaluation", "reward_model", "lm_judge", "episodes", "policy"],
    ["data", "world", "store"],
    ["report", "seeds", "web"],
    ["stages"],
    ["pipeline", "cli", "__init__"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _unit(module: str) -> str:
    """'instructgpt.stages.ppo' -> 'stages'; 'instructgpt.train' -> 'train'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    package = list(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            out.update(n for n in names if n.startswith("instructgpt"))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("instructgpt"))
    return out


def test_every_module_has_a_layer():
    units = {p.stem if p.parent == SRC else p.relative_to(SRC).parts[0] for p in SRC.rglob("*.py")}
    assert sorted(u for u in units if u not in LAYER) == []


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        me = _unit("instructgpt." + ".".join(path.relative_to(SRC).with_suffix("").parts))
        for target in _imports(path):
            unit = _unit(target)
            if unit in LAYER and LAYER[unit] > LAYER[me]:
                upward.append(f"{path.relative_to(SRC)} ({me}) imports {target}")
    assert upward == []

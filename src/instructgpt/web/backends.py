"""Model backends for the arena: anything that streams a chat reply as text pieces."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from instructgpt.errors import UserError

# model folders looked for under the run directory, in this order


@runtime_checkable
class ChatBackend(Protocol):
    """Streams one assistant reply to ``messages`` (``[{"role": "user", "content": ...}, ...]``) from ``model_name``."""

    def stream(self, model_name: str, messages: list[dict]) -> Iterator[str]: ...


def _is_model_dir(p: Path) -> bool:
    return p.is_dir() and (p / "config.json").is_file()


def _arena_order() -> list[str]:
    """The run's model folders as the arena offers them: SFT, then the RL models (newest first), the models optimised on
    the comparisons directly, then the pretrained."""
    from instructgpt.rundir import RUN_MODELS

    by = {role: [m.folder for m in RUN_MODELS if m.role == role] for role in ("sft", "rl", "preference", "pretrained")}
    return by["sft"] + by["rl"][::-1] + by["preference"] + by["pretrained"]


def resolve_models(run_dir: str | Path, models: list[str] | None) -> dict[str, Path]:
    """Arena models: ``{name: folder}``.

    ``models`` entries may be a run-dir folder name (``sft``), a path to a Hugging Face model folder, or
    ``name=path``.  Without ``models``: every model folder of the run that is present, in the order of ``_arena_order``.
    """
    run_dir = Path(run_dir)
    out: dict[str, Path] = {}
    if not models:
        for name in _arena_order():
            if _is_model_dir(run_dir / name):
                out[name] = run_dir / name
        return out
    for spec in models:
        if not isinstance(spec, str) or not spec.strip():
            raise UserError(f"--models: empty model entry {spec!r}")
        if "=" in spec:
            name, path_s = spec.split("=", 1)
            path = Path(path_s)
        else:
            path = run_dir / spec if (run_dir / spec).exists() else Path(spec)
            name = path.name if path != run_dir / spec else spec
        if not name:
            raise UserError(f"--models: {spec!r} has no model name")
        if not _is_model_dir(path):
            raise UserError(f"--models: {spec}: {path} is not a model folder (no config.json)")
        if name in out:
            raise UserError(f"--models: model name {name!r} given twice")
        out[name] = path
    return out


class SamplingBackend:
    """The real backend: models loaded lazily with ``instructgpt.sampling.load_model`` and streamed with
    ``instructgpt.sampling.stream_chat``.  One generation at a time per model (a lock per model)."""

    def __init__(
        self,
        model_dirs: dict[str, str | Path],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.95,
        device: str | None = None,
    ):
        self.model_dirs = {k: Path(v) for k, v in model_dirs.items()}
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.device = device
        self._loaded: dict[str, tuple] = {}
        self._locks = {k: threading.Lock() for k in self.model_dirs}
        self._load_lock = threading.Lock()

    def _get(self, name: str):
        with self._load_lock:
            if name not in self._loaded:
                from instructgpt.sampling import load_model

                self._loaded[name] = load_model(str(self.model_dirs[name]), device=self.device)
            return self._loaded[name]

    def stream(self, model_name: str, messages: list[dict]) -> Iterator[str]:
        if model_name not in self.model_dirs:
            raise UserError(f"unknown model {model_name!r}")
        from instructgpt.sampling import stream_chat

        model, tok = self._get(model_name)
        with self._locks[model_name]:
            yield from stream_chat(
                model,
                tok,
                messages,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
            )

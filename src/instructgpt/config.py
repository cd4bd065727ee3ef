"""Stage configuration: one dataclass per stage, presets, config files (TOML or YAML) and flag overrides.

Precedence, lowest first: the dataclass defaults, the preset, the config file, the command-line flags.
A config file holds either the stage's keys at top level or a table named after the stage (``[pretrain]``);
a pipeline file (``igpt run --config``) holds one table per stage plus top-level ``preset``, ``seed`` and ``run``.
Unknown keys are an error that names the key and the file.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from .errors import UserError
from .textio import read_text


@dataclasses.dataclass
class StageConfig:
    """Base of every stage config. Subclasses set ``stage`` and may set ``presets``.

    Every value is checked against its field's range and choices when a config is made (``field(ge=...)``), so that a
    stage never starts with a value it cannot use, whatever made the config: flags, a file, a preset or code."""

    stage: ClassVar[str] = ""
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_value(f.metadata, getattr(self, f.name), "--" + f.name.replace("_", "-"))


BOUNDS = (("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
          ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b))


def field(default: Any, help: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
          lt: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with a help string (shown by ``igpt <stage> --help``).

    ``ge`` / ``gt`` / ``le`` / ``lt``: the range a number must lie in; ``choices``: the values a string may take. Checked
    for every value, whether it comes from a flag, a config file, a preset or code (``check_field``)."""
    meta = {"help": help, **{k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: json.loads(json.dumps(value)), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def check_field(cls: type, key: str, value: Any, source: str) -> None:
    """One line naming the option (or the file and key) when a value lies outside its field's range or choices."""
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == key)
    _check_value(meta, value, source if source.startswith("--") else f"{source}: '{key}'")


def _check_value(meta: Any, value: Any, where: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise UserError(f"{where}: must be {_or(list(choices))}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value != value or any(name in meta and not ok(value, meta[name]) for name, _, ok in BOUNDS):  # NaN is in no range
        want = " and ".join(f"{sym} {meta[name]}" for name, sym, _ in BOUNDS if name in meta)
        raise UserError(f"{where}: must be {want}, got {value!r}")


@dataclasses.dataclass
class TrainConfig(StageConfig):
    """The fields every trainer has (pretraining, SFT, the reward model, PPO): what ``train.Loop`` and the process group
    read. A trainer's config subclasses it and redeclares a field only to change its default or its help."""

    lr: float = field(1e-4, "peak learning rate", gt=0.0)
    lr_schedule: str = field("cosine", "learning-rate decay after the warmup: cosine, linear or constant",
                             choices=("cosine", "linear", "constant"))
    min_lr_ratio: float = field(0.1, "final learning rate as a fraction of the peak (cosine or linear decay)", ge=0.0, le=1.0)
    warmup_steps: int = field(0, "linear learning-rate warmup steps", ge=0)
    grad_accum: int = field(1, "micro-batches per optimiser step", ge=1)
    grad_clip: float = field(1.0, "clip the global gradient norm to this (0 = off)", ge=0.0)
    dry_run: bool = field(False, "print the memory this stage needs per process (weights, gradients, optimiser state, "
                                 "activations), estimated from the model configs before loading any weights, and stop")
    gradient_checkpointing: bool = field(False, "recompute each layer's activations in the backward pass instead of keeping them "
                                                "(activation memory for about a third more compute)")
    sharding: str = field("auto", "under torchrun: ddp (replicate the models), fsdp (shard weights, gradients and optimiser state "
                                  "over the processes: FSDP2) or auto (fsdp when replicas would fill over half a process's memory)",
                          choices=("auto", "ddp", "fsdp"))
    lora_r: int = field(0, "LoRA rank: train low-rank adapters on the frozen model instead of every weight (0 = full fine-tuning)", ge=0)
    lora_alpha: float = field(16.0, "LoRA scaling numerator: the adapters' update is scaled by alpha / r", gt=0.0)
    lora_dropout: float = field(0.05, "dropout on the adapters' input (off where the stage keeps dropout off: PPO, DPO)", ge=0.0, lt=1.0)
    lora_targets: list[str] = field([], "modules to adapt, by name (default: every linear projection in the decoder layers, "
                                        "attention and MLP, whatever the architecture calls them)")
    save_adapter: bool = field(False, "with --lora-r, also write the adapter folder peft loads (<out>/adapter/) beside the merged model")
    load_in_4bit: bool = field(False, "QLoRA: load the frozen base in 4 bits (NF4, bitsandbytes; CUDA only) under the LoRA adapters")
    checkpoint_every: int = field(20, "checkpoint every N steps (and at the end)", ge=0)
    stop_after: int = field(0, "stop after this step as if interrupted, keeping the checkpoint (0 = run to the end)", ge=0)
    resume: bool = field(False, "continue an interrupted run from its last checkpoint")
    overwrite: bool = field(False, "replace an existing output folder")
    precision: str = field("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16 or fp16",
                           choices=("auto", "fp32", "bf16", "fp16"))
    device: str = field("auto", "auto, cpu, cuda or cuda:N")
    tensorboard: bool = field(True, "write TensorBoard logs (when tensorboard is installed)")
    wandb_project: str = field("", "log to this Weights & Biases project (needs wandb)")
    progress: bool = field(True, "show a progress bar")


PRESET_NAMES = ("tiny", "default", "gpu")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) for ``X | None`` and ``Optional[X]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def coerce(cls: type, key: str, value: Any, source: str) -> Any:
    """Check and convert one value to the field's type; errors name the key and where it came from."""
    tp, optional = _base_type(field_types(cls)[key])
    if value is None:
        if optional:
            return None
        raise UserError(f"{source if source.startswith('--') else source + ': ' + repr(key)} may not be empty")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                return value.lower() in ("true", "yes", "1", "on")
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp) or (str,)
            if isinstance(value, str):
                value = [v for v in (s.strip() for s in value.split(",")) if v]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [item(v) for v in value]
        if typing.get_origin(tp) is dict or tp is dict:
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        name = getattr(tp, "__name__", str(tp))
        where = source if source.startswith("--") else f"{source}: '{key}'"
        raise UserError(f"{where} must be {name}, got {value!r}") from None
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML or YAML config file into a dict (one-line errors on missing or malformed files)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    text = read_text(p, "config file")
    try:
        if p.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise UserError(f"{p}: config files must end in .toml, .yaml, .yml or .json")
    except UserError:
        raise
    except Exception as e:  # parse errors from tomllib / yaml
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{p}: cannot parse config: {msg}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: a config file must hold a table of keys")
    return data


def stage_section(data: dict[str, Any], stage: str, known: set[str], source: str) -> dict[str, Any]:
    """The part of a config file meant for ``stage``: its table, or top-level keys when there is no table."""
    if stage in data and isinstance(data[stage], dict):
        section = dict(data[stage])
        source = f"{source} [{stage}]"
    else:
        section = {k: v for k, v in data.items() if not isinstance(v, dict) or k in known}
    return section


def build_config(
    cls: type,
    preset: str | None = None,
    file_values: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    file_source: str = "config",
) -> Any:
    """Resolve a stage config: defaults < preset < file values < overrides."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if preset:
        if preset not in PRESET_NAMES and preset not in cls.presets:
            raise UserError(f"--preset: unknown preset '{preset}' (choose from {', '.join(PRESET_NAMES)})")
        values.update(cls.presets.get(preset, {}))
    for source, given in ((file_source, file_values or {}), (None, overrides or {})):
        for key, value in given.items():
            k = key.replace("-", "_")
            if k not in names:
                hint = f" (did you mean '{_closest(k, names)}'?)" if _closest(k, names) else ""
                raise UserError(f"{source or 'option'}: unknown key '{key}' for stage '{cls.stage}'{hint}")
            values[k] = coerce(cls, k, value, source or "--" + k.replace("_", "-"))
            check_field(cls, k, values[k], source or "--" + k.replace("_", "-"))
    return cls(**values)


def _closest(key: str, names: set[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(key, sorted(names), n=1)
    return m[0] if m else None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, folder: str | Path, name: str = "igpt_config.yaml") -> Path:
    """Write the resolved config beside a stage's output (YAML, loadable again with ``--config``)."""
    import yaml

    path = Path(folder) / name
    body = {cfg.stage: config_to_dict(cfg)} if getattr(cfg, "stage", "") else config_to_dict(cfg)
    path.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path

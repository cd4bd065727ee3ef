"""The ``igpt`` command: a thin layer that turns flags and config files into a stage config and calls ``run(config)``.

Each subcommand's flags are generated from its config dataclass, so ``igpt <command> --help`` always lists every
option with its default, and the same options work from a TOML/YAML file (``--config``) and from Python.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import typing
from typing import Any

from .config import PRESET_NAMES, _base_type, build_config, field_types, read_config_file, stage_section
from .errors import UserError

# command -> (module, config class, one-line description). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("instructgpt.pipeline", "RunConfig", "run the whole recipe on the built-in world (or your data) and write the report"),
    "world": ("instructgpt.stages.world", "WorldConfig", "generate the built-in world: corpus, tasks, demonstrations, eval sets"),
    "judge": ("instructgpt.stages.world", "JudgeConfig", "score responses with the built-in world's gold judge"),
    "tokenizer": ("instructgpt.stages.tokenizer", "TokenizerConfig", "train a byte-level BPE tokenizer with the chat template"),
    "pretrain": ("instructgpt.stages.pretrain", "PretrainConfig", "step 1: pretrain (or continue pretraining) a causal LM"),
    "generate": ("instructgpt.stages.generate", "GenerateConfig", "sample from a model (text or chat prompts, batched, KV cache)"),
    "sft": ("instructgpt.stages.sft", "SFTConfig", "step 2: supervised fine-tuning on demonstrations"),
    "chat": ("instructgpt.stages.chat", "ChatConfig", "chat with a model in the terminal"),
    "label": ("instructgpt.stages.label", "LabelConfig", "step 3a: sample K responses per prompt and collect rankings"),
    "rm": ("instructgpt.stages.reward", "RewardConfig", "step 3b: train the reward model on K-way rankings or pairwise files"),
    "dpo": ("instructgpt.stages.dpo", "DPOConfig", "beyond the paper: DPO / IPO from the SFT model on the reward model's comparisons"),
    "ppo": ("instructgpt.stages.ppo", "PPOConfig", "step 4: PPO / PPO-ptx against the reward model with a KL penalty"),
    "eval": ("instructgpt.stages.evaluate", "EvalConfig", "evaluate every model of a run like the paper and write the report"),
    "serve": ("instructgpt.stages.serve", "ServeConfig", "web interface: label rankings in the browser, model arena"),
}


def _load(command: str) -> tuple[Any, type]:
    module_name, cls_name, _ = COMMANDS[command]
    module = importlib.import_module(module_name)
    return module, getattr(module, cls_name)


def _flag(name: str) -> str:
    return "--" + name.rstrip("_").replace("_", "-")  # a field named in_ is the flag --in


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        raise UserError(f"{message} (see {self.prog} --help)")


def build_parser(command: str, cls: type) -> argparse.ArgumentParser:
    """An argparse parser for one command, generated from its config dataclass."""
    p = _Parser(
        prog=f"igpt {command}",
        description=COMMANDS[command][2] + (f"\n\n{cls.__doc__.strip()}" if cls.__doc__ else ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", help="TOML or YAML file with option values (flags override it)")
    if "preset" not in {f.name for f in dataclasses.fields(cls)}:
        p.add_argument("--preset", help=f"preset sizes: {', '.join(PRESET_NAMES)} (default: none)")
    types_ = field_types(cls)
    # the stage's own options first, in the order it declares them; the shared ones (TrainConfig) after
    own = {name: i for i, name in enumerate(cls.__dict__.get("__annotations__", {}))}
    for f in sorted(dataclasses.fields(cls), key=lambda f: (f.name not in own, own.get(f.name, 0))):
        tp, _ = _base_type(types_[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f.metadata.get("help", "")
        shown = "''" if default == "" else default
        presets = {k: v[f.name] for k, v in cls.presets.items() if f.name in v}
        extra = f"; presets: {', '.join(f'{k}={v}' for k, v in presets.items())}" if presets else ""
        # a help text that names its own default (a path in the run, say) does not get the field's empty one as well
        help_ = f"{help_} (default: {shown}{extra})" if "(default:" not in help_ else (f"{help_[:-1]}{extra})" if extra else help_)
        if tp is bool:
            p.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, help=help_)
        elif typing.get_origin(tp) is list:
            p.add_argument(_flag(f.name), dest=f.name, metavar="A,B,...", help=help_)
        else:
            p.add_argument(_flag(f.name), dest=f.name, metavar=getattr(tp, "__name__", "VALUE").upper(), help=help_)
    return p


def config_from_args(command: str, cls: type, argv: list[str]) -> Any:
    parser = build_parser(command, cls)
    ns = vars(parser.parse_args(argv))
    config_file = ns.pop("config", None)
    names = {f.name for f in dataclasses.fields(cls)}
    preset = None if "preset" in names else ns.pop("preset", None)
    file_values: dict[str, Any] = {}
    if config_file:
        data = read_config_file(config_file)
        if "stage_options" in names:  # a pipeline file: top-level options plus one table per stage
            file_values = {k: v for k, v in data.items() if not isinstance(v, dict)}
            file_values["stage_options"] = {k: v for k, v in data.items() if isinstance(v, dict)}
        else:
            file_values = stage_section(data, cls.stage or command, names, str(config_file))
        if isinstance(file_values.get("preset"), str) and "preset" not in names:
            file_preset = file_values.pop("preset")
            preset = preset or file_preset
    return build_config(cls, preset=preset, file_values=file_values, overrides=ns, file_source=str(config_file))


def _usage() -> str:
    lines = ["usage: igpt <command> [options]   (igpt <command> --help lists every option with its default)", "", "commands:"]
    lines += [f"  {name:<10} {desc}" for name, (_, _, desc) in COMMANDS.items()]
    lines += ["", "Start with:  igpt run --preset tiny   (seconds)   or   igpt run   (the default preset, 6-16 minutes a seed on a 2-core CPU)"]
    return "\n".join(lines)


def _quiet_libraries() -> None:
    """Our own progress bars and messages are enough; silence the libraries' per-load bars and advisory warnings."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"igpt {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"igpt: error: unknown command '{command}' (see igpt --help)", file=sys.stderr)
        return 2
    _quiet_libraries()
    try:
        module, cls = _load(command)
        config = config_from_args(command, cls, rest)
        result = getattr(module, "run_" + command, module.run)(config)
        if result is not None and command not in ("chat", "serve", "judge", "generate"):
            print(result)
        return 0
    except UserError as e:
        print(f"igpt {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"igpt {command}: interrupted; finished stages and the last checkpoint are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

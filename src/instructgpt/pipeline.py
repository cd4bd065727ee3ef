"""`igpt run`: the whole recipe in one command.

On the built-in world: world -> tokenizer -> pretrain -> SFT -> label (rankings) -> reward model -> DPO -> PPO and
PPO-ptx -> evaluation and report.
On your own model and data (``--model`` with ``--preferences`` and ``--prompts``): SFT (when ``--sft-data`` is given;
otherwise the model is the SFT model) -> reward model and, unless ``--judge`` names one, a judge reward model on a share
of the preferences the reward model never sees -> DPO -> PPO and PPO-ptx (when ``--ptx-corpus`` is given) -> evaluation
on held-out prompts, judged by the judge, with the training reward model's score beside it (the proxy).
Each stage writes its folder in the run directory only when complete, so a stage whose folder exists is skipped and an
interrupted run continues where it stopped (stages resume from their last checkpoint). Options for any stage come from
the config file's table of that stage (``[sft]``, ``[ppo]``...), on top of the preset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from .config import StageConfig, build_config, field
from .errors import UserError
from .rundir import HOST_FILE, completion, LOCK_FILE, LOGS_FOLDER, RUN_FILE, STAGES, TIMINGS_FILE, file_lock, in_run, is_complete, partial_path, read_host, read_timings
from .seeds import parse_seeds


@dataclasses.dataclass
class RunConfig(StageConfig):
    """Runs every stage in order on the built-in world, or with --model on your model and data (docs/own-model.md); a
    config file may hold one table of options per stage."""

    stage: ClassVar[str] = "run"

    preset: str = field("", "tiny (under a minute), default (18 minutes a seed on a 2-core CPU at 170 GFLOP/s, 14 with --skip dpo) or gpu (default: default "
                            "on the built-in world; gpu with --model, whose learning rates and batches are for real models)")
    run: str = field("", "run directory (default: runs/<preset>)")
    seed: int = field(0, "seed for the world and every stage", ge=0)
    seeds: str = field("", "run the whole recipe once per seed, into <run>/seed-N/, and report over the seeds in <run>/eval/: "
                           "a count (3: seeds 0, 1, 2), a list (0,1,2) or a range (10-14); seeds 0-4 are the tuning seeds, 10-14 the "
                           "reporting seeds (docs/eval.md)")
    stop_after: str = field("", "stop after this stage (world, tokenizer, pretrain, sft, comparisons, rm, dpo, ppo, ppo-ptx, eval)")
    skip: list[str] = field([], "leave out these training stages, which no other stage needs: dpo, ppo, ppo-ptx (--skip dpo: the "
                                "paper's recipe alone; the evaluation compares the models the run has)")
    device: str = field("auto", "auto, cpu, cuda or cuda:N (for every training stage)")
    side_by_side: str = field("auto", "train PPO and PPO-ptx at the same time, each with half the threads, logs in <run>/logs/: "
                                      "on, off, or auto (on a CPU with 2+ threads, except for the tiny preset, whose RL stages "
                                      "take less time than starting two processes)", choices=("auto", "on", "off"))
    stage_options: dict = field({}, "per-stage options: in a config file, one table per stage ([pretrain], [sft], ...)")
    # your own model and data instead of the built-in world
    model: str = field("", "your own model, a causal LM folder or hub id: run the recipe on your data instead of the built-in world "
                           "(with --preferences and --prompts)")
    sft_data: str = field("", "with --model: demonstrations for SFT, any data source igpt reads (without them, --model is the SFT model)")
    preferences: list[str] = field([], "with --model: comparisons for the reward model, its judge and DPO (any data source igpt "
                                       "reads: ranked, pairwise, HH, UltraFeedback, or a comparisons.sqlite)")
    prompts: str = field("", "with --model: PPO's prompts, any data source igpt reads (demonstrations and comparisons give their prompts)")
    ptx_corpus: str = field("", "with --model: pretraining text for PPO-ptx and SFT's pretraining mix (without it, no PPO-ptx)")
    eval_prompts: str = field("", "with --model: held-out prompts for the evaluation (default: the --heldout-share of --prompts, "
                                  "which PPO never trains on)")
    heldout_share: float = field(0.1, "with --model and no --eval-prompts: the share of --prompts kept out of PPO for the evaluation",
                                 gt=0.0, lt=1.0)
    judge: str = field("", "with --model: the evaluation's judge, a folder or hub id of a reward model, or of a causal LM that compares "
                           "each answer with SFT's (default: a reward model trained on the --judge-share of --preferences, whose "
                           "prompts the training reward model never sees)")
    judge_share: float = field(0.2, "with --model and no --judge: the share of --preferences' prompts set aside for the judge",
                               gt=0.0, lt=1.0)


OWN_DATA = ("sft_data", "preferences", "prompts", "ptx_corpus", "eval_prompts", "judge")  # the inputs that need --model
# the built-in world's stages, which a run on your own model and data does without (the judge is the world's referee)
WORLD_ONLY = ("world", "tokenizer", "pretrain", "comparisons")
SKIPPABLE = ("dpo", "ppo", "ppo-ptx")  # the stages no later stage reads


def runs_stage(name: str, cfg: RunConfig) -> bool:
    """Whether ``igpt run`` with ``cfg`` has stage ``name``."""
    if name in cfg.skip:
        return False
    if not cfg.model:
        return name != "judge"
    if name in WORLD_ONLY:
        return False
    return {"sft": bool(cfg.sft_data), "judge": not cfg.judge, "ppo-ptx": bool(cfg.ptx_corpus)}.get(name, True)


def own_data_wiring(name: str, cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """The options that connect a stage of a run on your own model and data to the inputs and to the stages before it."""
    sft = str(in_run(run_dir, "sft")) if cfg.sft_data else cfg.model
    share = 0.0 if cfg.judge else cfg.judge_share  # the training reward model and DPO never read the judge's share
    heldout = 0.0 if cfg.eval_prompts else cfg.heldout_share
    if name == "sft":
        return {"model": cfg.model, "data": cfg.sft_data, "ptx_corpus": cfg.ptx_corpus, **({} if cfg.ptx_corpus else {"ptx_fraction": 0.0})}
    if name in ("rm", "dpo"):
        return {"model": sft, "data": list(cfg.preferences), "judge_share": share}
    if name == "judge":
        return {"model": sft, "data": list(cfg.preferences), "judge_share": cfg.judge_share, "as_judge": True,
                "out": str(in_run(run_dir, "judge"))}
    if name in ("ppo", "ppo-ptx"):
        return {"policy": sft, "prompts": cfg.prompts, "heldout_share": heldout,
                **({"ptx_corpus": cfg.ptx_corpus} if name == "ppo-ptx" else {})}
    if name == "eval":
        return {"prompts": cfg.eval_prompts or cfg.prompts, "heldout_share": heldout,
                "judge": cfg.judge or str(in_run(run_dir, "judge")), "models": [] if cfg.sft_data else [f"sft={cfg.model}"]}
    return {}




def stage_config(name: str, cls: type, cfg: RunConfig, run_dir: Path) -> Any:
    """The config of one stage in a pipeline: preset, then the file's table for it, then the pipeline's wiring."""
    stage_table = next(s.table for s in STAGES if s.folder == name)
    table = cfg.stage_options.get(stage_table) or cfg.stage_options.get(name) or {}
    if name == "ppo-ptx":  # PPO-ptx takes the [ppo] options too, then its own table
        table = {**(cfg.stage_options.get("ppo") or {}), **table}
    elif name == "judge":  # the judge trains as the reward model does, then its own table
        table = {**(cfg.stage_options.get("rm") or {}), **table}
    sub = build_config(cls, preset=cfg.preset, file_values=table, file_source=f"config [{stage_table}]")
    names = {f.name for f in dataclasses.fields(cls)}
    wiring: dict[str, Any] = {"run": str(run_dir), "seed": cfg.seed, "resume": True, "device": cfg.device}
    if cfg.model:
        wiring.update(own_data_wiring(name, cfg, run_dir))
    if name == "ppo":
        wiring.update(out=str(in_run(run_dir, "ppo")), ptx_coef=0.0)
    elif name == "ppo-ptx":
        wiring["out"] = str(in_run(run_dir, "ppo_ptx"))
        if getattr(sub, "ptx_coef", 0) <= 0:
            raise UserError("config [ppo_ptx]: ptx_coef must be > 0 for the PPO-ptx stage")
    elif "out" in names and "out" not in wiring:
        wiring["out"] = str(run_dir / name)
    return dataclasses.replace(sub, **{k: v for k, v in wiring.items() if k in names and k not in table})


def _summary(folder: Path) -> str:
    parts = []
    for k, v in completion(folder).items():
        if k == "completed_at" or isinstance(v, (dict, list)) or v is None:
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return ", ".join(parts[:5])


def _fmt_time(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.1f}s"


def record_host(run_dir: Path, device: str = "auto") -> dict:
    """Measure this machine's matmul speed now (about a second) and append it to ``<run>/host.json``.

    Stage timings are only comparable with the speed they were measured at; the evaluation copies the list into
    results.json (``host``)."""
    import platform

    import torch

    from .models import resolve_device
    from .train import matmul_peak

    dev = resolve_device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    entry = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": dev.type, "dtype": str(dtype).replace("torch.", ""),
             "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
             "matmul_gflops": round(matmul_peak(dev, dtype, n=1024, seconds=1.0) / 1e9, 1)}
    (run_dir / HOST_FILE).write_text(json.dumps(read_host(run_dir) + [entry], indent=1))
    return entry


def _interrupt_when_orphaned() -> None:
    """On Linux, have the kernel send this process SIGINT when the ``igpt run`` that started it dies (even by SIGKILL), so
    the stage stops as on Ctrl-C, keeping its checkpoint, instead of training on beside a later run."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call
        raise KeyboardInterrupt


def _stage_child(module: str, sub: Any, threads: int, log: str, error_file: str) -> None:
    """One stage in a child process (``igpt run --side-by-side``): its own thread count, its output in ``log``."""
    import traceback

    import torch

    _interrupt_when_orphaned()
    torch.set_num_threads(threads)
    with open(log, "w", encoding="utf-8", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            importlib.import_module(module).run(sub)
        except UserError as e:
            Path(error_file).write_text(str(e), encoding="utf-8")
            raise SystemExit(2) from None
        except BaseException as e:
            traceback.print_exc()
            Path(error_file).write_text(f"{type(e).__name__}: {e} (traceback in {log})", encoding="utf-8")
            raise SystemExit(1) from None


def _progress_line(names: list[str], run_dir: Path, steps: dict[str, int]) -> str:
    """``ppo 8/16 · ppo-ptx 7/16``: the last step each running stage logged in its partial folder's metrics.jsonl."""
    parts = []
    for name in names:
        step, lines = 0, []
        folder = partial_path(run_dir / name)
        folder = folder if folder.is_dir() else run_dir / name  # finished, the process still exiting
        try:
            with open(folder / "metrics.jsonl", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            pass
        for line in reversed(lines):  # the last complete line (the stage may be writing one)
            try:
                step = int(json.loads(line)["step"])
                break
            except (ValueError, KeyError, TypeError):
                continue
        parts.append(f"{name} {step}/{steps.get(name, '?')}")
    return " · ".join(parts)


def _side_by_side(group: list[tuple[str, Any, Any]], run_dir: Path, timings: dict, timings_path: Path) -> None:
    """Run the stages of ``group`` at once, in child processes that split this process's threads."""
    import multiprocessing as mp

    import torch

    threads = max(1, torch.get_num_threads() // len(group))
    logs = run_dir / LOGS_FOLDER
    logs.mkdir(exist_ok=True)
    ctx = mp.get_context("spawn")
    procs, t_group = {}, time.time()  # the group's clock starts before the first child's
    for name, mod, sub in group:
        print(f"  > {name:<12} running{_resuming(run_dir / name)} side by side, {threads} thread{'s' * (threads > 1)}, log {logs / (name + '.log')}", file=sys.stderr)
        err = logs / f"{name}.error"
        err.unlink(missing_ok=True)
        # the child's progress bar goes to its log, a line every 30 seconds (train.progress, not a terminal)
        p = ctx.Process(target=_stage_child, args=(mod.__name__, sub, threads, str(logs / f"{name}.log"), str(err)),
                        name=f"igpt-{name}")
        p.start()
        procs[name] = (p, time.time(), err)
    failures: list[str] = []
    total_steps = {name: int(getattr(sub, "steps", 0)) for name, _, sub in group}
    live = sys.stderr.isatty()  # a status line that rewrites itself, on a terminal only
    try:
        while procs:
            if live:
                print(f"\r    {_progress_line(list(procs), run_dir, total_steps)}\033[K", end="", file=sys.stderr, flush=True)
            for name in list(procs):
                p, t0, err = procs[name]
                p.join(timeout=0.2)
                if p.exitcode is None:
                    continue
                del procs[name]
                if live:
                    print("\r\033[K", end="", file=sys.stderr)
                if p.exitcode == 0:
                    _stage_done(run_dir, name, time.time() - t0, timings, timings_path)
                else:
                    msg = err.read_text(encoding="utf-8") if err.is_file() else f"exit code {p.exitcode}; see {logs / (name + '.log')}"
                    print(f"  ✗ {name:<12} failed: {msg}", file=sys.stderr)
                    failures.append(f"{name}: {msg}")
    except KeyboardInterrupt:  # the children got the same signal and keep their checkpoints
        for p, _, _ in procs.values():
            p.join(timeout=30)
            if p.exitcode is None:
                p.terminate()
        raise
    if failures:
        raise UserError("; ".join(failures))
    timings["+".join(name for name, _, _ in group)] = round(time.time() - t_group, 1)  # the group's wall time
    timings_path.write_text(json.dumps(timings, indent=1))


def _resuming(folder: Path) -> str:
    return " (resuming)" if partial_path(folder).exists() else ""


def _stage_done(run_dir: Path, name: str, seconds: float, timings: dict, timings_path: Path) -> None:
    """Record a finished stage's wall time in ``timings.json`` and print its summary line."""
    if name != "world" and not is_complete(run_dir / name):  # stopped early by its own stop_after: _run says so
        return
    timings[name] = round(seconds, 1)
    timings_path.write_text(json.dumps(timings, indent=1))
    print(f"  ✓ {name:<12} {_fmt_time(timings[name]):>8}   {_summary(run_dir / name)}", file=sys.stderr)


def run(cfg: RunConfig) -> Path:
    cfg = dataclasses.replace(cfg, preset=cfg.preset or ("gpu" if cfg.model else "default"))
    for name in cfg.skip:
        if name not in SKIPPABLE:
            raise UserError(f"--skip: '{name}' cannot be left out (only {', '.join(SKIPPABLE)}, which no other stage needs)")
    if cfg.stop_after and cfg.stop_after not in [s.folder for s in STAGES if runs_stage(s.folder, cfg)]:
        names = ", ".join(s.folder for s in STAGES if runs_stage(s.folder, cfg))
        raise UserError(f"--stop-after: '{cfg.stop_after}' is not a stage of this run ({names})")
    inputs = check_own_data(cfg)
    tables = {s.table for s in STAGES} | {s.folder for s in STAGES}
    for key in cfg.stage_options:
        if key not in tables:
            import difflib

            close = difflib.get_close_matches(key, sorted(tables), n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else f" (stage tables: {', '.join(sorted(tables))})"
            raise UserError(f"config: unknown stage table [{key}]{hint}")
    seeds = parse_seeds(cfg.seeds) if cfg.seeds else None
    run_dir = Path(cfg.run or f"runs/{cfg.preset}")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run: {run_dir} is a file, not a folder")
    configs = _stage_configs(cfg, run_dir)  # a bad option or preset is refused before the folder is made
    old = json.loads((run_dir / RUN_FILE).read_text()) if (run_dir / RUN_FILE).is_file() else None
    if old is not None and old.get("inputs") != _identity(inputs).get("inputs"):  # before reading the data again
        raise UserError(f"{run_dir} was started with preset {old.get('preset')}{_other_inputs(old, _identity(inputs))}; use another --run folder")
    if cfg.model:
        inputs.update(read_own_data(cfg))  # a malformed record is refused before any training
    run_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(run_dir):
        return _run(cfg, run_dir, configs, inputs) if seeds is None else _run_seeds(cfg, run_dir, seeds, inputs)


def check_own_data(cfg: RunConfig) -> dict[str, Any]:
    """The options of a run on your own model and data, checked before anything runs: what is missing, misplaced or
    not found is a one-line error naming the option. Returns what identifies the inputs (kept in run.json, so a run
    folder is never continued on other data)."""
    from .data.sources import resolve
    from .models import check_model_ref

    given = [name for name in OWN_DATA if getattr(cfg, name)]
    if not cfg.model:
        if given:
            raise UserError(f"--{given[0].replace('_', '-')}: needs --model (your own model); the built-in world brings its own data")
        return {}
    check_model_ref(cfg.model, "--model")
    if not cfg.preferences:
        raise UserError("--preferences: give the comparisons to train the reward model on (a JSONL / JSON / parquet file, a folder, "
                        "a saved dataset or a dataset id such as Anthropic/hh-rlhf)")
    if not cfg.prompts:
        raise UserError("--prompts: give PPO's prompts (any data source; a file of demonstrations or comparisons gives their prompts)")
    # (the data itself is read, and a missing source refused, by read_own_data; the corpus is read by the stages only)
    if cfg.ptx_corpus and not Path(cfg.ptx_corpus).is_file():  # a corpus may also be a .txt file
        _named("--ptx-corpus", lambda: resolve(cfg.ptx_corpus, "pretraining corpus"))
    if cfg.judge:
        check_model_ref(cfg.judge, "--judge: the judge")
    return {"model": cfg.model, **{name: getattr(cfg, name) for name in OWN_DATA if getattr(cfg, name)},
            **({} if cfg.judge else {"judge_share": cfg.judge_share}), **({} if cfg.eval_prompts else {"heldout_share": cfg.heldout_share})}


def _named(option: str, call: Any) -> Any:
    """``call()``, with a one-line error prefixed by the option whose input it reads."""
    try:
        return call()
    except UserError as e:
        raise UserError(f"{option}: {e}") from None


def read_own_data(cfg: RunConfig) -> dict[str, Any]:
    """Read every input once before training (a malformed record is a one-line error naming the option, the file and
    the line), print what each stage will get, and say in one line when the model's tokenizer lacks a chat template or a
    pad token. Returns the counts (kept in run.json)."""
    from .data.chat import heldout_prompts, read_demonstrations, read_prompts
    from .data.preferences import SkipReport, read_sources
    from .stages.reward import judge_part

    counts: dict[str, Any] = {}
    if cfg.sft_data:
        counts["demonstrations"] = len(_named("--sft-data", lambda: read_demonstrations(cfg.sft_data)))
    skips = SkipReport()
    comps = _named("--preferences", lambda: read_sources(list(cfg.preferences), "skip", skips))
    share = 0.0 if cfg.judge else cfg.judge_share
    rm_part = judge_part(comps, share, as_judge=False)
    counts["comparisons"] = len(rm_part)
    if not rm_part:
        raise UserError(f"--preferences: no usable comparisons for the reward model ({skips.summary()})")
    if not cfg.judge:
        counts["judge_comparisons"] = len(judge_part(comps, share, as_judge=True))
        if not counts["judge_comparisons"]:
            raise UserError(f"--judge-share: no comparison of --preferences falls in the judge's share {share:g}; raise it or give --judge")
    prompts = _named("--prompts", lambda: read_prompts(cfg.prompts))
    heldout = 0.0 if cfg.eval_prompts else cfg.heldout_share
    counts["ppo_prompts"] = len(heldout_prompts(prompts, heldout, heldout=False)) if heldout else len(prompts)
    if not counts["ppo_prompts"]:
        raise UserError(f"--heldout-share: every prompt of --prompts is held out for the evaluation at {heldout:g}")
    evals = _named("--eval-prompts", lambda: read_prompts(cfg.eval_prompts)) if cfg.eval_prompts else heldout_prompts(prompts, heldout, heldout=True)
    counts["eval_prompts"] = len(evals)
    if not evals:
        raise UserError(f"--heldout-share: no prompt of --prompts falls in the held-out share {heldout:g}; raise it or give --eval-prompts")
    judge = cfg.judge or f"a reward model on {counts['judge_comparisons']} comparisons set aside ({cfg.judge_share:g} of the prompts)"
    print(f"igpt run: your data: {counts.get('demonstrations', 'no')} demonstrations, {counts['comparisons']} comparisons for the "
          f"reward model ({skips.total} skipped), {counts['ppo_prompts']} PPO prompts, {counts['eval_prompts']} evaluation prompts; "
          f"judge: {judge}", file=sys.stderr)
    _say_tokenizer(cfg.model)
    return {"counts": counts}


def _say_tokenizer(model: str) -> None:
    """One line when the model's tokenizer lacks a chat template or a pad token (ours are then added, as every stage
    does: tokenizer.ensure_pad_and_template)."""
    from transformers import AutoTokenizer

    from .tokenizer import CHAT_TEMPLATE_SHOWN

    try:
        tok = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise UserError(f"--model: cannot load the tokenizer of {model}: {str(e).splitlines()[0]}") from None
    missing = []
    if not getattr(tok, "chat_template", None):
        missing.append(f"no chat template, so igpt's is used ({CHAT_TEMPLATE_SHOWN}, its markers added as special tokens)")
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        missing.append("no pad token apart from EOS, so <|pad|> is added")
    if missing:
        print(f"igpt run: the tokenizer of {model} has {'; and '.join(missing)}", file=sys.stderr)


def _run_seeds(cfg: RunConfig, run_dir: Path, seeds: list[int], inputs: dict) -> Path:
    """The recipe once per seed, one after the other, each in its own ``seed-N/`` run folder (resumable like any run),
    then the evaluation over seeds in ``<run>/eval/``."""
    from .seeds import seed_folder, wall_time, write_aggregate

    meta_path = run_dir / RUN_FILE
    meta = {"preset": cfg.preset, "seeds": seeds, **_identity(inputs)}
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != meta:
            what = f"seeds {old['seeds']}" if "seeds" in old else f"seed {old.get('seed')} alone"
            raise UserError(f"{run_dir} was started with preset {old.get('preset')} and {what}{_other_inputs(old, meta)}; use another --run folder")
    t0 = time.time()
    for i, seed in enumerate(seeds):
        folder = seed_folder(run_dir, seed)
        print(f"igpt run: seed {seed} ({i + 1} of {len(seeds)}) in {folder}", file=sys.stderr)
        folder.mkdir(exist_ok=True)
        with _exclusive(folder):
            sub = dataclasses.replace(cfg, seed=seed, seeds="", run=str(folder))
            _run(sub, folder, _stage_configs(sub, folder), inputs)
        if not meta_path.is_file():  # written once the first seed's options have been checked
            meta_path.write_text(json.dumps(meta))
    if cfg.stop_after and cfg.stop_after != "eval":
        return run_dir
    out = write_aggregate([seed_folder(run_dir, s) for s in seeds], in_run(run_dir, "eval"))
    per_seed = ", ".join(f"seed {s} {_fmt_time(wall_time(read_timings(seed_folder(run_dir, s))))}" for s in seeds)
    print(f"igpt run: {len(seeds)} seeds done in {_fmt_time(time.time() - t0)} (this invocation; stage times {per_seed}); "
          f"report: {out / 'report.html'}", file=sys.stderr)
    return run_dir


def _exclusive(run_dir: Path):
    """Hold ``<run>/.igpt-run.lock`` while the pipeline works there, so a second ``igpt run`` on the same folder stops at
    once instead of training into the same partial folders (released by the OS if the process dies)."""
    return file_lock(run_dir / LOCK_FILE, lambda owner: f"{run_dir} is in use by another igpt run (pid {owner}); "
                     "wait for it to finish or use another --run folder")


def _stage_configs(cfg: RunConfig, run_dir: Path) -> list[tuple[str, Any, Any]]:
    """(name, module, config) of every stage to run: all resolved before any work, so that a bad option fails at once."""
    configs = []
    for stage in STAGES:
        if not runs_stage(stage.folder, cfg):
            continue
        name, mod = stage.folder, importlib.import_module(stage.module)
        configs.append((name, mod, stage_config(name, getattr(mod, stage.config), cfg, run_dir)))
        if name == cfg.stop_after:
            break
    return configs


def _identity(inputs: dict) -> dict:
    """What run.json keeps of a run's own inputs: the options that name them (not the counts, which a re-read gives)."""
    return {"inputs": {k: v for k, v in inputs.items() if k != "counts"}} if inputs else {}


def _other_inputs(old: dict, new: dict) -> str:
    if old.get("inputs") == new.get("inputs"):
        return ""
    a, b = old.get("inputs") or {}, new.get("inputs") or {}
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if not changed:
        return ""
    was = a.get(changed[0])
    was = ", ".join(map(str, was)) if isinstance(was, list) else (was or "none")
    return f" and other inputs (--{changed[0].replace('_', '-')} was {was})"


def _run(cfg: RunConfig, run_dir: Path, configs: list[tuple[str, Any, Any]], inputs: dict | None = None) -> Path:
    meta_path = run_dir / RUN_FILE
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    meta = {"preset": cfg.preset, "seed": cfg.seed, **_identity(inputs or {})}
    if old is not None and "seeds" in old:
        raise UserError(f"{run_dir} holds a run over seeds {old['seeds']}: pass --seeds {','.join(map(str, old['seeds']))} (or use another --run folder)")
    if old is not None and (old.get("preset") != cfg.preset or old.get("seed") != cfg.seed or old.get("inputs") != meta.get("inputs")):
        raise UserError(f"{run_dir} was started with preset {old.get('preset')} and seed {old.get('seed')}{_other_inputs(old, meta)}; "
                        "use another --run folder")
    if cfg.model:  # what igpt eval --run reads to evaluate the run again as the run did
        meta["eval"] = {k: v for k, v in own_data_wiring("eval", cfg, run_dir).items()}
    if old is None or (cfg.model and old.get("eval") != meta["eval"]):
        meta_path.write_text(json.dumps(meta))
    timings_path = run_dir / TIMINGS_FILE
    timings: dict[str, float] = read_timings(run_dir)
    host = record_host(run_dir, cfg.device)
    total0 = time.time()
    eval_ran = False
    print(f"igpt run: preset {cfg.preset}, run directory {run_dir}; {host['device']} {host['dtype']} matmul "
          f"{host['matmul_gflops']:.0f} GFLOP/s with {host['threads']} threads", file=sys.stderr)
    pending_rl = [c for c in configs if c[0] in ("ppo", "ppo-ptx") and not is_complete(run_dir / c[0])]
    # (not under torchrun: the children would join the ranks' process group)
    side_by_side = len(pending_rl) == 2 and int(os.environ.get("WORLD_SIZE", "1")) == 1 and (cfg.side_by_side == "on" or (
        cfg.side_by_side == "auto" and cfg.preset != "tiny" and host["device"] == "cpu" and host["threads"] >= 2))
    for name, mod, sub in configs:
        folder = run_dir / name
        if side_by_side and name == "ppo-ptx":
            pass  # ran beside PPO
        elif is_complete(folder) or (name == "world" and (folder / "world.json").is_file()):
            print(f"  = {name:<12} already complete, skipped   {_summary(folder)}", file=sys.stderr)
        elif side_by_side and name == "ppo":
            _side_by_side(pending_rl, run_dir, timings, timings_path)
        else:
            print(f"  > {name:<12} running{_resuming(folder)}...", file=sys.stderr)
            t0 = time.time()
            mod.run(sub)
            eval_ran = eval_ran or name == "eval"
            _stage_done(run_dir, name, time.time() - t0, timings, timings_path)
        stopped = [n for n in ([c[0] for c in pending_rl] if side_by_side and name == "ppo" else [name])
                   if n != "world" and partial_path(run_dir / n).is_dir() and not is_complete(run_dir / n)]
        if stopped:  # a stage's own stop_after: later stages would run without it
            print(f"igpt run: {', '.join(stopped)} stopped before its end (its stop_after), keeping its checkpoint; "
                  "igpt run again continues it", file=sys.stderr)
            return run_dir
        if name == cfg.stop_after:
            break
    results = in_run(run_dir, "eval", "results.json")
    if results.is_file() and not cfg.stop_after and not eval_ran:  # evaluation prints its table when it runs
        from .report.text import format_table

        print(format_table(json.loads(results.read_text())))
    print(f"igpt run: done in {_fmt_time(time.time() - total0)} (this invocation); report: {run_dir / 'eval' / 'report.html'}", file=sys.stderr)
    return run_dir

"""The run directory: one folder per stage, appearing only once the stage has completed.

A stage writes into ``<name>.partial/`` (checkpoints live there too, so an interrupted stage can resume) and renames it
to ``<name>/`` in one atomic step at the end. A folder without the ``.partial`` suffix is therefore always complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .errors import UserError


# ---------------------------------------------------------------------------------------------- the run's layout
@dataclass(frozen=True)
class Stage:
    """A stage of ``igpt run``: its folder in the run, the module and config class that run it, and the table of a
    pipeline config file that holds its options."""

    folder: str
    module: str
    config: str
    table: str


STAGES = (
    Stage("world", "instructgpt.stages.world", "WorldConfig", "world"),
    Stage("tokenizer", "instructgpt.stages.tokenizer", "TokenizerConfig", "tokenizer"),
    Stage("pretrain", "instructgpt.stages.pretrain", "PretrainConfig", "pretrain"),
    Stage("sft", "instructgpt.stages.sft", "SFTConfig", "sft"),
    Stage("comparisons", "instructgpt.stages.label", "LabelConfig", "label"),
    Stage("rm", "instructgpt.stages.reward", "RewardConfig", "rm"),
    Stage("judge", "instructgpt.stages.reward", "RewardConfig", "judge"),  # your own data: the evaluation's independent judge
    Stage("dpo", "instructgpt.stages.dpo", "DPOConfig", "dpo"),
    Stage("ppo", "instructgpt.stages.ppo", "PPOConfig", "ppo"),
    Stage("ppo-ptx", "instructgpt.stages.ppo", "PPOConfig", "ppo_ptx"),
    Stage("eval", "instructgpt.stages.evaluate", "EvalConfig", "eval"),
)


@dataclass(frozen=True)
class RunModel:
    """A model of a run: ``key`` names it in results.json, tables and figures; ``folder`` under the run; ``role``:
    pretrained, sft, preference (optimised on the comparisons without RL) or rl; ``label`` and ``color`` in the report."""

    key: str
    folder: str
    role: str
    label: str
    color: str


RUN_MODELS = (
    RunModel("pretrained", "pretrain", "pretrained", "GPT (pretrained)", "#9aa5b1"),
    RunModel("sft", "sft", "sft", "SFT", "#4c9f70"),
    RunModel("dpo", "dpo", "preference", "DPO", "#7b5ea7"),  # beyond the paper: trained on the comparisons directly
    RunModel("ppo", "ppo", "rl", "PPO", "#e08a2e"),
    RunModel("ppo_ptx", "ppo-ptx", "rl", "PPO-ptx", "#c8102e"),
)
# the pretrained model again, given a few-shot prefix (the paper's "GPT prompted"): evaluated, not a folder of its own
PROMPTED = RunModel("pretrained_prompted", "pretrain", "pretrained", "GPT prompted", "#6c7a89")
# the SFT model's best of n samples by the reward model (igpt eval --best-of-n): evaluated, not a folder of its own
BEST_OF_N = RunModel("sft_best_of_n", "sft", "sft", "SFT best-of-n", "#2e7d9a")


# files of the run that are not a stage's output
RUN_FILE = "run.json"  # the run's preset and seeds
HOST_FILE = "host.json"  # the machine's speed at each igpt run
TIMINGS_FILE = "timings.json"  # wall seconds per stage
LOGS_FOLDER = "logs"  # each stage's output
LOCK_FILE = ".igpt-run.lock"  # held by the igpt run working in the folder
CACHE_FOLDER = ".cache"  # tokenised corpora
STORE_FILE = "comparisons.sqlite"  # the comparison store, in the label stage's folder
TOKENS_FILE = "tokens.json"  # the web labellers' access tokens, beside the store
SNAPSHOTS_FOLDER = "snapshots"  # an RL stage's policy along its run: <stage>/snapshots/step-N/, model folders


def snapshots(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, model folder) of the policies an RL stage saved along its run, in step order."""
    root = Path(folder) / SNAPSHOTS_FOLDER
    found = [(int(p.name[5:]), p) for p in root.glob("step-*") if p.name[5:].isdigit() and (p / "config.json").is_file()]
    return sorted(found)


def in_run(run: str | Path, stage: str, *parts: str) -> Path:
    """``<run>/<the stage's folder>/<parts>``: the stage named as in ``STAGES`` (its table: ``label`` is the folder
    ``comparisons``, ``ppo_ptx`` the folder ``ppo-ptx``)."""
    folders = {s.table: s.folder for s in STAGES}
    if stage not in folders:
        raise KeyError(f"no stage {stage!r} in the run layout")
    return Path(run, folders[stage], *parts)


def table_models() -> list[RunModel]:
    """Every model results.json may hold for a run, in the order of the report's tables (the prompted baseline beside
    the pretrained model, best-of-n beside SFT)."""
    derived = {"pretrained": PROMPTED, "sft": BEST_OF_N}
    return [x for m in RUN_MODELS for x in ((m, derived[m.role]) if m.role in derived else (m,))]


def finished_models(run_dir: str | Path, newest_first: bool = False) -> list[tuple[RunModel, Path]]:
    """The run's models whose folders are complete, in the recipe's order (or the newest stage first)."""
    found = [(m, Path(run_dir) / m.folder) for m in RUN_MODELS if is_complete(Path(run_dir) / m.folder)]
    return found[::-1] if newest_first else found


COMPLETE_MARKER = "igpt_complete.json"


def partial_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def is_complete(out: str | Path) -> bool:
    """A stage output is complete when its folder exists with the completion marker inside."""
    return (Path(out) / COMPLETE_MARKER).is_file()


def has_checkpoint(folder: str | Path) -> bool:
    """A stage's working folder holds a resumable checkpoint (written by ``checkpoint.save_checkpoint``).

    A process killed between the two renames of a checkpoint swap leaves the previous one as ``checkpoint.old`` and no
    ``checkpoint``: it is put back in place here, so the stage resumes from it."""
    ck, old = Path(folder) / "checkpoint", Path(folder) / "checkpoint.old"
    if not (ck / "state.json").is_file() and (old / "state.json").is_file() and not ck.exists():
        os.replace(old, ck)
    return (ck / "state.json").is_file()


def read_host(run_dir: str | Path | None) -> list:
    """The machine speeds ``igpt run`` recorded in ``<run>/host.json`` (one entry per invocation; [] if none or unreadable)."""
    path = Path(run_dir) / HOST_FILE if run_dir is not None else None
    if path is None or not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except ValueError:
        return []
    return rows if isinstance(rows, list) else []


def read_timings(run_dir: str | Path | None) -> dict:
    """Wall seconds per stage that ``igpt run`` recorded in ``<run>/timings.json`` ({} if none)."""
    path = Path(run_dir) / TIMINGS_FILE if run_dir is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def finite_json(obj):
    """``obj`` made ready for JSON, which has no NaN: non-finite floats become null, the others are rounded to 6 places."""
    import math

    if isinstance(obj, float):
        return None if not math.isfinite(obj) else round(obj, 6)
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def check_output(out: str | Path, overwrite: bool, resume: bool) -> None:
    """Refuse a complete output (unless ``overwrite``) and an interrupted one (unless ``resume`` or ``overwrite``)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"output exists: {out} (pass --overwrite to replace it)")
    work = partial_path(out)
    if has_checkpoint(work) and not resume and not overwrite:
        raise UserError(f"{work} holds an interrupted run: pass --resume to continue it, or --overwrite to start over")


def begin_output(out: str | Path, overwrite: bool = False, resume: bool = True) -> Path:
    """Prepare ``<out>.partial/`` for a stage and return it.

    An existing complete output is an error unless ``overwrite``. An existing partial folder is kept when
    ``resume`` (its checkpoints let the stage continue) and cleared otherwise.
    """
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise UserError(f"output exists: {out} (pass --overwrite to replace it)")
    work = partial_path(out)
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    reset_peak_memory()
    return work


# ---------------------------------------------------------------------------------------------- memory
def _cuda() -> object | None:
    """torch.cuda when this process has already started using a GPU (nothing is imported or initialised here)."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized() else None


def reset_peak_memory() -> None:
    """Measure this process's peak memory afresh from now (each stage from its start, also when several run in one
    process): the resident set's high-water mark on Linux, the allocator's peak on CUDA."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the peak then counts from the process's start
        pass
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, float]:
    """``peak_rss_mb``: the resident set's peak since ``reset_peak_memory`` (the process's, where it cannot be reset);
    ``peak_cuda_mb``: the CUDA allocator's peak on this process's GPU, when it uses one."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            out["peak_rss_mb"] = next(round(int(ln.split()[1]) / 1024, 1) for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        out["peak_rss_mb"] = round(rss / (2**20 if sys.platform == "darwin" else 1024), 1)
    cuda = _cuda()
    if cuda is not None:
        out["peak_cuda_mb"] = round(cuda.max_memory_allocated() / 2**20, 1)
    return out


@contextlib.contextmanager
def file_lock(path: str | Path, busy: Callable[[str], str] | None = None, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if needed) with this process's id written in it.

    ``busy``: when given, a lock another process holds is refused at once with ``UserError(busy(owner_pid))``;
    otherwise this waits for it (for short critical sections). ``remove``: delete the file on release (else it is left
    empty). The operating system releases the lock when its process dies, whatever the reason.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(path)
    while True:
        try:
            f = open(path, "a+", encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
        except OSError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            raise UserError(busy(owner)) from None
        try:  # the file we locked may have been removed by its previous holder as it let go: lock the one at the path
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        try:
            if remove:
                path.unlink()
            else:
                f.seek(0)
                f.truncate()
        except OSError:
            pass
        f.close()


@contextlib.contextmanager
def own_output(out: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``<out>.lock`` exclusively while a stage writes ``<out>.partial/`` and renames it to ``<out>/``.

    A second process that would write the same output (the same stage started twice, a ``--resume`` beside a live run)
    stops at once with one line naming the owner's process id, instead of writing into, clearing or renaming a folder
    that a live process owns. The operating system releases the lock when its process dies, so an abandoned partial
    folder can still be resumed; the lock file is removed when the stage ends, and an empty partial folder when it fails.
    """
    if not enabled:
        yield
        return
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder of {out}: {e.strerror or e}") from None

    def busy(owner: str) -> str:
        return f"{out} is being written by another igpt process (pid {owner}); wait for it to finish, or stop it"

    with file_lock(out.with_name(out.name + ".lock"), busy, remove=True):
        try:
            yield
        except Exception:  # (an interrupt leaves everything as it is, for --resume)
            try:  # a stage that failed before writing anything leaves no empty partial folder behind
                partial_path(out).rmdir()
            except OSError:
                pass
            raise


def completion(out: str | Path) -> dict:
    """What a stage recorded when it completed (its ``igpt_complete.json``); {} when incomplete or unreadable."""
    try:
        info = json.loads((Path(out) / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def finish_output(work: str | Path, out: str | Path, info: dict | None = None) -> Path:
    """Mark ``work`` complete and move it to ``out`` atomically (replacing an old ``out`` only now)."""
    work, out = Path(work), Path(out)
    marker = {"completed_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **(info or {}), **peak_memory()}
    (work / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1))
    return swap_in(work, out)


def swap_in(new: str | Path, final: str | Path) -> Path:
    """Put the folder ``new`` at ``final``, replacing what is there with two renames (the old one parked as
    ``<final>.old`` between them, then deleted), so a reader finds the old folder or the new one, never half of either;
    a process killed between the renames leaves ``<final>.old``, which ``has_checkpoint`` puts back for checkpoints."""
    new, final = Path(new), Path(final)
    if final.exists():
        old = final.with_name(final.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old)
    else:
        os.replace(new, final)
    return final


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so that readers see either the old or the new content, never half of it."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

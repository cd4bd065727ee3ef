"""What every training loop shares: distributed setup, optimiser, learning-rate schedule, checkpoints, metrics, progress.

The loop's checkpoints (``checkpoint.py``) resume exactly where training stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from .errors import UserError

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = None
    sharding: str = "none"  # none (one process), ddp or fsdp: set by the trainer (sharding.choose)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPU); a no-op otherwise."""
    import torch

    from .models import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=resolve_device(device))
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world, local_rank=local, device=dev)


def wrap_ddp(model: Any, d: Dist, find_unused: bool = False) -> Any:
    """The module as its processes train it: DDP under torchrun (``find_unused``: some parameters get no gradient in a
    step, such as a value head the policy loss does not reach); itself in one process, when it is None, or when the
    run shards its models (``sharding.shard`` made it the root of its shards already)."""
    if model is None or not d.enabled or d.sharding == "fsdp":
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None, find_unused_parameters=find_unused)


def all_reduce_mean(value: float, d: Dist) -> float:
    if not d.enabled:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item()) / d.world_size


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def cleanup_distributed(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def in_process_group(device: str, body: Callable[[Dist], T], owns: str | Path | None = None) -> T:
    """``body(d)`` inside the process group (when launched by torchrun), and a clean teardown after it.

    The DistributedDataParallel wrappers ``body`` makes hold the process group; destroyed before them, its gloo threads
    are torn down at interpreter exit instead and a rank can abort ("terminate called without an active exception")
    while the other is still finishing. So the wrappers die with ``body``'s frame (on an error too: the traceback's
    frames are cleared), then every rank meets at a barrier, then the group is destroyed.

    ``owns``: the stage's output folder, which the main process holds (``rundir.own_output``) for the whole of ``body``.
    """
    from .rundir import own_output

    d = init_distributed(device)
    try:
        with own_output(owns, enabled=owns is not None and d.is_main):
            result = body(d)
    except BaseException as e:
        if d.enabled:
            import gc
            import traceback

            traceback.clear_frames(e.__traceback__)
            gc.collect()
            cleanup_distributed(d)  # no barrier: the other ranks may not reach one
        raise
    if d.enabled:
        import gc

        gc.collect()
        barrier(d)
        cleanup_distributed(d)
    return result


# ---------------------------------------------------------------------------------------------- optimisation
def matmul_peak(device: Any, dtype: Any = None, n: int = 2048, seconds: float = 3.0) -> float:
    """FLOP/s of square ``n`` x ``n`` matmuls on ``device`` (fp32 unless ``dtype``): the machine's compute roofline now.

    Used by the throughput benchmarks (MFU) and recorded by ``igpt run``, since wall-clock targets mean little without
    the speed of the machine they were measured on (a shared host's speed can vary by tens of percent within an hour).
    """
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def build_optimizer(model: Any, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.95), eps: float = 1e-8) -> Any:
    """AdamW with weight decay on matrices only (not on norms, biases or 1-d parameters)."""
    import torch

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {"fused": True} if next(model.parameters()).device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **kw)


def lr_at(step: int, total: int, peak: float, warmup: int = 0, min_ratio: float = 0.1, schedule: str = "cosine") -> float:
    """Linear warmup, then cosine (or linear, or constant) decay to ``min_ratio * peak`` at ``total``."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return peak
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return peak * (1.0 - (1.0 - min_ratio) * t)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t)))


def set_lr(optimizer: Any, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- metrics and progress
class MetricsLogger:
    """Appends one JSON object per step to ``metrics.jsonl``; mirrors to TensorBoard and wandb when available and asked for."""

    def __init__(self, folder: str | Path, enabled: bool = True, tensorboard: bool = True, wandb_project: str = "", run_name: str = "", config: dict | None = None):
        self.enabled = enabled
        self.path = Path(folder) / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self._f = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(folder) / "tensorboard"))
            except Exception:  # tensorboard not installed: metrics.jsonl still has everything
                self._tb = None
        if wandb_project:
            try:
                import wandb  # type: ignore

                self._wandb = wandb.init(project=wandb_project, name=run_name or None, config=config or {})
            except ModuleNotFoundError:
                raise UserError("--wandb-project: wandb is not installed (pip install wandb)") from None

    def log(self, step: int, **metrics: Any) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **{k: _jsonable(v) for k, v in metrics.items()}}
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if self._tb is not None:
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._f.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else str(v)
    if hasattr(v, "item"):
        return _jsonable(v.item())
    return v


def reset_logs(work: str | Path, step: int) -> None:
    """The stage's logs (metrics.jsonl, samples.jsonl) hold what led to the checkpoint at ``step`` and nothing from an
    attempt that did not reach one: cut back to ``step`` on resume, emptied on a start without a checkpoint."""
    for name in ("metrics.jsonl", "samples.jsonl"):
        if step:
            truncate_metrics(Path(work) / name, step)
        else:
            (Path(work) / name).unlink(missing_ok=True)


def truncate_metrics(path: str | Path, max_step: int) -> None:
    """On resume, drop metric rows written after the checkpoint's step so the log has no duplicates."""
    path = Path(path)
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= max_step]
    path.write_text("".join(ln + "\n" for ln in keep))


class _LogLines:
    """A progress bar's stream for a log file: each redraw on a line of its own (tqdm redraws with a carriage return,
    which a log file keeps as one ever-growing line)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.last = ""  # the last line's count ("sft:  40%|####  | 428/1069"), so the closing redraw is not repeated

    def write(self, s: str) -> None:
        s = s.replace("\r", "\n").replace("\x1b[A", "")
        lines = []
        for ln in s.split("\n"):
            key = ln.split(" [", 1)[0].strip()
            if key and key != self.last:
                lines.append(ln)
                self.last = key
        if lines:
            self.stream.write("\n".join(lines) + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(total: int, desc: str, enabled: bool = True, initial: int = 0, unit: str = "step") -> Any:
    """A progress bar on standard error: on a terminal it redraws every second; in a log file (not a terminal) it writes
    a line every 30 seconds. Setting the postfix does not redraw it: only ``update`` decides when to draw."""
    from tqdm.auto import tqdm

    class Bar(tqdm):
        def set_postfix(self, ordered_dict: Any = None, refresh: bool = False, **kwargs: Any) -> None:
            super().set_postfix(ordered_dict, refresh=refresh, **kwargs)

    tty = sys.stderr.isatty()
    return Bar(
        total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=tty,
        file=sys.stderr if tty else _LogLines(sys.stderr), mininterval=1.0 if tty else 30.0, maxinterval=10.0 if tty else 60.0,
        ascii=None if tty else True,
    )


def lm_loss(model: Any, inputs: Any, targets: Any, ignore_index: int = -100, reduction: str = "mean") -> Any:
    """Next-token cross-entropy of a causal LM (logits in fp32) over the targets that are not ``ignore_index``: the
    pretraining objective, PPO-ptx's pretraining term and the held-out loss."""
    import torch.nn.functional as F

    logits = model(input_ids=inputs, use_cache=False).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index,
                           reduction=reduction)


def check_finite(name: str, value: float, where: str) -> None:
    if not math.isfinite(value):
        raise UserError(f"{name} became {value} at {where}; stopped, the last good checkpoint is kept (try a lower --lr)")


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class Part:
    """One model a ``Loop`` trains: its optimiser, the parameters whose gradient norm is clipped together (default: the
    model's, in its order), and its own peak learning rate when it has one (it then follows the same schedule, scaled)."""

    model: Any
    opt: Any
    clip: list | None = None
    lr: float | None = None


class Loop:
    """The optimisation loop every trainer shares, so that each stage supplies only its data, its loss and its evaluation.

    It owns: exact resume (the checkpoint in ``work``, with the trainer's own state beside the step, and metrics.jsonl
    cut back to it), the learning-rate schedule, micro-batch accumulation (gradients synchronised once, on the last
    micro-batch, under DDP), autocast, clipping and the optimiser step, the one NaN policy (a loss or gradient norm that
    is not finite stops the stage with one line and keeps the last good checkpoint), metrics, the progress bar and
    checkpoints.

    ``parts`` names the models it trains (``{"model": Part(model, opt)}`` for one; PPO has a policy and a value model);
    the names are those of the checkpoint's files. ``cfg`` is the stage's ``config.TrainConfig``: the loop reads ``lr``,
    ``lr_schedule``, ``warmup_steps``, ``min_lr_ratio``, ``grad_clip``, ``gradient_checkpointing`` (applied to every
    part), ``checkpoint_every``, ``stop_after``, ``resume``, ``progress``, ``tensorboard`` and ``wandb_project``. A trainer::

        loop = Loop("sft", cfg, d, work, {"model": Part(model, opt)}, total_steps, autocast)
        data.load_state(loop.state.get("data"))              # the trainer's own state, saved with each checkpoint
        while loop.running:
            lr = loop.begin_step()
            loop.accumulate(ddp_model, micro_batches, lambda b: loss_of(b) / len(micro_batches))
            grad_norm = loop.optimizer_step()
            loop.log_step({"loss": ..., "lr": lr, "grad_norm": grad_norm}, loss_name="SFT loss")
            loop.checkpoint({"data": data.state()})
        loop.close()
        if loop.finished: ...save the model and finish the output folder...

    A step made of several optimiser updates (PPO's epochs over minibatches) calls ``update`` for each and ``advance``
    once at the end, where ``optimizer_step`` does both.
    """

    def __init__(self, name: str, cfg: Any, d: Dist, work: Path, parts: dict[str, Part], total_steps: int, autocast: Any = None):
        from .rundir import has_checkpoint

        self.name, self.cfg, self.d, self.work, self.parts = name, cfg, d, Path(work), parts
        self.total_steps, self.autocast = int(total_steps), autocast
        if cfg.gradient_checkpointing:
            from .models import enable_gradient_checkpointing

            for part in parts.values():
                enable_gradient_checkpointing(part.model)
        self.step, self.state = 0, {}
        if cfg.resume and has_checkpoint(self.work):
            from .checkpoint import load_checkpoint

            self.state = load_checkpoint(self.work, self._models(), self._optimizers(), d=d)
            self.step = int(self.state["step"])
        if d.is_main:
            reset_logs(self.work, self.step)
        self.stop_at = min(self.total_steps, cfg.stop_after) if cfg.stop_after > 0 else self.total_steps
        self.log = MetricsLogger(self.work, enabled=d.is_main, tensorboard=cfg.tensorboard, wandb_project=cfg.wandb_project,
                                 config=_config_dict(cfg))
        self.bar = progress(self.total_steps, name, enabled=d.is_main and cfg.progress, initial=self.step)

    def _models(self) -> dict[str, Any]:
        return {k: p.model for k, p in self.parts.items()}

    def _optimizers(self) -> dict[str, Any]:
        return {k: p.opt for k, p in self.parts.items()}

    @property
    def running(self) -> bool:
        return self.step < self.stop_at

    @property
    def finished(self) -> bool:
        """Every step done (not stopped early on purpose by ``--stop-after``)."""
        return self.step >= self.total_steps

    def begin_step(self) -> float:
        """Set this step's learning rates (warmup, then the schedule's decay towards ``min_lr_ratio`` of the peak) and
        return the main one; a part with its own peak follows the same curve, scaled."""
        cfg = self.cfg
        lr = lr_at(self.step, self.total_steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio, cfg.lr_schedule)
        for part in self.parts.values():
            set_lr(part.opt, lr if part.lr is None else lr * part.lr / cfg.lr)
        return lr

    def accumulate(self, modules: Any, items: list, forward: Callable[[Any], Any], hold: tuple = ()) -> None:
        """``forward(item)`` returns the loss to back-propagate (already weighted for its share of the update), or None
        to skip the item. ``modules``: the (DDP-wrapped) module, or a tuple of them, that the items run through; their
        gradients are synchronised across ranks on the last item, except for those in ``hold`` (more of the same update
        is accumulated into them by a later call)."""
        import contextlib

        import torch

        from .sharding import no_sync

        modules = tuple(m for m in (modules if isinstance(modules, (tuple, list)) else (modules,)) if m is not None)
        for k, item in enumerate(items):
            last = k == len(items) - 1
            with contextlib.ExitStack() as stack:
                if self.d.enabled:
                    for m in modules:
                        if not last or any(m is h for h in hold):
                            stack.enter_context(no_sync(m))
                with torch.autocast(self.d.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                    loss = forward(item)
                if loss is not None:
                    loss.backward()

    def update(self) -> dict[str, float]:
        """Clip (when ``grad_clip`` > 0) and step every part, zero their gradients; returns each part's global gradient
        norm before clipping. A norm that is not finite stops the stage before any part is updated."""
        import torch

        from .sharding import norm_value

        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norms = {k: norm_value(torch.nn.utils.clip_grad_norm_([q for q in (p.model.parameters() if p.clip is None else p.clip)
                                                               if q.requires_grad], clip))
                 for k, p in self.parts.items()}
        for k, norm in norms.items():
            check_finite("gradient norm" if len(norms) == 1 else f"{k} gradient norm", norm, f"step {self.step + 1}")
        for p in self.parts.values():
            p.opt.step()
            p.opt.zero_grad(set_to_none=True)
        return norms

    def advance(self) -> None:
        """Count the step as done."""
        self.step += 1

    def optimizer_step(self) -> float:
        """The step of a one-part trainer: one update, then ``advance``; returns the gradient norm before clipping."""
        (grad_norm,) = self.update().values()
        self.advance()
        return grad_norm

    def log_step(self, row: dict, loss_name: str | None = None, postfix: dict | None = None) -> None:
        """The NaN policy on ``row["loss"]`` (when ``loss_name`` names it), then the metrics row and the progress bar."""
        from .rundir import peak_memory

        if loss_name:
            check_finite(loss_name, row["loss"], f"step {self.step}")
        self.log.log(self.step, **row, **peak_memory())
        self.bar.set_postfix(**(postfix or {"loss": f"{row['loss']:.3f}"}))
        self.bar.update(1)

    def checkpoint(self, state: dict | None = None, force: bool = False) -> None:
        """Save the weights, optimisers, RNG states and ``state`` every ``checkpoint_every`` steps, at the stop and when
        ``force``d; every rank waits for it."""
        every = self.cfg.checkpoint_every
        if force or (every and self.step % every == 0) or self.step == self.stop_at:
            from .checkpoint import save_checkpoint

            if self.d.is_main or self.d.sharding == "fsdp":  # sharded: every process writes its own shards
                save_checkpoint(self.work, self._models(), self._optimizers(), {"step": self.step, **(state or {})}, d=self.d)
            barrier(self.d)

    def close(self, log: bool = True) -> None:
        self.bar.close()
        if log:
            self.log.close()


def _config_dict(cfg: Any) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}

"""How a trainer's models are spread over its processes (``--sharding``): replicated (DDP) or sharded (FSDP2).

Under ``torchrun`` every trainer either replicates its models (``ddp``: DistributedDataParallel, which divides the time
but not the memory) or shards them (``fsdp``: PyTorch's ``fully_shard``, each decoder layer a unit and the module the
trainer calls the root, so each process keeps 1/N of every weight, gradient and AdamW moment and gathers a layer's
weights only while it runs). ``auto`` shards when the replicated models would take more than half of a process's
memory (the GPU's, or this machine's RAM divided among the processes on it).

What sharding asks of a trainer, and where it lives:

* every forward of a sharded model goes through its root module (the loss module, the policy module, the value
  module, the scorer), so the root's weights (embeddings, final norm, output layer, heads) are gathered and their
  gradients reduced; every process runs the same number of forwards (``even``);
* the frozen models of a stage are sharded as well (PPO's reference and reward model, DPO's reference);
* sampling, which decodes a different number of steps on each process, runs on a ``Replica``: a plain copy of the
  model with the full weights (adapters merged), refreshed from the shards before each use; so do evaluations only
  the main process runs;
* a checkpoint holds each process's own shards (``checkpoint.py``), and resumes on the same number of processes; the
  final model is gathered (``full_state``) and written by the main process as an ordinary folder.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from .errors import UserError

MODES = ("auto", "ddp", "fsdp")


def choose(requested: str, d: Any, models: list[tuple[Any, bool]]) -> str:
    """The sharding of this run, decided before any weight is loaded: ``none`` in one process, else ``requested``
    (``auto``: ``fsdp`` when the models ``(folder, hub id, config or module; trains?)`` replicated (16 bytes a trained
    parameter with AdamW, 4 a frozen one) would exceed half of a process's memory)."""
    if not d.enabled:
        return "none"
    if requested != "auto":
        return requested
    from .memory import count_from_config

    def count(src: Any) -> int:
        return sum(p.numel() for p in src.parameters()) if hasattr(src, "parameters") else count_from_config(src)[0]

    return pick(sum((16 if trains else 4) * count(m) for m, trains in models if m is not None), d)


def load_device(d: Any) -> Any:
    """Where a stage loads its models. Sharded: the main process reads them into host memory and the others build
    their structure only, on the "meta" device (``shard`` then sends each process its shards from the main one, and
    ``fully_shard`` moves each unit's shard to the GPU, so a model larger than one GPU never lands on one whole).
    Otherwise the stage's device."""
    import torch

    if getattr(d, "sharding", "none") != "fsdp":
        return d.device
    return torch.device("cpu") if d.is_main else torch.device("meta")


def pick(replicated_bytes: float, d: Any) -> str:
    """``auto``'s rule: shard when the replicated weights, gradients and optimiser state exceed half of a process's
    memory (the rest is for activations, the allocator and the sampler's copy)."""
    return "fsdp" if replicated_bytes > 0.5 * process_memory(d) else "ddp"


def process_memory(d: Any) -> float:
    """Bytes one process may use: its GPU's, or this machine's RAM shared among the processes on it."""
    import os

    import torch

    if d.device.type == "cuda":
        return float(torch.cuda.get_device_properties(d.device).total_memory)
    try:
        with open("/proc/meminfo") as f:
            total = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return float("inf")
    return total / max(1, int(os.environ.get("LOCAL_WORLD_SIZE", d.world_size)))


def _mesh(d: Any) -> Any:
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(d.device.type, (d.world_size,))


def shard(root: Any, d: Any, autocast: Any = None) -> Any:
    """Shard ``root`` in place when the run is sharded: each decoder layer inside it a unit, the root the last one (its
    remaining weights: embeddings, norms, output layer, heads). The weights come from the main process, which read them
    (``load_device``): each process receives only its shards. On CUDA with bf16 autocast the gathered weights are bf16
    and gradients are reduced in fp32. Returns ``root``."""
    if getattr(d, "sharding", "none") != "fsdp" or root is None:
        return root
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from transformers.modeling_layers import GradientCheckpointingLayer

    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    mesh = _mesh(d)
    mp = MixedPrecisionPolicy(param_dtype=autocast, reduce_dtype=torch.float32) if autocast is not None else MixedPrecisionPolicy()
    full = root.state_dict() if d.is_main else {}  # the weights the main process read; the others hold none
    for layer in [m for m in root.modules() if isinstance(m, GradientCheckpointingLayer)]:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(root, mesh=mesh, mp_policy=mp)
    if not d.is_main:
        root.to_empty(device=d.device)
    set_model_state_dict(root, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    with torch.no_grad():
        for _, buf in sorted(root.named_buffers(), key=lambda nb: nb[0]):  # rotary frequencies and the like
            dist.broadcast(buf, src=0)
    del full
    return root


def is_sharded(module: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def no_sync(module: Any) -> Iterator[None]:
    """Accumulate gradients without synchronising them across processes (DDP's ``no_sync``; FSDP's gradient sync off)."""
    if is_sharded(module):
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)
    else:
        with module.no_sync():
            yield


def norm_value(norm: Any) -> float:
    """A gradient norm as a float (a sharded model's is a DTensor: the full value is reduced across processes)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def even(items: list, d: Any) -> list:
    """This process's share of ``items`` (every world-size-th), padded with None to the longest share when the run is
    sharded: every process then runs the same number of forwards (each one gathers weights from all)."""
    mine = list(items[d.rank :: d.world_size]) if d.enabled else list(items)
    if getattr(d, "sharding", "none") == "fsdp":
        mine += [None] * (-(-len(items) // d.world_size) - len(mine))
    return mine


def full_state(root: Any, d: Any, prefix: str = "", everywhere: bool = False) -> dict:
    """The full (unsharded) state dict of the model at ``prefix`` inside ``root`` (``lm.`` for a policy module), on the
    CPU: on the main process only (others get {}), or on every process with ``everywhere``. Every process must call it.
    An unsharded root's own state dict (on the main process)."""
    if not is_sharded(root):
        sd = root.state_dict()
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=not everywhere,
                                                                  broadcast_from_rank0=False))
        if not everywhere and not d.is_main:
            return {}
    names = {n for n, _ in root.named_parameters()} | {n for n, _ in root.named_buffers()}  # a tied weight once
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and k in names}


class Replica:
    """A plain copy of a sharded model with its full weights (adapters merged; in ``dtype`` when given), for what decodes
    or evaluates outside the lockstep of the training forwards: PPO's rollouts (every process), samples and evaluations
    (the main one).
    ``refresh`` gathers the current weights (every process calls it); ``model`` is the copy (None on a process that
    does not hold one). Unsharded, it is the model itself."""

    def __init__(self, model: Any, root: Any, d: Any, prefix: str = "", everywhere: bool = True, dtype: Any = None,
                 keep_state: bool = False):
        self.inner, self.root, self.d, self.prefix, self.everywhere, self.dtype = model, root, d, prefix, everywhere, dtype
        self.sharded = is_sharded(root)
        self.model = None if self.sharded else model
        self.keep_state = keep_state
        self.state: dict | None = None  # with keep_state: the full state last gathered (adapters unmerged), to save from
        self.at: Any = None  # the training step whose weights the copy holds, when the trainer says (refresh(step))

    def refresh(self, step: Any = None) -> Any:
        """Gather the current weights into the copy and return it; with ``step``, only when the copy holds an earlier
        step's (every process must pass the same)."""
        if not self.sharded or (step is not None and step == self.at):
            return self.model
        import copy

        import torch

        from .adapters import has_lora, merged_state_dict

        state = full_state(self.root, self.d, self.prefix, everywhere=self.everywhere)
        self.state = (state or None) if self.keep_state else None
        self.at = step
        if not state:
            return None
        if has_lora(self.inner):
            state = merged_state_dict(self.inner, state=state)
        if self.model is None:
            config = copy.deepcopy(self.inner.config)
            with torch.device("meta"):
                self.model = type(self.inner)(config)
            self.model.to_empty(device=self.d.device)
            if self.dtype is not None:  # on a GPU, the copy in the autocast dtype: half the memory, the same maths
                self.model.to(self.dtype)
            buffers = dict(self.inner.named_buffers())
            with torch.no_grad():
                for name, buf in self.model.named_buffers():  # rotary frequencies and the like: not in a state dict
                    if name in buffers:
                        buf.copy_(buffers[name])
            self.model.eval()
            if getattr(self.inner, "generation_config", None) is not None:
                self.model.generation_config = copy.deepcopy(self.inner.generation_config)
        missing, unexpected = self.model.load_state_dict({k: v.to(self.d.device, self.dtype or v.dtype) for k, v in state.items()},
                                                         strict=False)
        missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the input embeddings
        if missing or unexpected:
            raise UserError(f"internal: the gathered weights do not fit the replica ({(missing + unexpected)[:3]})")
        if getattr(self.model.config, "tie_word_embeddings", False) and hasattr(self.model, "tie_weights"):
            self.model.tie_weights()
        return self.model

    def release(self) -> None:
        """Free the copy until the next ``refresh`` (PPO: between its rollouts and the next step's, while training
        needs the memory); a no-op unsharded."""
        if self.sharded:
            self.model, self.state, self.at = None, None, None

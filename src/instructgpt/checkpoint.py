"""Training checkpoints with no pickles: model and optimiser tensors go to safetensors files, everything else (step, data
position, RNG states, scheduler and controller state) to JSON, so resuming continues exactly where training stopped.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .adapters import trainable_state
from .errors import UserError


def _rng_state() -> tuple[dict, dict]:
    import torch

    tensors = {"torch_cpu_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_rng_{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    return tensors, {
        "python_rng": [py[0], list(py[1]), py[2]],
        "numpy_rng": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def _set_rng_state(tensors: dict, meta: dict) -> None:
    import torch

    torch.set_rng_state(tensors["torch_cpu_rng"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_rng_"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    v, s, g = meta["python_rng"]
    random.setstate((v, tuple(s), g))
    a, keys, pos, has_gauss, cached = meta["numpy_rng"]
    np.random.set_state((a, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _optimizer_tensors(optimizer: Any) -> tuple[dict, dict]:
    import torch

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = _local(v).detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer: Any, tensors: dict, meta: dict) -> None:
    """The saved state back into the optimiser; a sharded parameter's moments become shards of its layout again."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        p = params[int(pid)] if int(pid) < len(params) else None
        if p is not None and hasattr(p, "device_mesh") and v.dim() == p.dim() and v.dim() > 0:
            from torch.distributed.tensor import DTensor

            v = DTensor.from_local(v.to(p.to_local().device), p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                   stride=p.stride())
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _local(v: Any) -> Any:
    return v.to_local() if hasattr(v, "to_local") else v


def _suffix(d: Any) -> str:
    """A sharded run's checkpoint files carry their process's rank: each holds that process's shards."""
    return f".rank{d.rank}" if d is not None and getattr(d, "sharding", "none") == "fsdp" else ""


def save_checkpoint(folder: str | Path, models: dict[str, Any], optimizers: dict[str, Any], state: dict, d: Any = None) -> Path:
    """Write a checkpoint atomically: ``<folder>/checkpoint`` is replaced only once the new one is complete. In a sharded
    run every process calls it and writes its own shards of the weights and optimiser state (``<name>.rank<r>``); the
    main process writes the rest and swaps the folder in once all have written."""
    from safetensors.torch import save_file

    from .train import barrier

    folder = Path(folder)
    tmp = folder / "checkpoint.tmp"
    sharded = bool(_suffix(d))
    main = d is None or d.is_main
    if main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    if sharded:
        barrier(d)
    sfx = _suffix(d)
    for name, model in models.items():
        m = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
        sd = trainable_state(m)  # an adapted model's frozen base is reloaded from its folder, not checkpointed
        sd = {k: _local(v).detach().contiguous().cpu() for k, v in (m.state_dict() if sd is None else sd).items()}
        _save_shared_safe(save_file, sd, tmp / f"{name}{sfx}.safetensors")
    meta: dict[str, Any] = {"state": state, "optimizers": {}, "processes": d.world_size if sharded else 1}
    for name, opt in optimizers.items():
        tensors, ometa = _optimizer_tensors(opt)
        save_file(tensors, str(tmp / f"optimizer-{name}{sfx}.safetensors"))
        meta["optimizers"][name] = ometa
    if sharded:
        barrier(d)
    if not main:
        return folder / "checkpoint"
    rng_t, rng_meta = _rng_state()
    save_file(rng_t, str(tmp / "rng.safetensors"))
    meta["rng"] = rng_meta
    (tmp / "state.json").write_text(json.dumps(meta))
    from .rundir import swap_in

    return swap_in(tmp, folder / "checkpoint")


def _save_shared_safe(save_file: Any, sd: dict, path: Path) -> None:
    # Tied weights share storage; safetensors refuses shared tensors, so store one copy of each storage.
    seen: dict[int, str] = {}
    out, aliases = {}, {}
    for k, v in sd.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen and v.shape == out[seen[ptr]].shape:
            aliases[k] = seen[ptr]
        else:
            seen[ptr] = k
            out[k] = v.clone() if k in out else v
    save_file(out, str(path), metadata={"aliases": json.dumps(aliases)})


def load_checkpoint(folder: str | Path, models: dict[str, Any], optimizers: dict[str, Any], restore_rng: bool = True,
                    d: Any = None) -> dict:
    """Restore models, optimisers and RNG from ``<folder>/checkpoint``; returns the saved ``state`` dict. A sharded
    run's processes each read their own shards, on the same number of processes as wrote them."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    ck = Path(folder) / "checkpoint"
    if not (ck / "state.json").is_file():
        raise UserError(f"no checkpoint to resume from in {folder}")
    meta = json.loads((ck / "state.json").read_text())
    sfx = _suffix(d)
    wrote = int(meta.get("processes", 1))
    now = d.world_size if sfx else 1
    if wrote != now:
        raise UserError(f"{ck} holds the shards of {wrote} process{'es' if wrote > 1 else ''} "
                        f"({'--sharding fsdp' if wrote > 1 else 'an unsharded run'}); resume it with "
                        f"{f'torchrun --nproc_per_node {wrote} and --sharding fsdp' if wrote > 1 else 'no sharding'}")
    for name, model in models.items():
        path = ck / f"{name}{sfx}.safetensors"
        sd = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
        for k, src in aliases.items():
            sd[k] = sd[src]
        m = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
        partial = trainable_state(m)
        if sfx:
            _load_shards(m, sd, partial, path)
            continue
        try:
            result = m.load_state_dict(sd, strict=partial is None)
        except RuntimeError as e:
            raise UserError(f"{path}: the checkpoint does not fit this model ({str(e).splitlines()[0]}); resume with the "
                            "model and options it was made with") from None
        if partial is not None and (result.unexpected_keys or set(partial) - set(sd)):
            raise UserError(f"{path}: the checkpoint's adapters do not match this model's (was it made with other --lora-* "
                            "options?); resume with the options it was made with")
    for name, opt in optimizers.items():
        _load_optimizer(opt, load_file(str(ck / f"optimizer-{name}{sfx}.safetensors")), meta["optimizers"][name])
    if restore_rng:
        _set_rng_state(load_file(str(ck / "rng.safetensors")), meta["rng"])
    return meta["state"]


def _load_shards(model: Any, sd: dict, partial: dict | None, path: Path) -> None:
    """Copy a process's saved shards into its sharded model's local shards, in place."""
    import torch

    target = partial if partial is not None else model.state_dict()
    if set(target) != set(sd):
        raise UserError(f"{path}: the checkpoint does not fit this model; resume with the model and options it was made with")
    with torch.no_grad():
        for k, v in target.items():
            local = _local(v)
            if local.shape != sd[k].shape:
                raise UserError(f"{path}: {k} has shape {tuple(sd[k].shape)} here but {tuple(local.shape)} in the model")
            local.copy_(sd[k])

"""LoRA adapters (Hu et al. 2021, through ``peft``) for every trainer: a frozen base and small trained low-rank updates.

``add_lora`` injects the adapters into the model in place (``peft.inject_adapter_in_model``): the model keeps its
Hugging Face class and module tree, so everything that reads it (the losses, the reward head, the value module, the
samplers, checkpoints, sharding) works unchanged, and only the adapters (and whatever the trainer names, such as a
reward or value head) train. Switching the adapters off (``adapters_off``) gives the base model's exact numbers, which is
how the RL stages and DPO get their frozen reference from the policy's own weights: one base in memory, not two
(``reference``).

A trained model is saved as a plain Hugging Face folder with the adapters merged into the weights (``merged_state_dict``:
W + scaling * B A), which ``from_pretrained`` loads with no code of ours; ``save_adapter`` also writes the adapter
folder ``peft.PeftModel.from_pretrained`` loads on top of the base.

QLoRA (a 4-bit base through bitsandbytes) needs CUDA: ``check_quantization`` refuses it elsewhere with one line.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

ADAPTER = "default"
ADAPTER_FOLDER = "adapter"


def linear_names(model: Any) -> list[str]:
    """The leaf names of every linear projection inside the model's decoder layers (attention and MLP, whatever the
    architecture calls them: q_proj/k_proj/v_proj/o_proj/gate_proj/up_proj/down_proj for Llama and Qwen2, c_attn/c_proj/
    c_fc for GPT-2, query_key_value/dense/dense_h_to_4h/dense_4h_to_h for GPT-NeoX, ...). The embeddings, the output
    layer and any scalar head lie outside the layers and are never adapted by default."""
    import torch
    from transformers.modeling_layers import GradientCheckpointingLayer
    from transformers.pytorch_utils import Conv1D

    names: list[str] = []
    for layer in (m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)):
        for name, sub in layer.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if name and isinstance(sub, (torch.nn.Linear, Conv1D)) and leaf not in names:
                names.append(leaf)
    return names


def has_lora(model: Any) -> bool:
    return any(_is_lora(m) for m in _unwrap(model).modules())


def _is_lora(module: Any) -> bool:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return False
    return isinstance(module, LoraLayer)


def _unwrap(model: Any) -> Any:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def add_lora(model: Any, cfg: Any, trainable: tuple = (), what: str = "model") -> Any:
    """Inject LoRA adapters of rank ``cfg.lora_r`` into ``model`` (in place; returned) and freeze everything else but
    the modules in ``trainable``; a no-op when ``cfg.lora_r`` is 0. ``cfg.lora_targets`` names the projections (empty:
    ``linear_names``); a name that matches nothing is an error naming the option and the names there are."""
    if not getattr(cfg, "lora_r", 0):
        for flag, name in (("save_adapter", "--save-adapter"), ("load_in_4bit", "--load-in-4bit")):
            if getattr(cfg, flag, False):
                raise UserError(f"{name} needs adapters: add --lora-r (for example --lora-r 16)")
        return model
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise UserError("--lora-r needs the peft package: pip install peft") from None
    available = linear_names(model)
    targets = list(cfg.lora_targets) or available
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n, _ in model.named_modules())]
    if unknown:
        raise UserError(f"--lora-targets: {', '.join(unknown)} is not a module of the {what} ({type(model).__name__}); "
                        f"its layers' projections are {', '.join(available) or 'none'}")
    if not targets:
        raise UserError(f"--lora-r: the {what} ({type(model).__name__}) has no linear projections in its layers to adapt; "
                        "name them with --lora-targets")
    conf = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets, bias="none")
    import warnings

    with warnings.catch_warnings():  # GPT-2's Conv1D: peft switches fan_in_fan_out on and says so
        warnings.simplefilter("ignore")
        model = inject_adapter_in_model(conf, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name)
    for m in trainable:
        if m is not None:
            m.requires_grad_(True)
    model._lora_config = conf
    return model


def lora_layers(model: Any) -> Iterator[tuple[str, Any]]:
    return ((n, m) for n, m in _unwrap(model).named_modules() if _is_lora(m))


@contextlib.contextmanager
def adapters_off(model: Any) -> Iterator[None]:
    """Every LoRA adapter of ``model`` switched off for the block: the base model's exact forward."""
    layers = [m for _, m in lora_layers(model)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        for m in layers:
            m.enable_adapters(True)


class _Off:
    """A callable module seen with the adapters of ``owner`` switched off."""

    def __init__(self, owner: Any, module: Any):
        self._owner, self._module = owner, module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with adapters_off(self._owner):
            return self._module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class BaseView:
    """An adapted model seen as its frozen base: what it computes through ``base_model`` (its trunk) or when called runs
    with the adapters off; everything else (its config, its output layer, a reward head) is the model's own, which the
    adapters never touch. Used where a separate frozen copy of the starting model would otherwise be loaded."""

    def __init__(self, model: Any):
        self._model = model

    @property
    def base_model(self) -> Any:
        return _Off(self._model, self._model.base_model)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with adapters_off(self._model):
            return self._model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def adapters_off_call(root: Any) -> Any:
    """``root`` (a sharded policy module) called with its adapters off: the reference computed through the module that
    gathers the shards."""
    return _Off(root, root)


def reference(policy_lm: Any, load: Any) -> Any:
    """The frozen reference of a policy that starts from a model: its own base with the adapters off when it has
    adapters (no second copy), else ``load()``, a separate frozen copy."""
    if has_lora(policy_lm):
        return BaseView(policy_lm)
    return load().requires_grad_(False)


def merged_state_dict(model: Any, state: dict | None = None, base: dict | None = None) -> dict:
    """The state dict of the plain model the adapted one computes: each adapted weight W + scaling * B A (transposed for
    GPT-2's Conv1D), under the base model's own names, without the adapter tensors. ``state``: the model's full state
    dict when it was gathered elsewhere (a sharded model); default ``model.state_dict()``. ``base``: the frozen weights
    in full precision when the model holds them quantised (QLoRA); what trained besides the adapters (a head) is the
    model's own."""
    import torch

    model = _unwrap(model)
    sd = dict(state if state is not None else model.state_dict())
    deltas = {}
    for name, layer in lora_layers(model):
        a, b = sd[f"{name}.lora_A.{ADAPTER}.weight"], sd[f"{name}.lora_B.{ADAPTER}.weight"]
        delta = (b.float() @ a.float()) * float(layer.scaling[ADAPTER])
        deltas[f"{name}.weight"] = delta.T if getattr(layer, "fan_in_fan_out", False) else delta
    plain = {k.replace(".base_layer.", "."): v for k, v in sd.items() if ".lora_" not in k}
    if base is not None:
        trained = {k.replace(".base_layer.", ".") for k, p in model.named_parameters() if p.requires_grad and ".lora_" not in k}
        plain = {k: plain[k] if k in trained else v for k, v in base.items()}
    with torch.no_grad():
        for k, delta in deltas.items():
            w = plain[k]
            plain[k] = (w.float() + delta.to(w.device)).to(w.dtype)
    return plain


def trainable_state(model: Any) -> dict | None:
    """What a checkpoint of an adapted model holds: the tensors that train (the base is reloaded from its folder on
    resume); None for a model without adapters (the whole state dict is saved)."""
    model = _unwrap(model)
    if not has_lora(model):
        return None
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: Any, out: str | Path, base: str, task: str, heads: tuple[str, ...] = (), state: dict | None = None) -> Path:
    """Write ``<out>/adapter/``: ``adapter_config.json`` and ``adapter_model.safetensors`` in peft's own layout (the
    model's names under ``base_model.model.``, without the adapter's name), so that
    ``PeftModel.from_pretrained(<base model>, <out>/adapter)`` rebuilds the trained model. ``task``: CAUSAL_LM or SEQ_CLS;
    ``heads``: the fully trained modules saved beside the adapters (a reward model's ``score``). ``state``: the full
    state dict, when it was gathered from shards."""
    from safetensors.torch import save_file

    model = _unwrap(model)
    conf = model._lora_config
    folder = Path(out) / ADAPTER_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    sd = state if state is not None else model.state_dict()
    tensors = {f"base_model.model.{k.replace(f'.{ADAPTER}.', '.')}": v.detach().contiguous().cpu()
               for k, v in sd.items() if ".lora_" in k}
    for head in heads:
        for k, v in sd.items():
            if k.startswith(head + "."):
                tensors[f"base_model.model.{k}"] = v.detach().contiguous().cpu()
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    saved = conf.to_dict()
    saved.update(base_model_name_or_path=str(base), task_type=task, modules_to_save=list(heads) or None,
                 target_modules=sorted(conf.target_modules) if isinstance(conf.target_modules, (set, list)) else conf.target_modules)
    (folder / "adapter_config.json").write_text(json.dumps(saved, indent=2, default=list))
    return folder


def check_quantization(cfg: Any, device: Any) -> None:
    """``--load-in-4bit`` (QLoRA) needs adapters, CUDA and bitsandbytes; one line naming what is missing otherwise."""
    if not getattr(cfg, "load_in_4bit", False):
        return
    if not getattr(cfg, "lora_r", 0):
        raise UserError("--load-in-4bit: a 4-bit base cannot be trained itself; add adapters with --lora-r (QLoRA)")
    if getattr(device, "type", str(device)) != "cuda":
        raise UserError(f"--load-in-4bit: 4-bit QLoRA needs a CUDA GPU (bitsandbytes); this stage runs on {device}. "
                        "Train LoRA adapters on the full-precision base instead (drop --load-in-4bit)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("--load-in-4bit needs the bitsandbytes package: pip install bitsandbytes") from None


def quantization_kwargs(cfg: Any) -> dict:
    """``from_pretrained`` arguments that load a base in 4 bits (NF4, bf16 compute; QLoRA's recipe), when asked."""
    if not getattr(cfg, "load_in_4bit", False):
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                                      bnb_4bit_compute_dtype=torch.bfloat16)}

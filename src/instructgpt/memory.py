"""Memory a training stage needs per process, estimated from the models' configs alone (``igpt <stage> --dry-run``).

For each model of the stage: its weights; for a trained one also its gradients and AdamW's two moments (fp32, as our
optimiser keeps them, with autocast leaving the weights in fp32); and the activations a micro-batch of ``tokens`` keeps
for the backward pass. The activation estimate per decoder layer and token is Korthikanti et al. (2022)'s
``h (34 + 5 a s / h)`` bytes for 16-bit activations (h hidden size, a attention heads, s sequence length), doubled for
fp32; with activation checkpointing a layer keeps only its input (``2 h`` bytes, 16-bit) and one layer's activations
are live again during its recomputation. The output layer's logits (fp32, with their log-softmax) come on top. Frozen
models (PPO's reference and reward model, DPO's reference) hold weights only. Under sharding (``fsdp``) weights,
gradients and optimiser state are divided by the number of processes; activations are not, and a full copy of the
trained model's weights (``sharding.Replica``) comes on top: on every process for PPO, which samples from it, on the main
one for the other trainers' samples and evaluations.

An estimate, not a measurement: the allocator's fragmentation, CUDA's context (about 0.5 GiB) and temporary buffers
come on top; the peak each stage really reached is in its metrics and completion record (``peak_rss_mb``,
``peak_cuda_mb``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 2**30


@dataclass
class ModelMemory:
    role: str
    params: int
    trainable: bool
    weights: float  # bytes per process
    grads: float
    optimizer: float
    activations: float
    trained_params: int = 0  # the parameters that train: all of them, or the adapters' (LoRA)

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations


def meta_model(source: Any, sequence_classifier: bool = False) -> tuple[Any, Any]:
    """(model, config) of a model folder, hub id or config, built on the meta device: its shapes, no weights."""
    import copy

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from .models import check_model_ref

    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        check_model_ref(str(source))
        config = AutoConfig.from_pretrained(str(source))
    else:
        config = copy.deepcopy(source)
    if sequence_classifier:
        config.num_labels = 1
    with torch.device("meta"):
        return (AutoModelForSequenceClassification if sequence_classifier else AutoModelForCausalLM).from_config(config), config


def count_from_config(source: Any, sequence_classifier: bool = False) -> tuple[int, Any]:
    """(parameter count, config) of a model folder, hub id or config, without loading any weights."""
    model, config = meta_model(source, sequence_classifier)
    return sum(p.numel() for p in model.parameters()), config


def adapter_parameters(model: Any, lora_r: int, lora_targets: Any = (), sequence_classifier: bool = False) -> int:
    """The parameters that train with LoRA adapters of rank ``lora_r``: r (fan-in + fan-out) for each adapted
    projection, plus a classifier's head, which trains with them."""
    from .adapters import linear_names

    targets = set(lora_targets or linear_names(model))
    n = sum(lora_r * sum(m.weight.shape) for name, m in model.named_modules()
            if name.rsplit(".", 1)[-1] in targets and getattr(m, "weight", None) is not None and m.weight.dim() == 2)
    if sequence_classifier:
        from .reward_model import head_of

        n += sum(p.numel() for p in head_of(model).parameters())
    return n


def activation_bytes(config: Any, tokens: int, seq_len: int, checkpointing: bool, dtype_bytes: int = 4, logits: bool = True) -> float:
    """Activations kept for the backward pass by a micro-batch of ``tokens`` tokens in sequences of ``seq_len``."""
    text = getattr(config, "text_config", None) or config
    h = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or getattr(text, "d_model", 0))
    a = int(getattr(text, "num_attention_heads", 0) or getattr(text, "n_head", 0) or 1)
    layers = int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layer", 0) or 0)
    vocab = int(getattr(text, "vocab_size", 0) or 0)
    scale = dtype_bytes / 2  # the formula is for 16-bit activations
    per_layer = tokens * h * (34 + 5 * a * seq_len / max(h, 1)) * scale
    kept = layers * tokens * 2 * h * scale + per_layer if checkpointing else layers * per_layer
    return kept + (tokens * vocab * 4 * 2 if logits else 0.0)


def estimate(models: list[tuple[str, Any, bool, bool]], tokens: int, seq_len: int, checkpointing: bool, world_size: int = 1,
             sharding: str = "ddp", autocast_bytes: int = 4, lora_r: int = 0, lora_targets: Any = ()) -> list[ModelMemory]:
    """``models``: (role, folder / hub id / config, trained?, sequence classifier?) of each model the stage holds. With
    ``lora_r`` a trained model keeps its whole (frozen) weights but gradients and optimiser state for its adapters only."""
    out = []
    shard = world_size if sharding == "fsdp" else 1
    for role, path, trained, classifier in models:
        model, config = meta_model(path, classifier)
        n = sum(p.numel() for p in model.parameters())
        weights = 4.0 * n / shard
        trains = (adapter_parameters(model, lora_r, lora_targets, classifier) if lora_r else n) if trained else 0
        state = 4.0 * trains / shard
        out.append(ModelMemory(
            role, n, trained, weights, state, 2 * state,
            activation_bytes(config, tokens, seq_len, checkpointing, autocast_bytes, logits=not classifier) if trained else 0.0,
            trains))
    return out


def report(stage: str, rows: list[ModelMemory], tokens: int, seq_len: int, checkpointing: bool, world_size: int, sharding: str,
           lora_r: int = 0) -> str:
    """The estimate as the table ``--dry-run`` prints."""
    def g(x: float) -> str:
        return f"{x / GIB:8.3f}"

    lines = [f"igpt {stage} --dry-run: estimated memory per process ({world_size} process{'es' if world_size > 1 else ''}, "
             f"{sharding}, micro-batch of {tokens} tokens in sequences of up to {seq_len}, activation checkpointing "
             f"{'on' if checkpointing else 'off'}{f', LoRA rank {lora_r}' if lora_r else ''}; GiB)",
             f"  {'model':<10} {'parameters':>12} {'weights':>8} {'grads':>8} {'AdamW':>8} {'activ.':>8} {'total':>8}"]
    for r in rows:
        note = ("   (full weights gathered from the shards)" if r.role == "replica" else "   (frozen)" if not r.trainable
                else f"   ({r.trained_params:,} trained)" if r.trained_params < r.params else "")
        lines.append(f"  {r.role:<10} {r.params:>12,} {g(r.weights)} {g(r.grads)} {g(r.optimizer)} {g(r.activations)} {g(r.total)}" + note)
    lines.append(f"  {'all':<10} {sum(r.params for r in rows):>12,} {g(sum(r.weights for r in rows))} {g(sum(r.grads for r in rows))} "
                 f"{g(sum(r.optimizer for r in rows))} {g(sum(r.activations for r in rows))} {g(sum(r.total for r in rows))}")
    lines.append("  (weights, gradients and AdamW state in fp32; activations after Korthikanti et al. 2022; allocator overhead "
                 "and a GPU's context come on top)")
    return "\n".join(lines)


def _text_config(source: Any) -> Any:
    """The (text) config of a model folder, hub id or config, read without any weight."""
    config = source
    if not hasattr(source, "to_dict"):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(source))
    return getattr(config, "text_config", None) or config


def context_of(source: Any) -> int:
    """A model's context length from its folder or config (0 when it does not say)."""
    text = _text_config(source)
    return int(getattr(text, "max_position_embeddings", 0) or getattr(text, "n_positions", 0) or 0)


def hard_context(source: Any) -> int:
    """``context_of`` for a model with learned (absolute) position embeddings, which has no position past its context;
    0 for one with rotary positions (any ``rope_*`` or ``rotary_*`` setting), which can run past it."""
    text = _text_config(source)
    return 0 if any(k.startswith(("rope", "rotary")) for k in text.to_dict()) else context_of(text)


def dry_run(stage: str, cfg: Any, models: list[tuple[str, Any, bool, bool]], tokens: int, seq_len: int) -> None:
    """Print the stage's memory estimate per process (``--dry-run``): under torchrun for its number of processes."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return
    lora = getattr(cfg, "lora_r", 0)
    if lora:  # the frozen reference is the policy's own base with its adapters off: no weights of its own
        models = [m for m in models if m[0] != "reference"]
    kw = dict(lora_r=lora, lora_targets=getattr(cfg, "lora_targets", ()))
    sharding = "none" if world == 1 else getattr(cfg, "sharding", "ddp")
    if sharding == "auto":  # the rule the stage itself applies (sharding.pick), on the replicated estimate
        from types import SimpleNamespace

        from .models import resolve_device
        from .sharding import pick

        replicated = estimate(models, tokens, seq_len, cfg.gradient_checkpointing, world, "ddp", **kw)
        d = SimpleNamespace(device=resolve_device(cfg.device), world_size=world)
        sharding = pick(sum(r.weights + r.grads + r.optimizer for r in replicated), d)
    rows = estimate(models, tokens, seq_len, cfg.gradient_checkpointing, world, sharding, **kw)
    if sharding == "fsdp" and stage != "dpo":  # sharding.Replica: the gathered weights PPO samples from (every process),
        src = rows[0]                          # or the main process's samples and evaluations (the other trainers)
        rows.append(ModelMemory("replica", src.params, False, 4.0 * src.params, 0.0, 0.0, 0.0))
    print(report(stage, rows, tokens, seq_len, cfg.gradient_checkpointing, world, sharding, lora))

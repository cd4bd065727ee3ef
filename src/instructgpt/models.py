"""Models: from-scratch Llama configs, loading any Hugging Face causal LM, saving standard model folders, devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError


def resolve_device(name: str = "auto") -> Any:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(__import__("os").environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown device '{name}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device: CUDA is not available on this machine")
    return dev


def autocast_dtype(device: Any, precision: str = "auto") -> Any:
    """bf16 autocast on CUDA (when supported), full fp32 on CPU, unless asked otherwise."""
    import torch

    if precision == "fp32":
        return None
    if precision in ("bf16", "auto") and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if precision == "fp16" and device.type == "cuda":
        return torch.float16
    if precision == "bf16" and device.type == "cpu":
        return torch.bfloat16
    return None


def build_llama(
    tok: Any,
    d_model: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    d_ff: int,
    max_seq_len: int,
    dropout: float = 0.0,
    seed: int = 0,
) -> Any:
    """A from-scratch Llama-architecture causal LM sized by the arguments, with tied embeddings."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(tok, d_model, n_layers, n_heads, n_kv_heads, d_ff, max_seq_len, dropout))


def llama_config(tok: Any, d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int, max_seq_len: int,
                 dropout: float = 0.0) -> Any:
    """The ``LlamaConfig`` of ``build_llama``'s model."""
    from transformers import LlamaConfig

    if d_model % n_heads or n_heads % n_kv_heads:
        raise UserError(f"--d-model ({d_model}) must divide by --n-heads ({n_heads}), which must divide by --n-kv-heads ({n_kv_heads})")
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=d_model,
        intermediate_size=d_ff,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=max_seq_len,
        attention_dropout=dropout,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        rope_theta=10000.0,
        initializer_range=0.02,
    )


def check_model_ref(path: str | Path, what: str = "model") -> None:
    """A reference that is meant as a local folder but does not exist is an error at once (not a hub lookup that waits for
    the network): a path that starts with '.', '~' or '/', or whose first component is a folder here."""
    p = Path(str(path)).expanduser()
    if p.exists():
        return
    text = str(path)
    first = Path(text).parts[0] if Path(text).parts else ""
    if text.startswith((".", "/", "~")) or len(Path(text).parts) > 2 or (len(Path(text).parts) == 2 and Path(first).is_dir()):
        raise UserError(f"cannot load {what} from {path}: no such folder")


def load_pretrained(auto_class: Any, path: str | Path, what: str = "model", device: Any = None, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained(path, **kwargs)``, with every way a folder can be broken (missing, incomplete, a
    truncated or garbage weights file, a config that does not parse) turned into one line naming the folder or file.
    ``device`` "meta": the model's structure only, from its config, no weight read (a sharded run's other processes,
    which receive their shards from the main one: ``sharding.shard``)."""
    from safetensors import SafetensorError

    check_model_ref(path, what)
    try:
        if device is not None and str(device) == "meta":
            import torch
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(path), **{k: v for k, v in kwargs.items() if k == "num_labels"})
            with torch.device("meta"):
                return auto_class.from_config(config)
        return auto_class.from_pretrained(str(path), **kwargs)
    except SafetensorError as e:
        files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
        where = ", ".join(str(f) for f in files) or str(path)
        raise UserError(f"cannot load {what} from {path}: {where} is not a valid safetensors file ({str(e).splitlines()[0]})") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot load {what} from {path}: {msg}") from None


def load_causal_lm(path: str | Path, device: Any = None, dtype: Any = None, quantization: dict | None = None) -> Any:
    """Load a causal LM from a model folder or hub id; ``quantization``: ``adapters.quantization_kwargs`` (a 4-bit base,
    placed on ``device`` as it loads)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": dtype} if dtype else {}
    if quantization:
        return load_pretrained(AutoModelForCausalLM, path, **kwargs, **quantization, device_map={"": device})
    model = load_pretrained(AutoModelForCausalLM, path, device=device, **kwargs)
    if device is not None and str(device) != "meta":
        model.to(device)
    return model


def resize_for_tokenizer(model: Any, tok: Any) -> Any:
    """Grow the embedding when the tokenizer gained tokens (pad, chat roles) and record the pad id; returns ``model``.

    The new rows (of the input embedding, and of the output layer when it is not tied to it) are the mean of the old
    ones, with no random draw: two loads of one model grow alike, as a policy and its separately loaded reference must."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    if len(tok) > old:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        layers = [m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]
        with torch.no_grad():
            for w in {id(m.weight): m.weight for m in layers}.values():
                if w.shape[0] > old and w.device.type != "meta":
                    w[old:] = w[:old].mean(0)
            bias = getattr(model.get_output_embeddings(), "bias", None)
            if bias is not None and bias.shape[0] > old and bias.device.type != "meta":
                bias[old:] = bias[:old].mean()
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model


def save_model(model: Any, tok: Any, out: str | Path, adapter_base: str = "", state: dict | None = None) -> None:
    """Save a standard Hugging Face folder: safetensors weights, config, generation config, tokenizer.

    A model with LoRA adapters is saved with them merged into its weights (``adapters.merged_state_dict``), so the folder
    loads with ``from_pretrained`` alone; ``adapter_base`` (the folder or hub id the adapters were trained on) also
    writes the adapter folder peft loads on top of that base (``--save-adapter``). ``state``: the model's full state
    dict when it was gathered from shards (``sharding.full_state``)."""
    from transformers.utils import logging as hf_logging

    from .adapters import has_lora, merged_state_dict, save_adapter
    from .reward_model import head_name
    from .tokenizer import stop_token_ids

    hf_logging.disable_progress_bar()
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        gc.eos_token_id = stop_token_ids(tok, None)
        gc.pad_token_id = tok.pad_token_id
    if has_lora(model):
        model.save_pretrained(str(out), safe_serialization=True,
                              state_dict=merged_state_dict(model, state=state, base=_full_precision_base(model)))
        if adapter_base:
            classifier = type(model).__name__.endswith("ForSequenceClassification")
            save_adapter(model, out, adapter_base, "SEQ_CLS" if classifier else "CAUSAL_LM",
                         heads=(head_name(model),) if classifier else (), state=state)
    else:
        model.save_pretrained(str(out), safe_serialization=True, **({"state_dict": state} if state is not None else {}))
    tok.save_pretrained(str(out))


def _full_precision_base(model: Any) -> dict | None:
    """The base weights of a 4-bit (QLoRA) model in 16-bit, reloaded from its folder, for the merged save; None for a
    model whose weights are full precision already."""
    if not getattr(model, "is_loaded_in_4bit", False):
        return None
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if type(model).__name__.endswith("ForSequenceClassification") else AutoModelForCausalLM
    return load_pretrained(auto, model.config._name_or_path, "the 4-bit model's base", dtype=torch.bfloat16).state_dict()


def count_parameters(model: Any, exclude_embeddings: bool = False) -> int:
    n = sum(p.numel() for p in model.parameters())
    if exclude_embeddings:
        n -= model.get_input_embeddings().weight.numel()
    return n


def enable_residual_dropout(model: Any, p: float) -> list[Any]:
    """Residual dropout (GPT-2/3 style): dropout on each attention and MLP block's output before it joins the residual.

    Hugging Face Llama has no residual dropout, so it is added with forward hooks on every decoder layer's
    ``self_attn`` and ``mlp``; the hooks respect ``model.train()`` / ``model.eval()``. Returns the hook handles.
    """
    import torch.nn.functional as F

    if p <= 0:
        return []
    handles = []

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, module.training), *output[1:])
        return F.dropout(output, p, module.training)

    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("self_attn", "mlp", "attn", "attention", "feed_forward"):
            handles.append(module.register_forward_hook(hook))
    return handles


def zero_dropout(model: Any) -> None:
    """Every dropout of a model set to 0, in the modules themselves (``nn.Dropout`` and the float rates attention
    modules keep, such as Llama's ``attention_dropout`` or OPT's ``dropout``) and in its config: dropout stays off
    even in training mode."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for name, value in list(vars(m).items()):
            if "dropout" in name and isinstance(value, float):
                setattr(m, name, 0.0)
    for m in model.modules():
        config = getattr(m, "config", None)
        for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
            if config is not None and isinstance(getattr(config, name, None), float):
                setattr(config, name, 0.0)


def enable_gradient_checkpointing(model: Any) -> None:
    """Activation checkpointing: every decoder layer of the Hugging Face models inside ``model`` keeps only its input
    and recomputes the rest in the backward pass (non-reentrant ``torch.utils.checkpoint``, which replays dropout with
    the same random numbers). Layers checkpoint when they train with gradients on, so a model held in eval mode to keep
    dropout off (the RL stages' and DPO's) has its dropout zeroed and its layers put in training mode; passes without
    gradients (sampling, scoring) run as before, key-value cache included."""
    from transformers import PreTrainedModel
    from transformers.modeling_layers import GradientCheckpointingLayer

    tops = [m for m in model.modules() if isinstance(m, PreTrainedModel)]
    tops = [m for m in tops if not any(m is not t and any(c is m for c in t.modules()) for t in tops)]  # the outermost ones
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not tops or not layers or not all(getattr(m, "supports_gradient_checkpointing", False) for m in tops):
        raise UserError(f"--gradient-checkpointing: {type(model).__name__} does not support activation checkpointing")
    was_training = model.training
    for m in tops:  # newer transformers releases call it activation checkpointing, older ones gradient checkpointing
        if hasattr(m, "activation_checkpointing_enable"):
            m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not was_training:
        zero_dropout(model)
        model.eval()
        for layer in layers:
            layer.train()

"""The modules PPO trains and scores with: the policy (a causal LM, optionally with a value head on its trunk), the value
model (a sequence classifier read at every position), the frozen reward scorer, and the one log-prob computation they
share (``token_logprobs``; DPO's log-probs are the same numbers)."""

from __future__ import annotations

from typing import Any

from .errors import UserError
from .models import load_pretrained


def _trunk(model: Any) -> Any:
    return model.base_model


def _head(model: Any) -> Any:
    from .reward_model import head_of

    return head_of(model)


def _positions(input_ids: Any) -> Any:
    import torch

    return torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0).expand_as(input_ids)


def _hidden(model: Any, input_ids: Any) -> Any:
    return _trunk(model)(input_ids=input_ids, position_ids=_positions(input_ids), use_cache=False).last_hidden_state


def _gather(hidden: Any, pos: Any) -> Any:
    return hidden.gather(1, pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def policy_module(lm: Any, value_head: Any = None) -> Any:
    """The module PPO trains: the policy LM (and a value head on its trunk, when given)."""
    import torch

    from .train import lm_loss

    class PolicyModule(torch.nn.Module):
        """The policy causal LM, optionally with a value head on its trunk; one forward gives what PPO needs."""

        def __init__(self, lm: Any, value_head: Any = None):
            super().__init__()
            self.lm = lm
            self.value_head = value_head

        def forward(self, input_ids, gather_pos=None, targets=None, temperature: float = 1.0, ptx_targets=None):
            if ptx_targets is not None:  # PPO-ptx's pretraining term, through the same (DDP-wrapped) module as the RL loss
                return lm_loss(self.lm, input_ids, ptx_targets)
            logprobs, logp_all, h = token_logprobs(self.lm, input_ids, gather_pos, targets, temperature)
            with torch.no_grad():
                entropy = -(logp_all.exp() * logp_all).sum(-1)
            values = self.value_head(h).squeeze(-1).float() if self.value_head is not None else None
            return logprobs, entropy, values

    return PolicyModule(lm, value_head)


def _value_module_class():
    import torch

    class ValueModule(torch.nn.Module):
        """A sequence-classification model read at every position: V(s_t) = head(h_t) + bias."""

        def __init__(self, model: Any, bias: float = 0.0, head: Any = None):
            super().__init__()
            self.model = model
            self.own_head = head  # a head of its own, leaving the model's (the reward model's, when it shares the trunk)
            self.bias = torch.nn.Parameter(torch.tensor([float(bias)]))  # 1-d: sharding takes no scalar parameters

        @property
        def head(self) -> Any:
            return self.own_head if self.own_head is not None else _head(self.model)

        def forward(self, input_ids, gather_pos):
            h = _gather(_hidden(self.model, input_ids), gather_pos)
            return self.head(h).squeeze(-1).float() + self.bias

    return ValueModule


def _scorer_class():
    import torch

    class RewardScorer(torch.nn.Module):
        """The frozen reward model: raw head output at the last real token, plus ``reward_bias``, divided by
        ``reward_std``. A module, so that a sharded reward model gathers its weights when it is called."""

        def __init__(self, model: Any):
            super().__init__()
            self.model = model
            self.bias = float(getattr(model.config, "reward_bias", 0.0) or 0.0)
            std = float(getattr(model.config, "reward_std", 1.0) or 1.0)
            self.std = std if std > 0 else 1.0

        def forward(self, input_ids: Any, seq_len: Any) -> Any:
            h = _hidden(self.model, input_ids)
            last = h[torch.arange(h.shape[0], device=h.device), seq_len - 1]
            return (_head(self.model)(last).squeeze(-1).float() + self.bias) / self.std

    return RewardScorer


def RewardScorer(model: Any) -> Any:  # noqa: N802  a module class made on first use: importing this file needs no torch
    return _scorer_class()(model)


def load_sequence_classifier(path: str, device: Any) -> Any:
    from transformers import AutoModelForSequenceClassification

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a causal-LM folder loads with a fresh head: expected, not worth a warning
    try:
        model = load_pretrained(AutoModelForSequenceClassification, path, "a reward/value model", device=device, num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model if str(device) == "meta" else model.to(device)


def no_dropout(model: Any) -> Any:
    """Dropout off, in the policy, reference, value and reward models alike (Ziegler et al. 2019; Huang et al., "The N
    implementation details of RLHF with PPO"); eval mode stays on during training."""
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
        if hasattr(model.config, name) and isinstance(getattr(model.config, name), float):
            setattr(model.config, name, 0.0)
    model.eval()
    return model


def build_value_module(path: str, device: Any, tok: Any, own_head: bool = False) -> Any:
    """Value model from a reward model (its head scaled to normalised-reward units) or from any causal LM (zero head).
    ``own_head``: the value head is a copy, and the model keeps its own (the reward model then scores through it)."""
    import copy

    import torch

    model = load_sequence_classifier(path, device)
    is_rm = any(a.endswith("ForSequenceClassification") for a in (getattr(model.config, "architectures", None) or []))
    bias = 0.0
    head = copy.deepcopy(_head(model)).requires_grad_(True) if own_head else _head(model)
    with torch.no_grad():
        if is_rm:
            std = float(getattr(model.config, "reward_std", 1.0) or 1.0)
            std = std if std > 0 else 1.0
            head.weight.div_(std)
            if getattr(head, "bias", None) is not None:
                head.bias.div_(std)
            bias = float(getattr(model.config, "reward_bias", 0.0) or 0.0) / std
        else:
            head.weight.zero_()
    if model.get_input_embeddings().weight.shape[0] < len(tok):
        raise UserError(f"{path}: its vocabulary ({model.get_input_embeddings().weight.shape[0]}) is smaller than the policy's tokenizer ({len(tok)})")
    no_dropout(model)
    return _value_module_class()(model, bias, head if own_head else None).to(device)


def save_value_model(value: Any, out: Any, state: dict | None = None) -> None:
    """The trained value model as a sequence-classification folder whose output is V (``reward_bias`` holds its offset,
    ``reward_std`` 1): adapters merged, and its own head where it has one. ``state``: the value module's full state
    dict when it was gathered from shards."""
    from .adapters import has_lora, merged_state_dict

    model = value.model
    whole = state if state is not None else None
    bias = whole["bias"] if whole is not None else value.bias.detach()
    model.config.reward_bias = float(bias)
    model.config.reward_std = 1.0
    inner = {k[6:]: v for k, v in whole.items() if k.startswith("model.")} if whole is not None else None
    state = merged_state_dict(model, state=inner) if has_lora(model) else inner
    if value.own_head is not None:
        from .reward_model import head_name

        name = head_name(model)
        state = dict(state if state is not None else model.state_dict())
        head = ({k[9:]: v for k, v in whole.items() if k.startswith("own_head.")} if whole is not None
                else value.own_head.state_dict())
        state.update({f"{name}.{k}": v for k, v in head.items()})
    model.save_pretrained(str(out), safe_serialization=True, **({"state_dict": state} if state is not None else {}))


def token_logprobs(lm: Any, input_ids: Any, gather_pos: Any, targets: Any, temperature: float = 1.0) -> tuple[Any, Any, Any]:
    """The one log-prob computation of the RL code: log-probs of ``targets`` under a causal LM, each predicted from the
    position in ``gather_pos``, at ``temperature``; with the whole log-softmax (for the entropy) and the hidden states
    there (for a value head). Gradients flow when the caller allows them (the PPO update), not otherwise (scoring)."""
    import torch

    h = _gather(_hidden(lm, input_ids), gather_pos)
    logits = lm.get_output_embeddings()(h).float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    return logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1), logp_all, h


def sequence_logprobs(model: Any, ep: Any, temperature: float) -> Any:
    """Log-probs of an episode batch's response tokens under a causal LM, at the rollout temperature."""
    return token_logprobs(model, ep.input_ids, ep.gather_pos, ep.response, temperature)[0]

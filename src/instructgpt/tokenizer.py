"""Tokenizers: train a byte-level BPE with the chat format's special tokens, load any Hugging Face tokenizer, find stop tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .errors import UserError

EOT = "<|endoftext|>"
PAD = "<|pad|>"
END = "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = [EOT, PAD, *ROLE_TOKENS, END]

# One turn is <|role|>content<|end|>; the generation prompt is <|assistant|>. The model learns to close its turn with <|end|>.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)


CHAT_TEMPLATE_SHOWN = "<|user|>...<|end|><|assistant|>...<|end|>"  # how the template reads, for messages


def check_vocab_size(vocab_size: int) -> None:
    """The 256 bytes, the special tokens and at least one merge."""
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise UserError(f"--vocab-size: must be at least {256 + len(SPECIAL_TOKENS) + 1} for a byte-level BPE, got {vocab_size}")


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast`` with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    check_vocab_size(vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOT,
        pad_token=PAD,
        additional_special_tokens=[*ROLE_TOKENS, END],
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def load_tokenizer(path: str | Path) -> Any:
    """Load a tokenizer folder or hub id; give it a pad token distinct from EOS and a chat template if it lacks them."""
    from transformers import AutoTokenizer

    from .models import check_model_ref

    check_model_ref(path, "tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load tokenizer from {path}: {str(e).splitlines()[0]}") from None
    ensure_pad_and_template(tok)
    return tok


def ensure_pad_and_template(tok: Any) -> None:
    """PPO and batching need a pad token that is not EOS; base models also need a chat template for SFT."""
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        tok.add_special_tokens({"pad_token": PAD})
    if not getattr(tok, "chat_template", None):
        added = [t for t in [*ROLE_TOKENS, END] if t not in tok.get_vocab()]
        if added:
            tok.add_special_tokens({"additional_special_tokens": added})
        tok.chat_template = CHAT_TEMPLATE


def stop_token_ids(tok: Any, generation_config: Any = None) -> list[int]:
    """Token ids that end a response: EOS, our end-of-turn token, and the model's generation-config EOS ids."""
    ids: set[int] = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    vocab = tok.get_vocab()
    for t in (END, "<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        if t in vocab:
            ids.add(int(vocab[t]))
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(i) for i in eos)
    return sorted(ids)

"""Tiny, locally built tokenizers and models for tests, demos and the model organisms.

No hub is reachable in this project's CI, so everything that needs a model builds one here:
a character-level tokenizer made with the ``tokenizers`` library (with a BOS post-processor,
wrapped as a ``PreTrainedTokenizerFast``) and a small Llama or GPT-2 config around it. The
artifacts are saved with ``save_pretrained`` and loaded back with ``from_pretrained(path)``,
exactly like a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
DEFAULT_ALPHABET = (
    "0123456789+-*/=()[]{}.,:;!?#$%&'\"<>_^|\\~`@ \nabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def build_char_tokenizer(
    alphabet: str = DEFAULT_ALPHABET, out_dir: str | Path | None = None
) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: one id per character of ``alphabet``, plus special tokens.

    Ids 0..3 are ``<pad> <bos> <eos> <unk>``; unknown characters map to ``<unk>``. Encoding
    prepends ``<bos>`` (the post-processor), so training and evaluation agree on BOS. Saved to
    ``out_dir`` when given.
    """
    chars = list(dict.fromkeys(alphabet))  # de-duplicate, keep order
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",  # batched generation pads on the left
    )
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_llama(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = True,
    seed: int = 0,
    out_dir: str | Path | None = None,
) -> LlamaForCausalLM:
    """A randomly initialised Llama-config causal LM sized for CPU work (about 1 M parameters by default)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if out_dir is not None:
        save_model(model, tokenizer, out_dir)
    return model


def build_tiny_gpt2(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    max_position_embeddings: int = 512,
    seed: int = 0,
    out_dir: str | Path | None = None,
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2-config causal LM (learned positions: mind left padding)."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=hidden_size,
        n_layer=num_layers,
        n_head=num_heads,
        n_positions=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    if out_dir is not None:
        save_model(model, tokenizer, out_dir)
    return model


def save_model(model, tokenizer, out_dir: str | Path) -> Path:
    """Save model weights (safetensors) and tokenizer side by side, loadable with ``from_pretrained``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total

"""Batched sampling from a local Hugging Face causal LM: the sampler that ``generate`` injects.

:class:`HFSampler` is a plain callable ``sample(prompts, n) -> list[list[str]]``: for each prompt,
``n`` completions (best-of-N candidates). Prompts are tokenised exactly as training tokenises
them (``tokenizer(prompt)``, the tokenizer's special tokens, e.g. BOS), left-padded so every
row's next token sits in the last column, and decoded without the prompt and without special
tokens. ``temperature == 0`` is greedy decoding (all ``n`` completions then agree, so the model
runs once per prompt).

Each completion is a :class:`Completion`: a ``str`` that also says whether it was cut at
``max_new_tokens`` before the model's EOS (``truncated``), which the format filters use.

Reproducibility: batch ``b`` (counted over the sampler's life) is sampled in a forked RNG seeded
with ``seed + b``, so the same prompts, ``batch_size``, device and library versions give the same
text, and the caller's global RNG state is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill_doctor.causal_lm import encode_left_padded, generate_new_tokens, load_causal_lm
from distill_doctor.errors import InputError

Sampler = Callable[[list[str], int], Sequence[Sequence[str]]]  # per prompt, n completions


class Completion(str):
    """A completion's text, with ``truncated`` (stopped by the length limit, not EOS) and ``n_tokens``."""

    truncated: bool
    n_tokens: int

    def __new__(cls, text: str, *, truncated: bool = False, n_tokens: int = 0) -> Completion:
        obj = super().__new__(cls, text)
        obj.truncated = truncated
        obj.n_tokens = n_tokens
        return obj


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings (recorded verbatim in the provenance manifest)."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = 16  # prompt-completion rows per forward pass (prompts x n)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def load_model(model_dir: str | Path, *, device: str = "cpu", dtype: str | torch.dtype = "auto"):
    """Load a causal LM and its tokenizer from a local directory (no hub), in eval mode on ``device``."""
    return load_causal_lm(model_dir, device=device, dtype=dtype, local_only=True)


class HFSampler:
    """``sampler(prompts, n) -> list[list[Completion]]`` over a loaded model and tokenizer."""

    def __init__(
        self, model, tokenizer, params: SamplingParams, *, progress: Callable[[int], None] | None = None
    ):
        self.model, self.tokenizer, self.params = model, tokenizer, params
        if tokenizer.pad_token_id is None:  # batching needs a pad id; EOS is the usual stand-in
            tokenizer.pad_token = tokenizer.eos_token
        self.progress = progress  # called with the number of prompts finished after each batch
        self._batch_index = 0
        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_positions = int(limit) if limit else None

    @classmethod
    def from_dir(
        cls, model_dir: str | Path, params: SamplingParams, *, device: str = "cpu", **kw
    ) -> HFSampler:
        model, tokenizer = load_model(model_dir, device=device)
        return cls(model, tokenizer, params, **kw)

    def __call__(self, prompts: list[str], n: int) -> list[list[Completion]]:
        return batched_samples(prompts, n, self.params, self._generate, self.progress)

    @torch.no_grad()
    def _generate(self, prompts: list[str], per_prompt: int) -> list[Completion]:
        tok, p = self.tokenizer, self.params
        device = next(self.model.parameters()).device
        input_ids, attention_mask = encode_left_padded(tok, prompts, device)  # (B, T) each
        max_new = p.max_new_tokens
        if self.max_positions is not None:
            max_new = min(max_new, self.max_positions - input_ids.shape[1])
            if max_new < 1:
                raise InputError(
                    f"a prompt of {input_ids.shape[1]} tokens leaves no room in the model's "
                    f"{self.max_positions} positions",
                    field="prompt",
                )
        seed = p.seed + self._batch_index
        self._batch_index += 1
        # A private RNG stream: sampling neither depends on nor disturbs the caller's RNG state.
        new = generate_new_tokens(
            self.model,
            input_ids,
            attention_mask,
            max_new_tokens=max_new,
            pad_id=tok.pad_token_id,
            eos_id=tok.eos_token_id,
            temperature=p.temperature,
            top_p=p.top_p,
            num_return_sequences=per_prompt,
            seed=seed,
        )  # (B * per_prompt, <= max_new)
        return [self._completion(row) for row in new]

    def _completion(self, row: torch.Tensor) -> Completion:
        """Decode one generated row; without an EOS it was cut by ``max_new_tokens`` (generation only
        stops early when every row has ended)."""
        ids = row.tolist()
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        ended = eos is not None and eos in ids
        if ended:
            ids = ids[: ids.index(eos)]
        elif pad is not None and pad != eos:
            while ids and ids[-1] == pad:
                ids.pop()
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text, truncated=eos is not None and not ended, n_tokens=len(ids))


def batched_samples(
    prompts: list[str],
    n: int,
    params: SamplingParams,
    generate: Callable[[list[str], int], list[Completion]],
    progress: Callable[[int], Any] | None = None,
) -> list[list[Completion]]:
    """``n`` completions per prompt from ``generate(prompts, per_prompt)`` (rows prompt-major), in
    whole-prompt batches of at most ``params.batch_size`` rows. Greedy decoding samples each prompt
    once and repeats it ``n`` times (every sample would be the same). Any engine's sampler uses it."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    greedy = params.temperature == 0
    per_prompt = 1 if greedy else n
    step = max(1, params.batch_size // per_prompt)  # a batch holds prompts x per_prompt rows
    out: list[list[Completion]] = []
    for start in range(0, len(prompts), step):
        chunk = prompts[start : start + step]
        rows = generate(chunk, per_prompt)
        for k in range(len(chunk)):
            got = rows[k * per_prompt : (k + 1) * per_prompt]
            out.append(got * n if greedy else got)
        if progress is not None:
            progress(len(chunk))
    return out

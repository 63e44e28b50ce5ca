"""A local causal LM for inference: loading it, encoding prompts left-padded, batched generation.

Shared by ``generate`` (:class:`~distill_doctor.produce.sampling.HFSampler`) and the model probes
(:mod:`~distill_doctor.probes.min_k_plus`, :mod:`~distill_doctor.probes.exposure_models`).
Training has its own loader (``train.build``: model only, errors name the config field) and its
own KV-cache sampling loop (``train.generation``: token-id prompts, logits cut to the tokenizer's
vocabulary, the global RNG that resume restores).

Prompts are left-padded so that every row's next token sits in the last column; ``generate``
derives position ids from the attention mask, so padding does not shift positions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distill_doctor.devices import model_load_errors
from distill_doctor.errors import InputError


def load_causal_lm(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    local_only: bool = False,
):
    """``(model, tokenizer)`` from a ``from_pretrained`` directory: eval mode, tokenizer padding left.

    ``device`` None: the GPU when there is one, else the CPU. ``dtype`` None: transformers'
    default. ``local_only``: the path must be a model directory (``config.json``) and nothing is
    looked up on a hub. Load failures are an :class:`InputError` naming the path.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if local_only and not (Path(path) / "config.json").is_file():
        raise InputError("not a model directory (no config.json)", path=path)
    extra = {} if dtype is None else {"dtype": dtype}
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=local_only, **extra)
    except model_load_errors() as err:  # incl. a truncated or corrupt model.safetensors
        raise InputError(f"cannot load a causal LM with from_pretrained: {err}", path=path) from err
    tok.padding_side = "left"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()  # type: ignore[arg-type]  # transformers types .to's wrapper as taking self
    return model, tok


def encode_left_padded(
    tokenizer, texts: list[str], device: torch.device, *, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, each (B, T) on ``device``, padded (and, with ``max_length``,
    truncated) on the left; the tokenizer's own sides are restored afterwards."""
    sides = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    try:
        trunc = {} if max_length is None else {"truncation": True, "max_length": max_length}
        enc = tokenizer(texts, return_tensors="pt", padding=True, **trunc)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


@torch.no_grad()
def generate_new_tokens(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    pad_id: int,
    eos_id: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    min_new_tokens: int | None = None,
    num_return_sequences: int = 1,
    seed: int | None = None,
) -> torch.Tensor:
    """The generated tokens only: (B, T) left-padded prompts -> (B * num_return_sequences, <= max_new_tokens).

    ``temperature == 0`` is greedy; otherwise pure temperature sampling with nucleus ``top_p`` (no
    top-k cut). ``min_new_tokens`` suppresses EOS until that many tokens. ``eos_id`` None: the
    model's generation config decides. ``seed``: sample in a private RNG stream seeded with it, so
    the caller's global RNG state is neither used nor changed; None: the global RNG is used.
    """
    kwargs: dict = {"do_sample": temperature > 0, "num_return_sequences": num_return_sequences}
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    if min_new_tokens is not None:
        kwargs["min_new_tokens"] = min_new_tokens
    if eos_id is not None:
        kwargs["eos_token_id"] = eos_id

    def run() -> torch.Tensor:
        return model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            **kwargs,
        )

    if seed is None:
        out = run()
    else:
        device = input_ids.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = run()
    return out[:, input_ids.shape[1] : input_ids.shape[1] + max_new_tokens]


def same_tokenizer(t_tok, s_tok, teacher_dir: str | Path, student_dir: str | Path) -> None:
    """Refuse a teacher/student pair whose tokenizers (``t_tok``, ``s_tok``) differ: per-token
    comparisons of their distributions need one vocabulary (``InputError`` naming both folders)."""
    if t_tok.get_vocab() != s_tok.get_vocab():
        raise InputError(
            f"--teacher-model and --student-model must share a tokenizer (vocabularies differ; student: {student_dir})",
            path=teacher_dir,
        )

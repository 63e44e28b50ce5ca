"""Shared setup for the eval/generate tests: a tiny random Llama whose greedy outputs vary by prompt.

A freshly initialised tiny model repeats one character for every prompt (its weights are near
zero), which would let a wrong join or a BOS mismatch pass unnoticed. Re-drawing the weights
with a larger scale makes outputs depend on the prompt. Nothing is trained: tests check
plumbing and determinism, not accuracy.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import torch

from distill_doctor.testing.tiny_model import build_char_tokenizer, build_tiny_llama, save_model


def make_model(out_dir: Path, *, seed: int = 0, scale: float = 0.5, max_positions: int = 128) -> Path:
    tok = build_char_tokenizer()
    model = build_tiny_llama(
        tok, hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=max_positions, seed=seed
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return save_model(model, tok, out_dir)


@functools.cache
def tiny_models() -> tuple[Path, Path]:
    """(teacher, student) model folders, built once per test process."""
    root = Path(tempfile.mkdtemp(prefix="dd-produce-"))
    return make_model(root / "teacher", seed=0), make_model(root / "student", seed=7)


def write_items(path: Path, n: int = 5, *, mixed_reference_types: bool = False) -> Path:
    """``n`` addition items; references all numbers, or alternating number/string when asked."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            ref: int | str = 2 * i + 3
            if mixed_reference_types and i % 2:
                ref = str(ref)
            row = {
                "id": f"q{i}",
                "prompt": f"What is {i} + {i + 3}? ",
                "reference": ref,
                "tags": {"domain": "math"},
            }
            fh.write(json.dumps(row) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]

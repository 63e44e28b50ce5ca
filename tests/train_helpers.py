"""Shared toy setup for the training tests: a digit tokenizer, a tiny student, a briefly trained teacher.

Built once per test process (``toy_setup()`` is cached) in a temporary folder.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from distill_doctor.testing.tiny_model import build_char_tokenizer, build_tiny_llama
from distill_doctor.train.config import TrainConfig

ALPHABET = "0123456789+= "


@dataclass(frozen=True)
class ToySetup:
    root: Path
    student: Path  # random init, hidden 32, 2 layers
    teacher: Path  # hidden 48, 2 layers, SFT-trained on the toy data
    data: Path  # 48 addition problems


def write_addition_data(path: Path, n: int = 48, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = rng.randint(0, 49), rng.randint(0, 49)
            fh.write(json.dumps({"id": f"ex{i}", "prompt": f"{a}+{b}=", "response": str(a + b)}) + "\n")
    return path


def tiny_student(out_dir: Path, *, seed: int = 0, tokenizer=None) -> Path:
    tok = tokenizer or build_char_tokenizer(alphabet=ALPHABET)
    build_tiny_llama(tok, hidden_size=32, num_layers=2, num_heads=2, seed=seed, out_dir=out_dir)
    return out_dir


@functools.lru_cache(maxsize=1)
def toy_setup() -> ToySetup:
    from distill_doctor.train.sft import train_sft

    root = Path(tempfile.mkdtemp(prefix="dd-train-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    tok = build_char_tokenizer(alphabet=ALPHABET)
    data = write_addition_data(root / "train.jsonl")
    student = tiny_student(root / "student", tokenizer=tok)
    build_tiny_llama(tok, hidden_size=48, num_layers=2, num_heads=2, seed=1, out_dir=root / "teacher_init")
    cfg = TrainConfig(
        method="sft",
        student=str(root / "teacher_init"),
        data=str(data),
        output_dir=str(root / "teacher"),
        steps=60,
        batch_size=16,
        lr=1e-2,
        warmup_steps=5,
        quiet=True,
    )
    teacher = train_sft(cfg)
    return ToySetup(root=root, student=student, teacher=teacher, data=data)


def make_cfg(setup: ToySetup, output_dir: Path, method: str, **fields) -> TrainConfig:
    """A small, fast config; nested groups may be given as dicts (``loss={"beta": 0.3}``)."""
    base = TrainConfig(
        method=method,
        student=str(setup.student),
        teacher=str(setup.teacher),
        data=str(setup.data),
        output_dir=str(output_dir),
        steps=12,
        batch_size=8,
        lr=5e-3,
        quiet=True,
    )
    for group in ("loss", "gkd", "skd"):
        if isinstance(fields.get(group), dict):
            fields[group] = dataclasses.replace(getattr(base, group), **fields[group])
    return dataclasses.replace(base, **fields)


def read_metrics(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

"""The small distillation pair the vLLM training tests share: the sort organism as teacher (head_dim 32:
vLLM's CPU attention needs >= 32), a random student on its tokenizer (hidden 64, 2 heads of 32), and 32
of the teacher's training rows as the training file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ORGANISMS = Path(__file__).resolve().parents[1] / "fixtures" / "organisms" / "models"


def build_toy(root: Path) -> Path:
    """Write ``root/student`` and ``root/train.jsonl``; return ``root``."""
    from transformers import PreTrainedTokenizerFast

    from distill_doctor.testing.tiny_model import build_tiny_llama

    tok = PreTrainedTokenizerFast.from_pretrained(str(ORGANISMS / "sort_teacher"))
    build_tiny_llama(tok, hidden_size=64, num_layers=2, num_heads=2, seed=0, out_dir=root / "student")
    with (
        gzip.open(ORGANISMS / "sort_teacher_train.jsonl.gz", "rt") as fh,
        open(root / "train.jsonl", "w") as out,
    ):
        for _, line in zip(range(32), fh):
            row = json.loads(line)
            keep = {"id": row["id"], "prompt": row["prompt"], "response": row["response"]}
            out.write(json.dumps(keep) + "\n")
    return root

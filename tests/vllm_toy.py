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


def metrics(out: Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def spy_on_engine_starts(monkeypatch, module: str) -> list:
    """Record the transports ``module`` (``vllm_engine`` or ``vllm_teacher``) opens, to check afterwards
    that their processes are gone."""
    from distill_doctor.train import vllm_client

    opened: list = []
    for name in ("start_server", "start_colocated"):
        real = getattr(vllm_client, name)

        def spy(*args, _real=real, **kwargs):
            opened.append(_real(*args, **kwargs))
            return opened[-1]

        monkeypatch.setattr(f"distill_doctor.train.{module}.{name}", spy)
    return opened

"""Record a real vLLM scoring reply (prompt log-probs) for the fast tests of the served teacher.

Starts the engine (``vllm_server.py`` in ``.venv-vllm``) on the sort organism's teacher, scores three
of its training rows (prompt + response + EOS as the trainer tokenises them) with ``prompt_logprobs: 5`` and
``max_tokens: 1`` (the request ``vllm_teacher.ScoreRequest`` sends), and writes the request and the
engine's reply, untouched, to ``fixtures/vllm/sort_teacher_scores.json``.

Usage: ``python scripts/record_teacher_scores.py`` (about 30 s on a CPU; needs ``.venv-vllm``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from transformers import AutoTokenizer

from distill_doctor.train import vllm_client
from distill_doctor.train.data import Example, tokenize_example
from distill_doctor.train.vllm_teacher import ScoreRequest

ROOT = Path(__file__).resolve().parents[1]
TEACHER = Path("fixtures/organisms/models/sort_teacher")
OUT = ROOT / "fixtures" / "vllm" / "sort_teacher_scores.json"
TOP_K = 5
MAX_LEN = 128


def main() -> None:
    tok = AutoTokenizer.from_pretrained(str(ROOT / TEACHER))
    with gzip.open(ROOT / TEACHER.parent / "sort_teacher_train.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for _, line in zip(range(3), fh)]
    examples = [Example(id=r["id"], prompt=r["prompt"], response=r["response"]) for r in rows]
    tokenized = [tokenize_example(tok, e, MAX_LEN) for e in examples]
    sequences = [t.input_ids for t in tokenized if t is not None]
    request = ScoreRequest(sequences, TOP_K)
    spec = vllm_client.EngineSpec(model=str(ROOT / TEACHER), max_model_len=256)
    engine = vllm_client.start_colocated(spec)
    try:
        reply = engine.call("/v1/completions", request.to_json())
    finally:
        engine.close()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "teacher": str(TEACHER),
        "rows": rows,
        "max_len": MAX_LEN,
        "request": request.to_json(),
        "reply": reply,
    }
    OUT.write_text(json.dumps(record) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}: {len(sequences)} sequences, top-{TOP_K}")


if __name__ == "__main__":
    main()

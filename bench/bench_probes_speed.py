"""Wall time of every output-level probe on 10,000 items (target: at most 10 s in all, on 2 cores).

    .venv/bin/python bench/bench_probes_speed.py [--n 10000] [--repeats 1]

Inputs: the shared synthetic generator's ``clean_high`` run (``distill_doctor/testing/synthetic_runs.py``: items
with difficulty/domain tags and original/perturbed groups, teacher and student outputs with
verdicts precomputed, so no verifier and no code execution is timed) plus a training set of
2 rows per item for ``data_quality``. Each probe found as ``distill_doctor.probes.<name>.PROBE``
is run ``--repeats`` times; the best time is reported. Results: ``bench/results/probes_speed.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

from distill_doctor.atomic import atomic_write_text  # noqa: E402

OUTPUT_LEVEL = (
    "data_quality",
    "teacher_error_transfer",
    "capacity_gap",
    "superficial_imitation",
    "exposure_bias",
)
BUDGET_S = 10.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="number of items")
    ap.add_argument("--repeats", type=int, default=1, help="runs per probe (best reported)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results folder")
    args = ap.parse_args(argv)

    from distill_doctor.testing.synthetic_runs import make_run

    t0 = time.perf_counter()
    inputs = make_run("clean_high", args.n, 0, train=True)
    build_s = time.perf_counter() - t0
    rows = []
    for name in OUTPUT_LEVEL:
        try:
            probe = importlib.import_module(f"distill_doctor.probes.{name}").PROBE
        except (ImportError, AttributeError) as err:
            rows.append(
                {
                    "probe": name,
                    "seconds": None,
                    "cpu_seconds": None,
                    "verdict": None,
                    "note": f"not available: {err}",
                }
            )
            continue
        best = best_cpu = None
        try:
            for _ in range(args.repeats):
                t, c = time.perf_counter(), time.process_time()
                finding = probe.run(inputs)
                dt, dc = time.perf_counter() - t, time.process_time() - c
                best = dt if best is None else min(best, dt)
                best_cpu = dc if best_cpu is None else min(best_cpu, dc)
        except Exception as err:  # a sibling probe still under construction: record it, time the rest
            rows.append(
                {
                    "probe": name,
                    "seconds": None,
                    "cpu_seconds": None,
                    "verdict": None,
                    "note": f"failed: {err!r}"[:160],
                }
            )
            continue
        rows.append(
            {
                "probe": name,
                "seconds": round(best, 3),
                "cpu_seconds": round(best_cpu, 3),
                "verdict": finding.verdict,
                "note": "",
            }
        )
    total = sum(r["seconds"] or 0.0 for r in rows)
    total_cpu = sum(r["cpu_seconds"] or 0.0 for r in rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    complete = all(r["seconds"] is not None for r in rows)
    result = {
        "n_items": args.n,
        "n_train_rows": len(inputs.train),
        "input_build_s": round(build_s, 3),
        "probes": rows,
        "total_s": round(total, 3),
        "total_cpu_s": round(total_cpu, 3),
        "load_average_1min": round(load, 2) if load is not None else None,
        "budget_s": BUDGET_S,
        "within_budget": total <= BUDGET_S,
        "all_probes_timed": complete,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "note": "verdicts precomputed: verification and code execution are not timed",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "probes_speed.json", json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Output-level probes on {args.n:,} items",
        "",
        f"Total {total:.2f} s wall, {total_cpu:.2f} s CPU (budget {BUDGET_S:.0f} s; wall "
        f"{'within' if total <= BUDGET_S else 'OVER'}), {os.cpu_count()} CPUs shared "
        f"(1-min load average {load:.1f} at the end), Python {platform.python_version()}. "
        "Verdicts precomputed (no code execution). Wall time on a shared machine includes waiting for a core.",
        "",
        "| probe | wall s | CPU s | verdict on a clean run | note |",
        "|---|---:|---:|---|---|",
    ]
    for r in rows:
        secs = f"{r['seconds']:.3f}" if r["seconds"] is not None else "-"
        cpu = f"{r['cpu_seconds']:.3f}" if r["cpu_seconds"] is not None else "-"
        lines.append(f"| {r['probe']} | {secs} | {cpu} | {r['verdict'] or '-'} | {r['note']} |")
    atomic_write_text(args.out / "probes_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

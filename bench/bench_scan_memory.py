"""Peak memory and rows/s of ``diagnose --probes contamination,data_quality`` on N training rows.

    .venv/bin/python bench/bench_scan_memory.py --rows 1000000 [--items 10000] [--workers N]
    .venv/bin/python bench/bench_scan_memory.py --rows 10000000   # the 10M-row run (about 6 GB of JSONL)

Writes ``items.jsonl`` (10,000 eval items, the contamination bench's generator), ``student.jsonl``
and ``train.jsonl`` (N rows: that generator's training rows with its planted copies, a numeric
``reference`` on every row and a response ending in "The answer is K", 3% of them wrong) into
``--data`` (a temporary folder by default, deleted afterwards), then runs the real CLI in a child
process with an empty ``DISTILL_DOCTOR_CACHE`` and samples the memory of the whole process tree
(the driver and its scan workers) every 0.2 s: the peak of the summed PSS (proportional set size:
pages shared between the forked workers counted once) and the peak RSS of the largest process.
Wall time covers everything: validating the JSONL into the Arrow cache, both scans, the reports.

Results are merged into ``bench/results/scan_memory.json`` (one entry per row count) and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from bench_contamination import build  # noqa: E402

from distill_doctor.atomic import atomic_write_text  # noqa: E402

GOAL_BYTES = 4 * 1024**3


def write_inputs(folder: Path, rows: int, items: int, seed: int) -> dict[str, Path]:
    """The eval items, student outputs and ``rows`` training rows as JSONL files."""
    texts, row, _ = build(argparse.Namespace(rows=rows, items=items, seed=seed))
    paths = {name: folder / f"{name}.jsonl" for name in ("items", "student", "train")}
    with open(paths["items"], "w") as f_items, open(paths["student"], "w") as f_student:
        for k, (eid, text) in enumerate(texts.items()):
            f_items.write(json.dumps({"id": eid, "prompt": text, "reference": k % 97}) + "\n")
            f_student.write(
                json.dumps({"id": eid, "output": f"The answer is {k % 97 if k % 3 else 0}."}) + "\n"
            )
    with open(paths["train"], "w") as f:
        for i in range(rows):
            prompt, response = row(i)
            answer = i % 89 if i % 33 else i % 89 + 1  # about 3% wrong targets
            f.write(json.dumps({"id": f"r{i}", "prompt": prompt, "response": f"{response} The answer is {answer}.",
                                "reference": i % 89}) + "\n")  # fmt: skip
    return paths


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _memory(pid: int) -> tuple[int, int]:
    """(summed PSS, largest RSS) in bytes over the process tree of ``pid``."""
    pss = rss = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                fields = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in fh if ln.split()[-1] == "kB"}
        except OSError:
            continue
        pss += fields.get("Pss", 0)
        rss = max(rss, fields.get("Rss", 0))
    return pss, rss


def run_diagnose(paths: dict[str, Path], out: Path, workers: int | None, cache: Path) -> dict:
    cmd = [sys.executable, "-m", "distill_doctor", "diagnose", "--items", str(paths["items"]),
           "--student", str(paths["student"]), "--train", str(paths["train"]), "--out", str(out),
           "--quiet", "--probes", "contamination,data_quality"]  # fmt: skip
    if workers:
        cmd += ["--workers", str(workers)]
    env = {**os.environ, "DISTILL_DOCTOR_CACHE": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    peak_pss = peak_rss = 0
    while proc.poll() is None:
        pss, rss = _memory(proc.pid)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        time.sleep(0.2)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"diagnose exited {proc.returncode}")
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": wall, "peak_pss": peak_pss, "peak_rss_largest": peak_rss, "report": report}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=None, help="diagnose --workers (default: every core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=None, help="folder for the generated files (kept)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="scan-memory-"))
    data = args.data or tmp
    data.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        paths = write_inputs(data, args.rows, args.items, args.seed)
        gen_s = time.perf_counter() - t
        got = run_diagnose(paths, tmp / "report", args.workers, tmp / "cache")
        train_bytes = paths["train"].stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    findings = {f["mode"]: f for f in got["report"]["findings"]}
    entry = {
        "rows": args.rows,
        "items": args.items,
        "train_jsonl_bytes": train_bytes,
        "workers": args.workers or os.cpu_count(),
        "data_generation_s": round(gen_s, 1),
        "wall_s": round(got["wall_s"], 1),
        "rows_per_s": round(args.rows / got["wall_s"]),
        "timings": got["report"].get("timings"),
        "peak_pss_bytes": got["peak_pss"],
        "peak_rss_largest_process_bytes": got["peak_rss_largest"],
        "under_4_gib": got["peak_pss"] < GOAL_BYTES,
        "contamination": {
            k: findings["contamination"]["metrics"].get(k) for k in ("dirty", "dirty_by_kind", "partial")
        },
        "data_quality": {
            k: findings["data_quality"]["metrics"].get(k)
            for k in ("sampled_rows", "verified_errors", "exact_duplicates", "redundant_rows")
        },
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    results_path = args.out / "scan_memory.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results[str(args.rows)] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")
    md = [
        "# diagnose --probes contamination,data_quality: peak memory and rows/s",
        "",
        "Each run: a fresh process, empty Arrow cache (so the JSONL is validated and converted too), "
        "10,000 eval items, the machine's 2 cores shared with other jobs (load average at the end shown).",
        "",
        "| rows | JSONL | workers | wall (s) | rows/s | peak PSS, all processes | largest RSS | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in sorted(results.values(), key=lambda e: e["rows"]):
        md.append(
            f"| {e['rows']:,} | {e['train_jsonl_bytes'] / 1e9:.2f} GB | {e['workers']} | {e['wall_s']} | "
            f"{e['rows_per_s']:,} | {e['peak_pss_bytes'] / 1024**3:.2f} GiB | "
            f"{e['peak_rss_largest_process_bytes'] / 1024**3:.2f} GiB | {e['load_average_1min']} |"
        )
    atomic_write_text(args.out / "scan_memory.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

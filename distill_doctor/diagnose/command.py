"""``distill-doctor diagnose``: run every probe the inputs allow and write the three reports."""

from __future__ import annotations

import argparse
from pathlib import Path

from distill_doctor.errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "diagnose",
        help="diagnose a distilled student against its teacher (writes report.json/md/html)",
        description="Run every probe that the inputs allow, in debug order "
        "(data -> capacity -> mismatch -> provenance), and write DIR/report.json, "
        "DIR/report.md and DIR/report.html. Exit 0 when the report was written, 2 on bad input.",
    )
    p.add_argument("--items", required=True, type=Path, help="evaluation items (JSONL, SPEC 'Items')")
    p.add_argument(
        "--student", required=True, type=Path, help="student outputs (JSONL or lm-eval samples_*.jsonl)"
    )
    p.add_argument("--teacher", type=Path, help="teacher outputs (JSONL or lm-eval samples_*.jsonl)")
    p.add_argument("--train", type=Path, help="training data the student was distilled on (JSONL)")
    p.add_argument("--manifest", type=Path, help="provenance manifest (YAML or JSON)")
    p.add_argument("--teacher-model", type=Path, help="teacher model directory (enables model-based probes)")
    p.add_argument("--student-model", type=Path, help="student model directory (enables model-based probes)")
    p.add_argument(
        "--out", required=True, type=Path, help="directory for report.json, report.md, report.html"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for bootstrap and sampling (default 0)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise false-alarm rate (default 0.05)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel workers for code execution and the training-set scans (default: every core)",
    )
    p.add_argument(
        "--probes",
        type=_probe_list,
        default=None,
        help="comma-separated probes to run (e.g. contamination,data_quality); the others are "
        "reported skipped, 'not selected' (default: all)",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="training-set scans on local processes or on Ray Data (RAY_ADDRESS, else a local "
        "cluster; needs the [ray] extra); default local",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars and no summary (for CI)")
    p.set_defaults(func=run)


def _probe_list(text: str) -> tuple[str, ...]:
    from distill_doctor.probes.base import MODES

    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    unknown = [x for x in names if x not in MODES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown probe {', '.join(unknown) or repr(text)}; choose from {', '.join(MODES)}"
        )
    return names


def run(args: argparse.Namespace) -> int:
    from distill_doctor.diagnose.run import DiagnosisRequest, diagnose
    from distill_doctor.diagnose.summary import format_summary
    from distill_doctor.reports.save import save_report

    if not 0 < args.alpha < 1:
        raise InputError(f"--alpha must be between 0 and 1, got {args.alpha}")
    out = args.out
    if out.exists() and not out.is_dir():
        raise InputError("--out must be a directory", path=out)
    given = [args.items, args.student, args.teacher, args.train, args.manifest]
    targets = {(out / name).resolve() for name in ("report.json", "report.md", "report.html")}
    for path in given:
        if path is not None and path.resolve() in targets:
            raise InputError(
                "refusing to overwrite an input file with a report; choose another --out", path=path
            )
    req = DiagnosisRequest(
        items=args.items,
        student=args.student,
        teacher=args.teacher,
        train=args.train,
        manifest=args.manifest,
        teacher_model=args.teacher_model,
        student_model=args.student_model,
        seed=args.seed,
        alpha=args.alpha,
        workers=args.workers,
        quiet=args.quiet,
        probes=args.probes,
        engine=args.engine,
    )
    report = diagnose(req)
    written = save_report(report, out)
    if not args.quiet:
        print(format_summary(report))
        print(f"reports: {', '.join(str(p) for p in written)}")
    return 0

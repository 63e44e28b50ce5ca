"""``distill-doctor diagnose``: run every probe the inputs allow and write the three reports."""

from __future__ import annotations

import argparse
import sys
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
    p.add_argument(
        "--items",
        type=Path,
        help="evaluation items (JSONL, SPEC 'Items'); optional when --teacher/--student are lm-eval "
        "samples_<task>_<ts>.jsonl files, which carry their own documents, targets and task config",
    )
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
    p.add_argument("--workers", type=int, default=None, help="parallel code-execution workers")
    p.add_argument(
        "--mc-rule",
        choices=("acc", "acc_norm"),
        default=None,
        help="multiple-choice lm-eval samples: predict the choice with the highest loglikelihood (acc) "
        "or the highest loglikelihood per character (acc_norm), as lm-eval defines them; default: acc, "
        "or acc_norm when the task logs acc_norm only (gpqa, bbh and musr in the leaderboard)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars and no summary (for CI)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from distill_doctor.diagnose.agreement import warning_lines
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
        mc_rule=args.mc_rule,
    )
    report = diagnose(req)
    for line in warning_lines(report.get("lm_eval_agreement") or {}):
        print(line, file=sys.stderr)  # even under --quiet: the accuracy itself is in doubt
    for role in ("teacher", "student"):
        meta = ((report.get("inputs") or {}).get(role)) or {}
        if meta.get("beyond_items"):
            print(
                f"distill-doctor: note: {role}: {meta['beyond_items']} lm-eval documents are not in the items' "
                f"own log (another --limit?), left out: doc_id {', '.join(map(str, meta['beyond_doc_ids']))}",
                file=sys.stderr,
            )
    written = save_report(report, out)
    if not args.quiet:
        print(format_summary(report))
        print(f"reports: {', '.join(str(p) for p in written)}")
    return 0

"""``distill-doctor diagnose``: run every probe the inputs allow and write the three reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from distill_doctor.errors import InputError
from distill_doctor.paths import check_input_dir, check_input_file, check_output_dir, nonempty_path, resolve
from distill_doctor.vocabulary import ALPHA, MODE_ORDER


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "diagnose",
        help="diagnose a distilled student against its teacher (writes report.json/md/html)",
        description="Run every probe that the inputs allow, in debug order "
        "(data -> capacity -> mismatch -> provenance), and write DIR/report.json, "
        "DIR/report.md and DIR/report.html. Exit 0 when the report was written, 2 on bad input.",
    )
    _input_args(p)
    _model_args(p)
    _run_args(p)
    p.set_defaults(func=run)


def _input_args(p: argparse.ArgumentParser) -> None:
    """The files to diagnose."""
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


def _model_args(p: argparse.ArgumentParser) -> None:
    """The model directories that enable the model-based probes and the speculative block."""
    p.add_argument("--teacher-model", type=Path, help="teacher model directory (enables model-based probes)")
    p.add_argument("--student-model", type=Path, help="student model directory (enables model-based probes)")
    p.add_argument(
        "--spec-temperature",
        type=float,
        default=1.0,
        help="with both models: decoding temperature of the speculative-decoding acceptance "
        "(1 - TV of the two next-token distributions); 0 = greedy (argmax agreement). Default 1",
    )
    p.add_argument(
        "--draft-cost",
        type=float,
        default=None,
        help="with both models: draft/teacher cost ratio c for the expected speculative speedup "
        "(default: measured from one cached decode step of each model on this machine)",
    )


def _run_args(p: argparse.ArgumentParser) -> None:
    """Where the reports go and how the run behaves."""
    p.add_argument(
        "--out", required=True, type=nonempty_path, help="directory for report.json, report.md, report.html"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for bootstrap and sampling (default 0)")
    p.add_argument(
        "--alpha", type=float, default=ALPHA, help=f"family-wise false-alarm rate (default {ALPHA})"
    )
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
    p.add_argument(
        "--mc-rule",
        choices=("acc", "acc_norm"),
        default=None,
        help="multiple-choice lm-eval samples: predict the choice with the highest loglikelihood (acc) "
        "or the highest loglikelihood per character (acc_norm), as lm-eval defines them; default: acc, "
        "or acc_norm when the task logs acc_norm only (gpqa, bbh and musr in the leaderboard)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars and no summary (for CI)")


def _probe_list(text: str) -> tuple[str, ...]:
    """``--probes``: known mode names, each once, in the order given."""
    modes = [m.value for m in MODE_ORDER]
    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    unknown = [x for x in names if x not in modes]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown probe {', '.join(unknown) or repr(text)}; choose from {', '.join(modes)}"
        )
    return names


def run(args: argparse.Namespace) -> int:
    from distill_doctor.diagnose.agreement import warning_lines
    from distill_doctor.diagnose.run import DiagnosisRequest, diagnose
    from distill_doctor.diagnose.summary import format_summary
    from distill_doctor.reports.save import save_report

    _check_args(args)
    out = args.out
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
        spec_temperature=args.spec_temperature,
        draft_cost=args.draft_cost,
        probes=args.probes,
        engine=args.engine,
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


def _check_args(args: argparse.Namespace) -> None:
    """Every flag and path, before minutes of work: inputs readable, --out writable, numbers sane."""
    if not 0 < args.alpha < 1:  # also refuses NaN
        raise InputError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if not args.spec_temperature >= 0 or args.spec_temperature == float("inf"):  # also refuses NaN
        raise InputError(f"--spec-temperature must be a number >= 0, got {args.spec_temperature}")
    if args.draft_cost is not None and not 0 < args.draft_cost < float("inf"):
        raise InputError(f"--draft-cost must be > 0, got {args.draft_cost}")
    given = [p for p in (args.items, args.student, args.teacher, args.train, args.manifest) if p is not None]
    for path in given:
        check_input_file(path)
    for folder in (args.teacher_model, args.student_model):
        if folder is not None:
            check_input_dir(folder)
    check_output_dir(args.out)
    targets = {resolve(args.out / name) for name in ("report.json", "report.md", "report.html")}
    for path in given:
        if resolve(path) in targets:
            raise InputError(
                "refusing to overwrite an input file with a report; choose another --out", path=path
            )

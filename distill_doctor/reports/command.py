"""``distill-doctor report`` (re-render a saved report) and ``distill-doctor gate`` (the CI gate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distill_doctor.atomic import atomic_write_text
from distill_doctor.errors import InputError
from distill_doctor.paths import check_input_file, check_output_file, nonempty_path, resolve
from distill_doctor.reports.text import one_line

FORMATS = ("md", "html", "junit")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="re-render a saved report.json as Markdown, HTML or JUnit XML",
        description="Re-render a saved report.json. Writes to stdout unless --out is given. "
        "Exit 0 on success, 2 when the file is missing, not JSON or not a valid report.",
    )
    p.add_argument("report", type=Path, help="a report.json written by `distill-doctor diagnose`")
    p.add_argument("--format", choices=FORMATS, default="md", help="output format (default: md)")
    p.add_argument("--out", type=nonempty_path, help="write here (atomically) instead of stdout")
    p.set_defaults(func=run_report)

    g = subparsers.add_parser(
        "gate",
        help="fail CI when a report breaks a policy or regressed against a baseline",
        description="Check report.json against a policy (TOML; default: fail on any `fail` "
        "verdict) and, with --baseline, against an earlier report. Exit 0 when every check "
        "holds, 1 when one fails, 2 on error (missing file, bad JSON, invalid report, bad policy). "
        "See docs/ci.md.",
    )
    g.add_argument("report", type=Path, help="the report.json to check")
    g.add_argument("--policy", type=Path, help="policy file (TOML); default: the shipped default_policy.toml")
    g.add_argument("--baseline", type=Path, help="an earlier report.json to compare against")
    g.add_argument("--junit", type=nonempty_path, help="also write the checks as JUnit XML here")
    g.add_argument("-v", "--verbose", action="store_true", help="print every check, not only the failed ones")
    g.set_defaults(func=run_gate)


def run_report(args: argparse.Namespace) -> int:
    from distill_doctor.reports.html import render_html
    from distill_doctor.reports.junit import render_junit
    from distill_doctor.reports.markdown import render_markdown
    from distill_doctor.reports.schema import load_report

    check_input_file(args.report)
    if args.out is not None:
        if resolve(args.out) == resolve(args.report):
            raise InputError(
                "refusing to overwrite the report with its rendering; choose another --out", path=args.out
            )
        check_output_file(args.out)
    report = load_report(args.report)
    render = {"md": render_markdown, "html": render_html, "junit": render_junit}[args.format]
    text = render(report)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    atomic_write_text(args.out, text)
    return 0


def run_gate(args: argparse.Namespace) -> int:
    from distill_doctor.reports.gate import evaluate, same_items
    from distill_doctor.reports.junit import Case, junit_xml
    from distill_doctor.reports.policy import load_policy
    from distill_doctor.reports.schema import load_report

    inputs = [p for p in (args.report, args.baseline, args.policy) if p is not None]
    for path in inputs:
        try:
            check_input_file(path)  # a FIFO would block, a symlink loop cannot be opened
        except InputError as err:
            what = "policy " if path is args.policy else ""
            raise InputError(what + err.message, path=path) from None
    if args.junit is not None:
        if resolve(args.junit) in {resolve(p) for p in inputs}:
            raise InputError("refusing to overwrite an input with the JUnit file", path=args.junit)
        check_output_file(args.junit)
    report = load_report(args.report)
    baseline = load_report(args.baseline) if args.baseline is not None else None
    if baseline is not None and (why := same_items(report, baseline)) is not None:
        raise InputError(
            f"refusing the baseline: {why}", path=args.baseline, field="items_fingerprint.sha256"
        )
    policy = load_policy(args.policy)
    result = evaluate(report, policy, baseline)

    for check in result.checks:
        if check.status == "failed":
            print(f"FAIL  {one_line(check.name)}: {one_line(check.reason)}")
        elif args.verbose:
            mark = "ok" if check.status == "passed" else "n/a"
            print(f"{mark:4}  {one_line(check.name)}: {one_line(check.reason)}")
    n_failed, n_skipped = len(result.failed), sum(c.status == "skipped" for c in result.checks)
    against = f"; baseline {args.baseline}" if args.baseline is not None else ""
    verdict = "FAILED" if n_failed else "passed"
    print(
        f"gate {verdict}: {n_failed} of {len(result.checks)} checks failed, {n_skipped} not applicable "
        f"(policy {policy.source}{against})"
    )
    if args.junit is not None:
        cases = [
            Case(
                classname=f"distill_doctor.gate.{c.group}",
                name=c.name,
                status=c.status,
                message=c.reason,
                output=c.reason if c.status == "passed" else "",
            )
            for c in result.checks
        ]
        atomic_write_text(args.junit, junit_xml("distill-doctor gate", cases))
    return 1 if n_failed else 0

"""``distill-doctor demo``: the main job on the bundled model organisms.

For every organism (a folder with ``train.jsonl``, ``provenance.yaml`` and a student ``model/``):
evaluate the teacher and the student with lm-evaluation-harness on the shared items, or on the
organism's own ``items.jsonl`` where it has one (fresh outputs, no committed ones), diagnose, and write the three reports. Prints a one-screen table
(organism, accuracies, the student's draft acceptance rate for speculative decoding, planted
failure, what the diagnosis found) and where the HTML reports are.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from distill_doctor.atomic import atomic_write_text
from distill_doctor.organisms import Organism, discover, planted_mode
from distill_doctor.paths import check_output_dir, nonempty_path
from distill_doctor.vocabulary import Verdict

DEFAULT_FIXTURES = Path("fixtures/organisms")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="eval -> diagnose -> report on the bundled model organisms (the README's main job)",
        description="Evaluate each bundled model organism's teacher and student with "
        "lm-evaluation-harness, diagnose it, and write report.json/md/html per organism.",
    )
    p.add_argument(
        "--fixtures",
        type=Path,
        default=DEFAULT_FIXTURES,
        help="folder of the model organisms (default: fixtures/organisms in this checkout)",
    )
    p.add_argument(
        "--out", type=nonempty_path, default=Path("out/demo"), help="where the reports go (default out/demo)"
    )
    p.add_argument("--organisms", nargs="*", default=None, help="only these organisms (default: all)")
    p.add_argument(
        "--no-eval",
        action="store_true",
        help="diagnose the committed outputs instead of re-evaluating the models with lm-eval",
    )
    p.add_argument(
        "--closed-loop",
        metavar="ORGANISM",
        default=None,
        help="instead: diagnose ORGANISM, apply its guardrail (regenerate the data with verifier "
        "rejection, retrain), re-diagnose and show the verdict change (e.g. teacher_error_transfer)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for evaluation and the diagnosis (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress output; only the final table")
    p.set_defaults(func=run)


def evaluate_outputs(organisms: list[Organism], out: Path, *, seed: int, quiet: bool) -> None:
    """Fresh teacher and student outputs for every organism on its items, via lm-eval; each model
    evaluated once per items file."""
    from distill_doctor.data import load_items
    from distill_doctor.produce.lm_eval_runner import load_hflm, run_items, write_outputs

    done: dict[tuple[Path, Path], Path] = {}
    for org in organisms:
        for role, model_dir in (("teacher", org.teacher_model), ("student", org.student_model)):
            target = out / org.name / f"{role}.jsonl"
            key = (model_dir.resolve(), org.items.resolve())
            if key in done:
                atomic_write_text(target, done[key].read_text(encoding="utf-8"))
                continue
            t0 = time.perf_counter()
            lm = load_hflm(model_dir, batch_size=64, quiet=True)
            result = run_items(lm, load_items(org.items), items_path=org.items, seed=seed, quiet=True)
            write_outputs(target, result.outputs)
            done[key] = target
            if not quiet:
                print(
                    f"  eval {org.name}/{role}: {len(result.outputs)} outputs in {time.perf_counter() - t0:.1f} s"
                )


def run(args: argparse.Namespace) -> int:
    from distill_doctor.diagnose.run import DiagnosisRequest, diagnose
    from distill_doctor.reports.save import save_report

    fixtures: Path = args.fixtures
    if args.closed_loop:
        from distill_doctor.closed_loop import run_closed_loop

        loop_out = check_output_dir(args.out if args.out != Path("out/demo") else Path("out/closed-loop"))
        return run_closed_loop(fixtures, args.closed_loop, loop_out, seed=args.seed, quiet=args.quiet)
    organisms = discover(fixtures, args.organisms)
    out: Path = check_output_dir(args.out)  # before minutes of evaluation
    start = time.perf_counter()
    if not args.no_eval:
        if not args.quiet:
            print(f"evaluating {len(organisms)} organisms with lm-evaluation-harness ...")
        evaluate_outputs(organisms, out, seed=args.seed, quiet=args.quiet)
    rows = []
    for org in organisms:
        source = org.folder if args.no_eval else out / org.name
        req = DiagnosisRequest(
            items=org.items,
            teacher=source / "teacher.jsonl",
            student=source / "student.jsonl",
            train=org.folder / "train.jsonl",
            manifest=org.folder / "provenance.yaml",
            seed=args.seed,
            quiet=True,
        )
        report = diagnose(req)
        report["speculative"] = draft_readiness(org, req, seed=args.seed)
        save_report(report, out / org.name)
        failing = [f["mode"] for f in report["findings"] if f["verdict"] == Verdict.FAIL]
        warning = [f["mode"] for f in report["findings"] if f["verdict"] == Verdict.WARN]
        rows.append((org.name, report, failing, warning))
        if not args.quiet:
            print(f"  diagnosed {org.name}: primary suspect {report['primary_suspect']}")
    print(_table(rows))
    print(
        f"\nreports: {out}/<organism>/report.html (also report.md, report.json); "
        f"{time.perf_counter() - start:.0f} s in all"
    )
    summary = {
        name: {"planted": planted_mode(name), "primary_suspect": r["primary_suspect"], "fail": f, "warn": w}
        for name, r, f, w in rows
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return 0


def draft_readiness(org: Organism, req, *, seed: int) -> dict:
    """The report's ``speculative`` block for an organism: how good a draft its student is for its
    teacher, along the outputs just diagnosed (what ``diagnose --teacher-model --student-model``
    adds, without rerunning the other model-based probes)."""
    from distill_doctor.data import load_items, load_outputs
    from distill_doctor.speculative.report import speculative_block

    items = load_items(req.items)
    student = load_outputs(req.student, items).outputs
    teacher = load_outputs(req.teacher, items).outputs
    return speculative_block(org.teacher_model, org.student_model, items, student, teacher, seed=seed)


def _table(rows) -> str:
    head = (
        f"{'organism':<24} {'teacher':>8} {'student':>8} {'accept':>7}  {'planted':<24} {'primary suspect':<24} "
        f"{'as planted':<10}  other fails / warns"
    )
    lines = [head, "-" * len(head)]
    for name, report, failing, warning in rows:
        acc = report["accuracy"]
        t = "n/a" if acc.get("teacher") is None else f"{100 * acc['teacher']:.0f}%"
        s = "n/a" if acc.get("student") is None else f"{100 * acc['student']:.0f}%"
        rate = (report.get("speculative") or {}).get("acceptance_rate")
        a = "n/a" if rate is None else f"{100 * rate:.1f}%"
        suspect = report["primary_suspect"] or "none"
        planted = planted_mode(name)
        found = "-" if planted is None else ("yes" if planted == suspect else "no")
        rest = [m for m in failing if m != report["primary_suspect"]]
        extra = ", ".join(rest + [f"{m} (warn)" for m in warning]) or "-"
        lines.append(
            f"{name:<24} {t:>8} {s:>8} {a:>7}  {planted or '-':<24} {suspect:<24} {found:<10}  {extra}"
        )
    return "\n".join(lines)

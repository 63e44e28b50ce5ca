"""The README's main job, ``distill-doctor demo``, on the committed model organisms.

``--no-eval`` diagnoses the committed outputs (no lm-eval run), so this is the diagnosis half of the
main job exactly as a user runs it: every organism whose planted failure is a valid positive is
named as the primary suspect, and the control is clean. The lm-eval half is tested on tiny models
in ``test_eval_command.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from distill_doctor.cli import main

ORG = Path(__file__).resolve().parents[1] / "fixtures" / "organisms"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (ORG / "items.jsonl").exists(), reason="organisms not built"),
]

# organism -> the mode it was planted with (``clean`` is the control)
PLANTED = {
    "capacity_gap": "capacity_gap",
    "exposure_bias": "exposure_bias",
    "superficial_imitation": "superficial_imitation",
    "teacher_error_transfer": "teacher_error_transfer",
    "contamination": "contamination",
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One run of the main job: (exit code, output folder, the table it printed)."""
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--no-eval", "--fixtures", str(ORG), "--out", str(out), "--quiet"])
    return code, out, printed.getvalue()


def test_demo_writes_every_organisms_reports(demo_run):
    code, out, _ = demo_run
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    built = {p.name for p in ORG.iterdir() if (p / "model" / "config.json").is_file()}
    assert set(summary) == built
    for name in built:
        report = json.loads((out / name / "report.json").read_text())
        own = ORG / name / "items.jsonl"  # exposure_bias has its own (sorting) items
        n_items = len((own if own.exists() else ORG / "items.jsonl").read_text().splitlines())
        assert report["schema_version"] == 1 and report["accuracy"]["n"] == n_items
        assert 0.5 < report["speculative"]["acceptance_rate"] <= 1  # the student as a draft model
        assert (out / name / "report.md").read_text().strip()
        assert "<html" in (out / name / "report.html").read_text().lower()


def test_the_control_has_no_fail(demo_run):
    _, out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clean"]["primary_suspect"] is None
    assert summary["clean"]["fail"] == []


@pytest.mark.parametrize("organism", sorted(PLANTED))
def test_each_planted_failure_is_the_primary_suspect(demo_run, organism):
    _, out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary[organism]["primary_suspect"] == PLANTED[organism], summary[organism]


def test_the_table_names_the_planted_mode_and_whether_it_was_found(demo_run):
    _, _, table = demo_run
    lines = {line.split()[0]: line for line in table.splitlines() if line and line.split()[0] in PLANTED}
    assert set(lines) == set(PLANTED)
    assert " accept " in table.splitlines()[0]
    for name, line in lines.items():
        assert f"{PLANTED[name]:<24}" in line and " yes " in line, line


def test_the_on_policy_twin_of_the_exposure_organism_does_not_fail(tmp_path):
    """Its on-policy twin (GKD on its own greedy outputs, from the same start) derails less: the same
    diagnosis of its committed outputs finds no exposure-bias failure, and a smaller length effect."""
    d = ORG / "exposure_bias"
    reports = {}
    for twin in ("student", "on_policy_student"):
        args = ["diagnose", "--items", str(d / "items.jsonl"), "--teacher", str(d / "teacher.jsonl")]
        args += ["--student", str(d / f"{twin}.jsonl"), "--out", str(tmp_path / twin), "--quiet"]
        with contextlib.redirect_stdout(io.StringIO()):
            main(args)
        report = json.loads((tmp_path / twin / "report.json").read_text())
        reports[twin] = {f["mode"]: f for f in report["findings"]}["exposure_bias"]
    off, on = reports["student"], reports["on_policy_student"]
    assert off["verdict"] == "fail" and on["verdict"] != "fail", (off["summary"], on["summary"])
    assert on["metrics"]["did_degeneration"] < off["metrics"]["did_degeneration"]

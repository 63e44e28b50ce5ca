"""The diagnose command end to end through the real CLI entry point (no models needed)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from distill_doctor.cli import main
from distill_doctor.probes.base import MODES, STAGE_OF_MODE


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def arithmetic_run(tmp_path: Path, n: int = 120, seed: int = 0) -> dict[str, Path]:
    """A clean run: teacher right ~90%, student right ~85%, independent wrong answers."""
    rng = random.Random(seed)
    items, teacher, student = [], [], []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        items.append(
            {
                "id": f"q{i}",
                "prompt": f"What is {a}+{b}?",
                "reference": a + b,
                "tags": {"domain": "math", "difficulty": 1 + i % 3},
            }
        )
        t_ans = a + b if rng.random() < 0.9 else a + b + rng.randint(1, 50)
        s_ans = a + b if rng.random() < 0.85 else a + b - rng.randint(1, 50)
        teacher.append({"id": f"q{i}", "output": f"{a}+{b}={t_ans}\n#### {t_ans}"})
        student.append({"id": f"q{i}", "output": f"{a}+{b}={s_ans}\n#### {s_ans}"})
    return {
        "items": write_jsonl(tmp_path / "items.jsonl", items),
        "teacher": write_jsonl(tmp_path / "teacher.jsonl", teacher),
        "student": write_jsonl(tmp_path / "student.jsonl", student),
    }


def diagnose(items: Path, student: Path, out: Path, teacher: Path | None = None) -> int:
    """Run the real CLI entry point: ``distill-doctor diagnose ... --quiet``; returns its exit code."""
    args = ["diagnose", "--items", str(items), "--student", str(student), "--out", str(out), "--quiet"]
    if teacher is not None:
        args += ["--teacher", str(teacher)]
    return main(args)


def test_diagnose_writes_three_reports_in_spec_shape(tmp_path):
    paths = arithmetic_run(tmp_path)
    out = tmp_path / "report"
    code = diagnose(paths["items"], paths["student"], out, teacher=paths["teacher"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().strip()
    assert "<html" in (out / "report.html").read_text().lower()
    assert report["schema_version"] == 1
    assert report["debug_order"] == ["data", "capacity", "mismatch", "provenance"]
    assert report["accuracy"]["n"] == 120
    assert 0.7 < report["accuracy"]["teacher"] <= 1.0
    assert [f["mode"] for f in report["findings"]] == list(MODES)
    for f in report["findings"]:
        assert f["stage"] == STAGE_OF_MODE[f["mode"]]
        assert f["verdict"] in ("pass", "warn", "fail", "skipped")
    by_mode = {f["mode"]: f for f in report["findings"]}
    # No --train / --manifest: those probes are skipped and say which flag they need.
    assert by_mode["data_quality"]["verdict"] == "skipped"
    assert "--train" in by_mode["data_quality"]["skipped_reason"]
    assert by_mode["provenance"]["verdict"] == "skipped"
    assert "--manifest" in by_mode["provenance"]["skipped_reason"]
    # A clean run comes out clean.
    assert report["primary_suspect"] is None
    assert all(f["verdict"] != "fail" for f in report["findings"])
    counts = report["failure_table"]["counts"]
    assert sum(counts.values()) == 120
    assert report["items_fingerprint"]["n"] == 120 and len(report["items_fingerprint"]["sha256"]) == 64


def test_gate_compares_only_reports_on_the_same_items(tmp_path, capsys):
    """A baseline diagnosed from the same items in another order is accepted; one on other items is
    refused with exit 2 (issue 13: it was compared and passed)."""
    for name in "abc":
        (tmp_path / name).mkdir()
    first, other = arithmetic_run(tmp_path / "a"), arithmetic_run(tmp_path / "c", seed=5)
    rows = first["items"].read_text().splitlines()
    random.Random(1).shuffle(rows)
    shuffled = tmp_path / "b" / "items.jsonl"
    shuffled.write_text("\n".join(rows) + "\n")
    runs = {"a": first["items"], "b": shuffled, "c": other["items"]}
    for name, items in runs.items():
        paths = first if name != "c" else other
        assert diagnose(items, paths["student"], tmp_path / f"out-{name}", teacher=paths["teacher"]) == 0
    reports = {name: str(tmp_path / f"out-{name}" / "report.json") for name in runs}
    capsys.readouterr()
    assert main(["gate", reports["b"], "--baseline", reports["a"]]) == 0
    assert main(["gate", reports["c"], "--baseline", reports["a"]]) == 2
    assert "other items" in capsys.readouterr().err


def test_student_only_run_skips_teacher_probes(tmp_path):
    paths = arithmetic_run(tmp_path, n=30)
    out = tmp_path / "r"
    assert diagnose(paths["items"], paths["student"], out) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"]["teacher"] is None
    assert report["failure_table"] is None
    skipped = {f["mode"] for f in report["findings"] if f["verdict"] == "skipped"}
    assert {"teacher_error_transfer", "capacity_gap", "superficial_imitation"} <= skipped


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        (lambda p: p["student"].write_text('{"id": "q0", "output": "1"}\n{not json}\n'), "student.jsonl:2"),
        (lambda p: p["items"].write_text('{"id": "a", "prompt": 3, "reference": 1}\n'), "prompt"),
        (lambda p: p["student"].write_text('{"id": "nope", "output": "1"}\n'), "nope"),
    ],
)
def test_bad_input_exits_2_with_file_line_field(tmp_path, capsys, corrupt, expected):
    paths = arithmetic_run(tmp_path, n=10)
    corrupt(paths)
    code = diagnose(paths["items"], paths["student"], tmp_path / "r", teacher=paths["teacher"])
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_refuses_to_overwrite_an_input(tmp_path, capsys):
    paths = arithmetic_run(tmp_path, n=10)
    report_named_input = tmp_path / "report.json"
    paths["teacher"].rename(report_named_input)
    before = report_named_input.read_bytes()
    code = diagnose(paths["items"], paths["student"], tmp_path, teacher=report_named_input)
    assert code == 2
    assert report_named_input.read_bytes() == before


def test_a_crashing_probe_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    from distill_doctor.diagnose import run as diagnosis
    from distill_doctor.probes.base import Probe

    def broken(inputs):
        raise ZeroDivisionError("division by zero")

    probes = tuple(
        Probe(mode=p.mode, needs=p.needs, run=broken) if p.mode == "capacity_gap" else p
        for p in diagnosis.PROBES
    )
    monkeypatch.setattr(diagnosis, "PROBES", probes)
    monkeypatch.setattr(diagnosis.run_probes, "__defaults__", (probes,))
    paths = arithmetic_run(tmp_path, n=40)
    out = tmp_path / "r"
    code = diagnose(paths["items"], paths["student"], out, teacher=paths["teacher"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    capacity = next(f for f in report["findings"] if f["mode"] == "capacity_gap")
    assert capacity["verdict"] == "skipped" and "ZeroDivisionError" in capacity["skipped_reason"]
    assert "capacity_gap probe error" in capsys.readouterr().err
    assert next(f for f in report["findings"] if f["mode"] == "exposure_bias")["verdict"] == "pass"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet,tty", [(False, True), (True, True), (False, False)])
def test_progress_only_on_a_terminal_and_not_quiet(tmp_path, monkeypatch, quiet, tty):
    """Issue 13: 10k items were silent for 30-60 s. The bar shows each step on a terminal once
    the run has taken DELAY_S seconds (0 here); --quiet and a non-terminal stderr stay silent."""
    from distill_doctor.diagnose import progress

    paths = arithmetic_run(tmp_path, n=40)
    err = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    monkeypatch.setattr("sys.stderr", err)
    args = ["diagnose", "--items", str(paths["items"]), "--student", str(paths["student"])]
    args += ["--teacher", str(paths["teacher"]), "--out", str(tmp_path / "r")] + (
        ["--quiet"] if quiet else []
    )
    assert main(args) == 0
    shown = err.getvalue()
    if quiet or not tty:
        assert "diagnose" not in shown and "capacity_gap" not in shown
    else:
        assert "verifying the student" in shown and "capacity_gap" in shown and "step" in shown

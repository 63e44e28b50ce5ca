"""Reports and the console say which isolation ran the code items (issue 18)."""

from __future__ import annotations

import json

from distill_doctor.cli import main
from distill_doctor.verify import containment

TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def test_report_and_console_name_the_isolation(tmp_path, capsys):
    items, student = [], []
    for i in range(6):
        items.append(
            {
                "id": f"c{i}",
                "prompt": "def add(a, b):\n",
                "verifier": "code",
                "tests": TESTS,
                "entry_point": "add",
                "tags": {"domain": "code"},
            }
        )
        body = "    return a + b\n" if i % 2 else "    return a - b\n"
        student.append({"id": f"c{i}", "output": body})
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    (tmp_path / "student.jsonl").write_text("".join(json.dumps(r) + "\n" for r in student))
    out = tmp_path / "r"
    code = main(
        [
            "diagnose",
            "--items",
            str(tmp_path / "items.jsonl"),
            "--student",
            str(tmp_path / "student.jsonl"),
            "--out",
            str(out),
        ]
    )
    assert code in (0, 1)
    report = json.loads((out / "report.json").read_text())
    info = containment()
    assert report["code_sandbox"] == {"isolation": info["isolation"], "detail": info["isolation_detail"]}
    assert report["accuracy"]["student"] == 0.5
    assert f"Code items ran in the sandbox: {info['isolation_detail']}" in (out / "report.md").read_text()
    assert "Code items ran in the sandbox" in (out / "report.html").read_text()
    assert f"6 code outputs run in the sandbox: {info['isolation_detail']}" in capsys.readouterr().err

"""report.json schema_version 1: the schema, its validation, loading and saving."""

from __future__ import annotations

import json
import math

import pytest
from sample_report import poisoned_report, sample_report, set_verdict

from distill_doctor.errors import InputError
from distill_doctor.probes.base import Finding, StatTest, skipped
from distill_doctor.reports.save import REPORT_FILES, report_json, save_report, strict_json
from distill_doctor.reports.schema import (
    consistency_errors,
    load_report,
    load_schema,
    schema_errors,
    validate_report,
)


def test_schema_is_draft_2020_12_and_itself_valid():
    import jsonschema

    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_sample_and_poisoned_reports_are_valid():
    assert schema_errors(sample_report()) == []
    assert schema_errors(poisoned_report()) == []


def _finding(report, mode):
    return next(f for f in report["findings"] if f["mode"] == mode)


BREAKERS = {
    "no schema_version": (lambda r: r.pop("schema_version"), "(top level)"),
    "schema_version 2": (lambda r: r.update(schema_version=2), "schema_version"),
    "unknown verdict": (lambda r: _finding(r, "capacity_gap").update(verdict="bad"), "findings[2].verdict"),
    "stage does not match mode": (
        lambda r: _finding(r, "exposure_bias").update(stage="data"),
        "findings[4].stage",
    ),
    "accuracy above 1": (lambda r: r["accuracy"].update(student=1.2), "accuracy.student"),
    "evidence without id": (
        lambda r: _finding(r, "capacity_gap")["evidence"][0].pop("id"),
        "findings[2].evidence[0]",
    ),
    "p-value above 1": (
        lambda r: _finding(r, "capacity_gap").update(p_adjusted=1.5),
        "findings[2].p_adjusted",
    ),
    "boolean as a count": (lambda r: _finding(r, "capacity_gap").update(n=True), "findings[2].n"),
    "interval of three": (
        lambda r: _finding(r, "capacity_gap")["tests"][0].update(ci=[0, 1, 2]),
        "findings[2].tests[0].ci",
    ),
    "failure table without a category": (
        lambda r: r["failure_table"]["counts"].pop("both_right"),
        "failure_table.counts",
    ),
    "findings not a list": (lambda r: r.update(findings={}), "findings"),
    "metrics not an object": (
        lambda r: _finding(r, "capacity_gap").update(metrics=[1]),
        "findings[2].metrics",
    ),
    "sample passed not a boolean": (
        lambda r: r["samples"]["gsm-5"].update(student_passed="yes"),
        "samples.gsm-5.student_passed",
    ),
}


@pytest.mark.parametrize("name", sorted(BREAKERS))
def test_schema_rejects_broken_reports_at_the_right_place(name):
    breaker, where = BREAKERS[name]
    report = sample_report()
    breaker(report)
    errors = schema_errors(report)
    assert errors, name
    assert where in [w for w, _ in errors], errors


def test_schema_errors_say_what_was_wrong_and_where():
    report = sample_report()
    _finding(report, "capacity_gap").update(verdict="bad")
    report["accuracy"].update(student=1.2)
    errors = schema_errors(report)
    assert [w for w, _ in errors] == ["accuracy.student", "findings[2].verdict"]  # sorted by path
    assert "1.2 is greater than the maximum of 1" in errors[0][1]
    assert "'bad' is not one of" in errors[1][1]


def test_extra_fields_are_welcome():
    report = sample_report(extra={"anything": [1, 2]})
    _finding(report, "capacity_gap")["new_field"] = "x"
    assert schema_errors(report) == []


def test_consistency_of_primary_suspect_and_modes():
    assert consistency_errors(sample_report()) == []
    report = sample_report(primary_suspect=None)
    assert consistency_errors(report) == [("primary_suspect", "is null but a finding fails")]
    report = sample_report(primary_suspect="capacity_gap")  # warns, does not fail
    assert consistency_errors(report)[0][0] == "primary_suspect"
    report = set_verdict(sample_report(), "exposure_bias", "fail")
    report["primary_suspect"] = "exposure_bias"  # teacher_error_transfer (data) fails earlier
    assert "debug order" in consistency_errors(report)[0][1]
    report = sample_report()
    report["findings"].append(dict(report["findings"][0]))
    assert consistency_errors(report)[0] == ("findings[7].mode", "mode 'data_quality' appears twice")


def test_the_probe_contract_builds_valid_findings():
    """Finding.to_dict() (probes/base.py) plus p_adjusted must satisfy the schema."""
    found = Finding(
        mode="capacity_gap",
        verdict="fail",
        summary="gap grows with difficulty",
        metrics={"did": {"estimate": 0.2, "ci": (0.05, 0.35)}},
        evidence=[{"id": "a", "why": "b"}],
        guardrail="distill-doctor train sft --curriculum difficulty",
        tests=[StatTest(name="bootstrap", n=40, p_value=0.01, effect=0.2, ci=(0.05, 0.35))],
        p_value=0.01,
        n=40,
    )
    findings = [found.to_dict(), skipped("provenance", "needs --manifest").to_dict()]
    for entry in findings:
        entry["p_adjusted"] = entry["p_value"]
    report = sample_report(findings=strict_json(findings), primary_suspect="capacity_gap", failure_table=None)
    validate_report(report)


def test_validate_report_raises_input_error_naming_file_and_field():
    report = sample_report()
    _finding(report, "capacity_gap")["verdict"] = "maybe"
    with pytest.raises(InputError) as err:
        validate_report(report, path="run/report.json")
    assert str(err.value).startswith("run/report.json: field 'findings[2].verdict': not a valid report.json")


def test_load_report_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_report(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1,\n "findings": [,]}')
    with pytest.raises(InputError) as err:
        load_report(bad)
    assert str(err.value).startswith(f"{bad}:2: invalid JSON")
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        load_report(bad)
    bad.write_text(json.dumps(sample_report(schema_version=2)))
    with pytest.raises(InputError, match="unsupported schema_version 2"):
        load_report(bad)
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(InputError, match="not UTF-8"):
        load_report(bad)
    with pytest.raises(InputError, match="is a directory"):
        load_report(tmp_path)


def test_report_json_is_strict_and_round_trips():
    report = sample_report()
    _finding(report, "data_quality")["metrics"]["ratio"] = math.nan
    _finding(report, "data_quality")["metrics"]["big"] = -math.inf
    text = report_json(report)
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert _finding(back, "data_quality")["metrics"]["ratio"] is None
    assert back["accuracy"] == report["accuracy"]
    poisoned = poisoned_report()
    text = report_json(poisoned)
    text.encode("utf-8")  # a lone surrogate is kept as an escape, not a crash
    assert json.loads(text) == strict_json(poisoned)


def test_strict_json_converts_numpy_values():
    np = pytest.importorskip("numpy")
    value = strict_json(
        {"a": np.float64(0.5), "b": np.int64(3), "c": np.array([1.0, np.nan]), "d": np.bool_(True)}
    )
    assert value == {"a": 0.5, "b": 3, "c": [1.0, None], "d": True}
    assert type(value["b"]) is int and type(value["d"]) is bool


def test_save_report_writes_three_files_atomically(tmp_path):
    out = tmp_path / "run"
    paths = save_report(sample_report(), out)
    assert [p.name for p in paths] == list(REPORT_FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)  # no temporary files left
    assert load_report(out / "report.json") == json.loads(report_json(sample_report()))
    assert (out / "report.md").read_text().startswith("# distill-doctor report")
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_save_report_refuses_an_invalid_report_and_writes_nothing(tmp_path):
    report = sample_report()
    report["accuracy"]["n"] = -1
    with pytest.raises(ValueError, match="accuracy.n"):
        save_report(report, tmp_path / "run")
    assert not (tmp_path / "run").exists()

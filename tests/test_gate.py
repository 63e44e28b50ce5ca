"""The CI gate and the report command, through the real CLI: exit 0 pass, 1 fail, 2 error."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from sample_report import poisoned_report, sample_report, set_verdict

from distill_doctor.cli import main
from distill_doctor.reports.gate import evaluate, resolve, two_proportion_p
from distill_doctor.reports.policy import load_policy, parse_policy


def write(path, report):
    path.write_text(json.dumps(report))
    return str(path)


def finding(report, mode):
    return next(f for f in report["findings"] if f["mode"] == mode)


def gate(capsys, *argv):
    code = main(["gate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean_report():
    """The sample report with nothing failing (teacher_error_transfer only warns)."""
    return set_verdict(sample_report(), "teacher_error_transfer", "warn")


def test_default_policy_fails_on_fail_and_allows_warn(tmp_path, capsys, clean_report):
    code, out, _ = gate(capsys, write(tmp_path / "r.json", sample_report()))
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0].startswith(
        "FAIL  verdict teacher_error_transfer: fail exceeds max_verdict warn: The student copies"
    )
    assert lines[-1].startswith(
        "gate FAILED: 1 of 7 checks failed, 1 not applicable (policy (default) default_policy.toml"
    )
    assert len(lines) == 2
    code, out, _ = gate(capsys, write(tmp_path / "ok.json", clean_report))
    assert code == 0 and out.startswith("gate passed: 0 of 7 checks failed")


def policy_file(tmp_path, text, name="policy.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_policy_max_verdict_rules_accuracy_and_required(tmp_path, capsys, clean_report):
    report = write(tmp_path / "r.json", clean_report)
    strict = policy_file(tmp_path, '[modes.capacity_gap]\nmax_verdict = "pass"\n')
    code, out, _ = gate(capsys, report, "--policy", strict)
    assert code == 1 and "FAIL  verdict capacity_gap: warn exceeds max_verdict pass" in out

    rules = policy_file(
        tmp_path,
        '[[rules]]\nmode = "capacity_gap"\nmetric = "did.estimate"\nmax = 0.2\n'
        '[[rules]]\nmode = "teacher_error_transfer"\nmetric = "kappa_ci.0"\nmin = 0.1\n'
        '[[rules]]\nmode = "capacity_gap"\nmetric = "p_adjusted"\nmax = 0.5\n'
        "[accuracy]\nmin_student = 0.5\nmax_gap = 0.1\nmin_n = 100\n",
    )
    assert gate(capsys, report, "--policy", rules)[0] == 0

    tight = policy_file(
        tmp_path, '[[rules]]\nmode = "capacity_gap"\nmetric = "did.estimate"\nmax = 0.1\n', "t.toml"
    )
    code, out, _ = gate(capsys, report, "--policy", tight)
    assert code == 1 and "FAIL  rules[0] capacity_gap.did.estimate: 0.18 is above the maximum 0.1" in out

    acc = policy_file(tmp_path, "[accuracy]\nmin_student = 0.9\n", "a.toml")
    code, out, _ = gate(capsys, report, "--policy", acc)
    assert code == 1 and "FAIL  accuracy.student: 81.5% is below the minimum 90.0%" in out

    required = policy_file(tmp_path, "[modes.provenance]\nrequired = true\n", "req.toml")
    code, out, _ = gate(capsys, report, "--policy", required)
    assert code == 1 and "FAIL  verdict provenance: required mode was skipped (needs --manifest)" in out


def test_missing_metric_fails_unless_told_otherwise(tmp_path, capsys, clean_report):
    report = write(tmp_path / "r.json", clean_report)
    rule = '[[rules]]\nmode = "provenance"\nmetric = "teacher.revision_known"\nmin = 1\n'
    code, out, _ = gate(capsys, report, "--policy", policy_file(tmp_path, rule))
    assert code == 1 and "metric not in the report (verdict skipped); if_missing = 'fail'" in out
    lenient = policy_file(tmp_path, rule + 'if_missing = "pass"\n', "l.toml")
    assert gate(capsys, report, "--policy", lenient)[0] == 0


def test_hostile_text_cannot_reach_the_terminal_raw(tmp_path, capsys):
    code, out, _ = gate(capsys, write(tmp_path / "r.json", poisoned_report()), "-v")
    assert code == 1
    assert "\x1b" not in out and "\x00" not in out and "\u202e" not in out
    lines = out.splitlines()
    assert len(lines) == 8 and lines[-1].startswith("gate FAILED: 1 of 7 checks failed")
    assert "<script>alert(1)</script>" in lines[1]  # shown, as inert text


def test_baseline_verdict_regression(tmp_path, capsys, clean_report):
    old = set_verdict(sample_report(), "teacher_error_transfer", "pass")
    new = clean_report  # teacher_error_transfer: pass -> warn, everything else unchanged
    code, out, _ = gate(
        capsys, write(tmp_path / "new.json", new), "--baseline", write(tmp_path / "old.json", old)
    )
    assert code == 1
    assert (
        out.splitlines()[0]
        == "FAIL  baseline verdict teacher_error_transfer: verdict got worse: pass -> warn"
    )
    code, _, _ = gate(capsys, write(tmp_path / "same.json", old), "--baseline", tmp_path / "old.json")
    assert code == 0
    # an improvement passes
    assert gate(capsys, tmp_path / "old.json", "--baseline", tmp_path / "new.json")[0] == 0


def test_baseline_accuracy_uses_a_two_proportion_test(tmp_path, capsys, clean_report):
    old = json.loads(json.dumps(clean_report))
    old["accuracy"]["student"] = 0.83  # 81.5% vs 83.0% on 130 items: noise
    baseline = write(tmp_path / "old.json", old)
    code, out, _ = gate(capsys, write(tmp_path / "new.json", clean_report), "--baseline", baseline, "-v")
    assert code == 0 and "ok    baseline accuracy.student: 83.0% (n=130) -> 81.5% (n=130)" in out
    old["accuracy"]["student"] = 0.95  # 95% -> 81.5%: p < 0.001
    write(tmp_path / "old.json", old)
    code, out, _ = gate(capsys, tmp_path / "new.json", "--baseline", baseline)
    assert code == 1 and "FAIL  baseline accuracy.student: student accuracy dropped significantly" in out


def test_two_proportion_p_matches_the_normal_tail():
    scipy_stats = pytest.importorskip("scipy.stats")
    pooled = 170 / 200
    z = (0.9 - 0.8) / (pooled * (1 - pooled) * (2 / 100)) ** 0.5
    assert two_proportion_p(90, 100, 80, 100) == pytest.approx(scipy_stats.norm.sf(z), rel=1e-9)
    assert two_proportion_p(80, 100, 90, 100) == pytest.approx(scipy_stats.norm.cdf(z), rel=1e-9)
    assert two_proportion_p(10, 10, 10, 10) == 1.0


def test_baseline_metric_with_interval(tmp_path, capsys, clean_report):
    old = json.loads(json.dumps(clean_report))
    finding(old, "capacity_gap")["metrics"]["did"]["estimate"] = 0.05  # new CI [0.02, 0.34] covers it
    baseline = write(tmp_path / "old.json", old)
    new = write(tmp_path / "new.json", clean_report)
    assert gate(capsys, new, "--baseline", baseline)[0] == 0
    finding(old, "capacity_gap")["metrics"]["did"]["estimate"] = 0.0  # below the new lower bound 0.02
    write(tmp_path / "old.json", old)
    code, out, _ = gate(capsys, new, "--baseline", baseline)
    assert code == 1
    assert (
        "FAIL  baseline capacity_gap.did.estimate: significantly higher (worse): baseline 0, now 0.18" in out
    )


def test_baseline_metric_with_tolerance_and_lower_is_worse():
    policy = parse_policy(
        {"baseline": {"accuracy": False, "verdicts": False, "metrics": [
            {"mode": "contamination", "metric": "student_acc_clean", "worse": "lower", "tolerance": 0.05}]}},
        "p.toml",
    )  # fmt: skip
    old, new = sample_report(), sample_report()
    finding(new, "contamination")["metrics"]["student_acc_clean"] = 0.80  # 0.84 -> 0.80: within 0.05
    baseline_checks = [c for c in evaluate(new, policy, old).checks if c.group == "baseline"]
    assert [c.status for c in baseline_checks] == ["passed"]
    finding(new, "contamination")["metrics"]["student_acc_clean"] = 0.78
    baseline_checks = [c for c in evaluate(new, policy, old).checks if c.group == "baseline"]
    assert [(c.status, c.reason) for c in baseline_checks] == [
        ("failed", "got worse: baseline 0.84, now 0.78, tolerance 0.05")
    ]


def test_resolve_paths():
    f = finding(sample_report(), "capacity_gap")
    assert resolve(f, "did.ci.1") == 0.34
    assert resolve(f, "slices.-1.value") == "math"
    assert resolve(f, "tests.0.effect") == 0.18  # falls back to the finding itself
    assert resolve(f, "did.nope") is not None and resolve(f, "slices.9.value") is resolve(f, "x")


def test_junit_of_the_rules(tmp_path, capsys):
    out = tmp_path / "ci" / "gate.xml"
    code, _, _ = gate(capsys, write(tmp_path / "r.json", sample_report()), "--junit", out)
    assert code == 1
    root = ET.parse(out).getroot()
    cases = root.find("testsuite").findall("testcase")
    assert len(cases) == 7 and root.get("failures") == "1" and root.get("skipped") == "1"
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["verdict teacher_error_transfer"]
    assert [p.name for p in out.parent.iterdir()] == ["gate.xml"]  # written atomically, no leftovers


BAD_POLICIES = {
    "bad TOML": ("[modes\n", "policy.toml: invalid TOML"),
    "bad verdict": (
        '[modes.capacity_gap]\nmax_verdict = "bad"\n',
        "field 'modes.capacity_gap.max_verdict': expected one of",
    ),
    "unknown mode": ('[modes.capacity]\nmax_verdict = "warn"\n', "field 'modes.capacity': unknown mode"),
    "unknown key": (
        '[[rules]]\nmode = "capacity_gap"\nmetric = "did.estimate"\nmaxx = 1\n',
        "field 'rules[0].maxx': unknown key",
    ),
    "no bound": (
        '[[rules]]\nmode = "capacity_gap"\nmetric = "did"\n',
        "field 'rules[0]': needs 'min', 'max' or both",
    ),
    "no metric": ('[[rules]]\nmode = "capacity_gap"\nmax = 1\n', "field 'rules[0].metric': is required"),
    "string bound": (
        '[[rules]]\nmode = "capacity_gap"\nmetric = "x"\nmax = "1"\n',
        "field 'rules[0].max': expected a number",
    ),
    "share out of range": (
        "[accuracy]\nmin_student = 50\n",
        "field 'accuracy.min_student': expected a share",
    ),
    "baseline needs ci or tolerance": (
        '[[baseline.metrics]]\nmode = "capacity_gap"\nmetric = "did.estimate"\nworse = "higher"\n',
        "field 'baseline.metrics[0]': needs exactly one of 'ci'",
    ),
    "alpha": ("[baseline]\nalpha = 0\n", "field 'baseline.alpha': expected a number between 0 and 1"),
    "version": ("version = 2\n", "field 'version': unsupported policy version 2"),
    "rules not an array": ('[rules]\nmode = "x"\n', "field 'rules': expected a list"),
}


@pytest.mark.parametrize("name", sorted(BAD_POLICIES))
def test_bad_policy_exits_2_naming_file_and_key(tmp_path, capsys, name):
    text, expected = BAD_POLICIES[name]
    policy = policy_file(tmp_path, text)
    code, out, err = gate(capsys, write(tmp_path / "r.json", sample_report()), "--policy", policy)
    assert code == 2 and out == ""
    assert err.startswith(f"distill-doctor gate: error: {policy}") and expected in err, err
    assert len(err.strip().splitlines()) == 1


def test_input_errors_exit_2(tmp_path, capsys):
    good = write(tmp_path / "r.json", sample_report())
    code, _, err = gate(capsys, tmp_path / "missing.json")
    assert code == 2 and f"{tmp_path / 'missing.json'}: file not found" in err
    (tmp_path / "bad.json").write_text("{\n  oops\n}")
    code, _, err = gate(capsys, tmp_path / "bad.json")
    assert code == 2 and f"{tmp_path / 'bad.json'}:2: invalid JSON" in err
    invalid = sample_report()
    finding(invalid, "capacity_gap")["verdict"] = "meh"
    code, _, err = gate(capsys, write(tmp_path / "invalid.json", invalid))
    assert code == 2 and "field 'findings[2].verdict'" in err
    code, _, err = gate(capsys, good, "--baseline", tmp_path / "bad.json")
    assert code == 2 and "bad.json:2" in err
    code, _, err = gate(capsys, good, "--policy", tmp_path / "nope.toml")
    assert code == 2 and "nope.toml: policy file not found" in err


def test_default_policy_loads():
    policy = load_policy()
    assert policy.default_max_verdict == "warn" and policy.baseline_alpha == 0.05
    assert [(m.mode, m.metric, m.ci) for m in policy.baseline_metrics] == [
        ("capacity_gap", "did.estimate", "did.ci"),
        ("superficial_imitation", "perturbation.diff", "perturbation.diff_ci"),
    ]


@pytest.mark.parametrize(
    "fmt,start", [("md", "# distill-doctor report"), ("html", "<!DOCTYPE html>"), ("junit", "<?xml")]
)
def test_report_command_renders_to_stdout_and_file(tmp_path, capsys, fmt, start):
    path = write(tmp_path / "r.json", sample_report())
    assert main(["report", path, "--format", fmt]) == 0
    assert capsys.readouterr().out.startswith(start)
    out = tmp_path / f"out.{fmt}"
    assert main(["report", path, "--format", fmt, "--out", str(out)]) == 0
    assert out.read_text().startswith(start)


def test_report_command_errors(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("not json")
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert f"{tmp_path / 'bad.json'}:1: invalid JSON" in capsys.readouterr().err
    path = write(tmp_path / "r.json", sample_report())
    assert main(["report", path, "--out", path]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text()) == sample_report()

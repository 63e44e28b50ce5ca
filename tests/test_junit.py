"""render_junit: one testsuite, one testcase per mode in debug order, well-formed whatever the text."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest
from sample_report import poisoned_report, sample_report

from distill_doctor.reports.junit import Case, junit_xml, render_junit


def suite(xml: str) -> ET.Element:
    root = ET.fromstring(xml.encode("utf-8"))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return suites[0]


def test_one_case_per_mode_in_debug_order_with_the_right_outcome():
    report = sample_report()
    random.Random(1).shuffle(report["findings"])
    s = suite(render_junit(report))
    cases = s.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("distill_doctor.data", "data_quality"),
        ("distill_doctor.data", "teacher_error_transfer"),
        ("distill_doctor.capacity", "capacity_gap"),
        ("distill_doctor.capacity", "superficial_imitation"),
        ("distill_doctor.mismatch", "exposure_bias"),
        ("distill_doctor.provenance", "contamination"),
        ("distill_doctor.provenance", "provenance"),
    ]
    assert (s.get("tests"), s.get("failures"), s.get("skipped"), s.get("errors")) == ("7", "1", "1", "0")
    by_name = {c.get("name"): c for c in cases}

    failed = by_name["teacher_error_transfer"].find("failure")
    assert failed.get("message") == next(
        f["summary"] for f in report["findings"] if f["mode"] == "teacher_error_transfer"
    )
    assert (
        "p=0.002" in failed.text and "Holm-adjusted p = 0.012" in failed.text and "guardrail:" in failed.text
    )

    warned = by_name["capacity_gap"]
    assert warned.find("failure") is None and warned.find("skipped") is None
    assert warned.find("system-out").text.startswith("WARN: The student falls behind")
    assert {p.get("name"): p.get("value") for p in warned.iter("property")}["verdict"] == "warn"

    assert by_name["provenance"].find("skipped").get("message") == "needs --manifest"
    passed = by_name["data_quality"]
    assert passed.find("failure") is None and passed.find("system-out") is None


def test_poisoned_text_still_gives_well_formed_xml_and_keeps_the_text():
    xml = render_junit(poisoned_report())
    s = suite(xml)
    failure = s.find("testcase[@name='teacher_error_transfer']/failure")
    assert "<script>alert(1)</script>" in failure.get("message")  # escaped on disk, intact when parsed
    assert "\\u0000" in failure.get("message") and "\\ud800" in failure.get("message")
    assert "\x00" not in xml and "<script" not in xml and "]]>" not in xml


def test_junit_xml_counts_and_rejects_unknown_status():
    xml = junit_xml(
        "gate", [Case("c", "a", "passed"), Case("c", "b", "failed", "why"), Case("c", "c", "skipped", "n/a")]
    )
    s = suite(xml)
    assert (s.get("tests"), s.get("failures"), s.get("skipped")) == ("3", "1", "1")
    assert s.find("testcase[@name='b']/failure").get("message") == "why"
    with pytest.raises(ValueError):
        Case("c", "d", "errored")

"""JUnit XML (the format every CI system reads), written with the standard library.

:func:`render_junit` turns a report into one testsuite with one testcase per failure
mode, in debug order: ``fail`` -> ``<failure>``, ``warn`` -> passes with the summary in
``<system-out>`` and a ``verdict`` property, ``skipped`` -> ``<skipped>``. The gate uses
:func:`junit_xml` for its rules. All text passes :func:`~distill_doctor.reports.text.clean`,
so characters XML 1.0 forbids (NUL, lone surrogates, ...) never reach the file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from distill_doctor.reports.text import clean, fmt_ci, fmt_num, fmt_p, ordered_findings
from distill_doctor.vocabulary import Verdict

STATUSES = ("passed", "failed", "skipped")


@dataclass
class Case:
    """One JUnit testcase."""

    classname: str
    name: str
    status: str  # "passed" | "failed" | "skipped"
    message: str = ""  # failure / skipped message (one line)
    details: str = ""  # failure body
    output: str = ""  # <system-out>
    properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")


def junit_xml(suite: str, cases: list[Case]) -> str:
    """One ``<testsuite>`` (inside ``<testsuites>``) holding ``cases``."""
    failures = sum(c.status == "failed" for c in cases)
    skipped = sum(c.status == "skipped" for c in cases)
    counts = {
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(skipped),
        "time": "0",
    }
    root = ET.Element("testsuites", {"name": clean(suite), **counts})
    suite_el = ET.SubElement(root, "testsuite", {"name": clean(suite), **counts})
    for case in cases:
        el = ET.SubElement(
            suite_el, "testcase", {"classname": clean(case.classname), "name": clean(case.name), "time": "0"}
        )
        if case.properties:
            props = ET.SubElement(el, "properties")
            for key, value in case.properties.items():
                ET.SubElement(props, "property", {"name": clean(key), "value": clean(value)})
        if case.status == "failed":
            failure = ET.SubElement(el, "failure", {"message": clean(case.message), "type": "failure"})
            failure.text = clean(case.details or case.message)
        elif case.status == "skipped":
            ET.SubElement(el, "skipped", {"message": clean(case.message)})
        if case.output:
            ET.SubElement(el, "system-out").text = clean(case.output)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _finding_details(f: dict[str, Any]) -> str:
    lines = [clean(f.get("summary", ""))]
    for t in f.get("tests") or []:
        if isinstance(t, dict):
            lines.append(
                f"{clean(t.get('name', ''))}: n={fmt_num(t.get('n'))}, {clean(t.get('effect_name', 'effect'))}="
                f"{fmt_num(t.get('effect'))} CI {fmt_ci(t.get('ci'))}, p={fmt_p(t.get('p_value'))}"
            )
    if f.get("p_adjusted") is not None:
        lines.append(f"Holm-adjusted p = {fmt_p(f.get('p_adjusted'))}")
    for ev in (f.get("evidence") or [])[:5]:
        if isinstance(ev, dict):
            lines.append(f"evidence {clean(ev.get('id', ''))}: {clean(ev.get('why', ''))}")
    if f.get("guardrail"):
        lines.append(f"guardrail: {clean(f['guardrail'])}")
    return "\n".join(lines)


def report_cases(report: dict[str, Any]) -> list[Case]:
    """One :class:`Case` per finding, in debug order."""
    cases = []
    for f in ordered_findings(report):
        verdict = f.get("verdict")
        status = (
            "failed" if verdict == Verdict.FAIL else "skipped" if verdict == Verdict.SKIPPED else "passed"
        )
        message = (
            clean(f.get("skipped_reason") or f.get("summary", ""))
            if status == "skipped"
            else clean(f.get("summary", ""))
        )
        cases.append(
            Case(
                classname=f"distill_doctor.{clean(f.get('stage', 'unknown'))}",
                name=clean(f.get("mode", "")),
                status=status,
                message=message,
                details=_finding_details(f) if status == "failed" else "",
                output=f"WARN: {_finding_details(f)}" if verdict == Verdict.WARN else "",
                properties={"verdict": clean(verdict), "n": fmt_num(f.get("n"))},
            )
        )
    return cases


def render_junit(report: dict[str, Any]) -> str:
    """The report as JUnit XML: one testcase per failure mode."""
    return junit_xml("distill-doctor", report_cases(report))

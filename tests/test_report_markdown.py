"""render_markdown: content a reviewer needs, in debug order, with untrusted text kept inert."""

from __future__ import annotations

import random
import re

from sample_report import PAYLOADS, poisoned_report, sample_report

from distill_doctor.reports.markdown import render_markdown
from distill_doctor.reports.markdown_text import fenced, md_code, md_text


def code_blocks(markdown: str) -> tuple[list[str], list[str]]:
    """Split CommonMark-style: (prose lines, code block bodies). A block closes at a backtick-only
    line at least as long as its opening fence, exactly as a Markdown renderer would close it."""
    prose, blocks, fence, body = [], [], None, []
    for line in markdown.split("\n"):
        if fence is None:
            m = re.match(r"^(`{3,})[^`]*$", line)
            if m:
                fence, body = m.group(1), []
            else:
                prose.append(line)
        elif re.fullmatch("`{" + str(len(fence)) + r",}\s*", line):
            blocks.append("\n".join(body))
            fence = None
        else:
            body.append(line)
    assert fence is None, "an unclosed code block"
    return prose, blocks


def test_verdict_table_in_debug_order_even_when_findings_are_shuffled():
    report = sample_report()
    random.Random(3).shuffle(report["findings"])
    md = render_markdown(report)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`" in line.split("|")[2]]
    modes = [re.search(r"`(\w+)`", row.split("|")[2]).group(1) for row in rows]
    assert modes == [
        "data_quality",
        "teacher_error_transfer",
        "capacity_gap",
        "superficial_imitation",
        "exposure_bias",
        "contamination",
        "provenance",
    ]
    assert "debug order: data → capacity → mismatch → provenance" in md
    assert "| data | `teacher_error_transfer` | ❌ fail | 130 | 0.012 |" in md


def test_primary_suspect_guardrail_numbers_and_failure_table():
    md = render_markdown(sample_report())
    assert "**Primary suspect: `teacher_error_transfer`** (stage `data`)" in md
    _, blocks = code_blocks(md)
    assert (
        "distill-doctor train sft --filter-teacher-errors --items items.jsonl --train train.jsonl --out runs/filtered"
        in blocks
    )
    assert "| teacher | 90.0% | [83.6, 94.6]% | 130 | 0 |" in md
    assert "| student | 81.5% | [73.8, 87.8]% | 130 | 2 |" in md
    # each failing or warning finding's tests, with n, effect, interval and p
    assert (
        "| one-sided binomial vs chance agreement | 15 | excess same-wrong rate = 0.45 | 95% CI [0.2, 0.67] | 0.002 |"
        in md
    )
    assert "Cochran-Armitage trend test" in md
    assert "exact McNemar" not in md  # superficial_imitation passes: no key-number block
    assert "| **teacher right** | 100 | 17 |" in md
    assert "| **teacher wrong** | 6 | 7 (same answer: 5, different: 2) |" in md
    assert "### `teacher_error_transfer` · `gsm-17`" in md


def test_no_suspect_and_no_teacher():
    report = sample_report(primary_suspect=None, failure_table=None)
    for f in report["findings"]:
        if f["verdict"] == "fail":
            f["verdict"] = "warn"
    report["accuracy"].update(teacher=None, teacher_ci=None, missing={"teacher": None, "student": 0})
    for sample in report["samples"].values():
        for key in ("teacher", "teacher_answer", "teacher_passed"):
            sample.pop(key)
    md = render_markdown(report)
    assert "**No failing mode.** 4 finding(s) warn" in md
    assert "| teacher |" not in md and "Teacher vs student" not in md and "Teacher (" not in md
    assert "Student (wrong, answer `100`)" in md


def test_minimal_report_renders():
    md = render_markdown(
        {
            "schema_version": 1,
            "debug_order": ["data"],
            "primary_suspect": None,
            "accuracy": {"n": 0, "teacher": None, "student": None},
            "findings": [],
        }
    )
    assert md.startswith("# distill-doctor report") and "| student | n/a | n/a | 0 | n/a |" in md


def test_fence_is_longer_than_any_backtick_run_inside():
    text = "look:\n````\nnot the end\n```\n`````python\nstill inside"
    block = fenced(text, limit=None)
    assert block.startswith("``````text\n") and block.endswith("\n``````")
    _, blocks = code_blocks(block)
    assert blocks == [text]


def test_long_outputs_are_truncated():
    report = sample_report()
    report["samples"]["gsm-17"]["student"] = "x" * 5000
    md = render_markdown(report)
    assert "x" * 600 in md and "x" * 601 not in md
    assert "[... 4400 more characters]" in md


def test_inline_text_cannot_break_tables_or_inject_html():
    assert md_text("a | b\nc <b>&") == r"a \| b c &lt;b&gt;&amp;"
    assert md_text("[x](javascript:1) *y* _z_ `w`") == r"\[x\](javascript:1) \*y\* \_z\_ \`w\`"
    assert md_code("a`b") == "``a`b``"
    assert md_code("`") == "`` ` ``"
    assert md_code("a|b", in_table=True) == r"`a\|b`"


def test_poisoned_text_stays_inert_everywhere():
    report = poisoned_report()
    md = render_markdown(report)
    md.encode("utf-8")  # lone surrogates became escapes
    prose, blocks = code_blocks(md)
    # code spans (ids, metric keys) are literal text too; what is left is prose a renderer parses
    span = re.compile(r"(?<![`\\])(`+)(?!`)(.*?)(?<!`)\1(?!`)")
    assert any("<script>" in m.group(2) for line in prose for m in span.finditer(line))
    prose_text = "\n".join(span.sub("", line) for line in prose)
    # outside code no raw HTML from the report (the footer's <sub> is ours)
    assert not re.search(r"<(?!/?sub>)", prose_text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in prose_text
    # table rows keep their column count despite pipes and newlines in the text
    for line in prose:
        if line.startswith("| ") and ("`data`" in line or line.startswith("| data ")):
            assert len(re.findall(r"(?<!\\)\|", line)) == 7, line
    # the model text is inside code blocks, whole (nothing escaped it away) and not closed early
    assert any("<script>alert(1)</script>" in b for b in blocks)
    for ch in ("\x00", "\u202e", "\ud800", "\x1b"):
        assert ch not in md
    assert "\\u202e" in md and "\\u0000" in md
    for payload in PAYLOADS:
        assert payload not in prose_text or payload.isalnum()


def test_evidence_examples_are_capped():
    report = sample_report()
    for f in report["findings"]:
        f["evidence"] = [{"id": "gsm-17", "why": f"example {k}"} for k in range(6)]
    md = render_markdown(report)
    assert md.count("· `gsm-17`") == 9


def test_string_metrics_are_escaped_once_and_odd_interval_levels_shown():
    report = sample_report()
    cap = next(f for f in report["findings"] if f["mode"] == "capacity_gap")
    cap["metrics"]["split"] = "difficulty > 2"
    cap["tests"][0]["ci_level"] = 1 - 0.05 / 3
    md = render_markdown(report)
    assert "`split` = difficulty &gt; 2" in md and "&amp;gt;" not in md
    assert "| 98.3% CI [0.02, 0.34] |" in md

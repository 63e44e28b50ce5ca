"""render_html: a self-contained page with every chart, and untrusted text escaped everywhere."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from sample_report import PAYLOAD, PAYLOADS, poisoned_report, sample_report

from distill_doctor.reports import charts
from distill_doctor.reports.html import render_html

ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "div", "span", "strong", "a", "code",
    "pre", "table", "thead", "tbody", "tr", "th", "td", "section", "details", "summary",
    "svg", "line", "text", "rect", "circle", "polyline",
}  # fmt: skip


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.style = ""
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.style += data
        else:
            self.text.append(data)


def parse(page: str) -> TagCollector:
    parser = TagCollector()
    parser.feed(page)
    parser.close()
    return parser


def test_page_is_self_contained_with_csp_and_every_chart():
    page = render_html(sample_report())
    assert page.startswith("<!DOCTYPE html>")
    assert "://" not in page and "@import" not in page and "url(" not in page
    doc = parse(page)
    assert {tag for tag, _ in doc.tags} <= ALLOWED_TAGS
    csp = [
        a["content"] for t, a in doc.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp and "default-src 'none'" in csp[0] and "script-src" not in csp[0]
    hrefs = [a["href"] for t, a in doc.tags if t == "a"]
    assert hrefs and all(h.startswith("#mode-") for h in hrefs)
    titles = [a.get("aria-label") for t, a in doc.tags if t == "svg"]
    assert titles == [
        "Accuracy with 95% intervals",
        "error-agreement matrix",
        "Accuracy per slice of difficulty (95% intervals)",
        "Accuracy per slice of domain (95% intervals)",
        "Accuracy by length",
        "Accuracy drop on perturbed problems",
        "Accuracy and degeneration vs output length",
        "Accuracy on contaminated (dirty) vs clean items",
    ]
    text = "".join(doc.text)
    for verdict in ("pass", "warn", "fail", "skipped"):
        assert f'<span class="verdict v-{verdict}">{verdict}</span>' in page
    assert "Primary suspect: teacher_error_transfer" in text
    assert "difficulty=3" in text and "n=40" in text
    assert "gsm-17: prompt, reference and outputs" in text  # side-by-side evidence
    assert "[83.6, 94.6]%" in text


def test_many_slices_are_capped_per_chart_and_buckets_name_their_length():
    report = sample_report()
    cap = next(f for f in report["findings"] if f["mode"] == "capacity_gap")
    row = {"key": "source", "n": 5, "teacher": 0.8, "student": 0.6}
    cap["metrics"]["slices"] = [dict(row, value=f"s{i}") for i in range(30)]
    for bucket in cap["metrics"]["length_buckets"]:
        bucket["by"] = "prompt_words"
    page = render_html(report)
    assert 'aria-label="Accuracy per slice of source (95% intervals, first 12 of 30)"' in page
    assert "source=s11" in page and "source=s12" not in page
    assert 'aria-label="Accuracy by prompt words"' in page


def test_charts_skip_what_is_missing_and_never_draw_nan():
    report = sample_report()
    cap = next(f for f in report["findings"] if f["mode"] == "capacity_gap")
    cap["metrics"] = {"slices": [{"key": "difficulty", "value": 1, "teacher": None, "student": float("nan")}]}
    for f in report["findings"]:
        if f["mode"] in ("superficial_imitation", "exposure_bias", "contamination"):
            f["metrics"] = {}
    page = render_html(report)
    assert page.count("<svg") == 3  # accuracy, agreement matrix, the one slice
    geometry = [
        v for t, a in parse(page).tags if t in ("rect", "line", "circle", "polyline") for v in a.values()
    ]
    assert geometry and not any("nan" in (v or "").lower() or "inf" in (v or "").lower() for v in geometry)
    assert ">n/a</text>" in page


def test_minimal_and_teacherless_reports_render():
    minimal = {"schema_version": 1, "debug_order": ["data"], "primary_suspect": None,
               "accuracy": {"n": 0, "teacher": None, "student": None}, "findings": []}  # fmt: skip
    assert "No failing mode." in render_html(minimal)
    report = sample_report(failure_table=None)
    report["accuracy"].update(teacher=None, teacher_ci=None)
    for sample in report["samples"].values():
        for key in ("teacher", "teacher_answer", "teacher_passed"):
            sample.pop(key)
    page = render_html(report)
    assert "error-agreement matrix" not in page and "<strong>teacher</strong>" not in page


def test_bar_chart_scale_fits_negative_values():
    svg = charts.bar_chart("drops", ["a", "b"], [charts.Series("s", "#000", [-0.2, 0.3])], unit=False)
    assert "-20%" in svg and "30%" in svg


@pytest.mark.parametrize("payload", PAYLOADS)
def test_each_payload_is_escaped_in_every_text_field(payload):
    page = render_html(poisoned_report(payload))
    page.encode("utf-8")  # no lone surrogate reaches the file
    doc = parse(page)
    assert {tag for tag, _ in doc.tags} <= ALLOWED_TAGS
    for tag, attrs in doc.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("href", "src", "action", "formaction", "xlink:href"):
                assert (value or "").startswith("#mode-"), (tag, name, value)
    lowered = page.lower()
    for raw in (
        "<script",
        "<img",
        "</textarea",
        "<textarea",
        "]]>",
        "<!--",
        "\x00",
        "\u202e",
        "\u2066",
        "\x1b",
    ):
        assert raw not in lowered
    assert parse(page).style == parse(render_html(sample_report())).style  # nothing leaked into CSS


def test_everything_at_once_and_the_text_is_shown_not_dropped():
    page = render_html(poisoned_report(PAYLOAD))
    text = "".join(parse(page).text)
    # visible (escaped) in summaries, evidence ids and reasons, outputs, slice names, metric keys
    assert text.count("<script>alert(1)</script>") >= 20
    assert "\\u202eevil" in text and "nul\\u0000byte" in text and "lone \\ud800 surrogate" in text
    assert "&lt;script&gt;" in page and "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


ODD_VALUES = [
    None,
    "text",
    3,
    [],
    [None, "x", 1],
    {},
    {"a": None},
    [{"bucket": None, "n": None}],
    float("nan"),
]
CHART_KEYS = [
    "slices",
    "length_buckets",
    "did",
    "perturbation",
    "by_length",
    "student_acc_dirty",
    "teacher_acc_clean",
    "dirty",
    "n_items",
]


@pytest.mark.parametrize("odd", ODD_VALUES, ids=repr)
def test_renderers_survive_odd_metric_shapes_and_missing_optional_keys(odd):
    from distill_doctor.reports.junit import render_junit
    from distill_doctor.reports.markdown import render_markdown

    report = sample_report()
    for f in report["findings"]:
        for key in CHART_KEYS:
            if key in f["metrics"]:
                f["metrics"][key] = odd
        if isinstance(f["metrics"].get("perturbation"), dict):
            f["metrics"]["perturbation"]["by_variant"] = odd
        for key in ("tests", "p_value", "p_adjusted", "n", "skipped_reason"):
            f.pop(key, None)
    for key in ("tool", "created_at", "inputs", "settings", "samples", "timings"):
        report.pop(key)
    report["failure_table"] = {"n": 3, "counts": {"both_right": 3}}
    report["accuracy"] = {"n": 3, "teacher": None, "student": 0.5}
    for render in (render_html, render_markdown, render_junit):
        assert render(report)


def test_raw_metric_tables_are_folded_under_summary_tests_and_chart():
    """Issue 13: each finding's full metric table is folded in a <details>, after its summary, its
    tests and its chart, so the page reads as findings, not as tables of numbers."""
    import re

    page = render_html(sample_report())
    sections = re.findall(r'<section class="finding" id="mode-([a-z_]+)">(.*?)</section>', page, re.S)
    assert sections
    folded = 0
    for _mode, body in sections:
        if "<th>metric</th>" not in body:
            continue
        folded += 1
        details = body.index('<details class="raw"><summary>All metrics (')
        assert body.index("<th>metric</th>") > details  # the table is inside the fold
        assert body.index("</p>") < details  # the summary comes first
        if "<th>test</th>" in body:
            assert body.index("<th>test</th>") < details
        if "<svg" in body:
            assert body.index("<svg") < details
    assert folded >= 3


def test_a_script_in_an_output_and_in_an_item_id_is_escaped_wherever_it_appears():
    """The same hostile id shows in the evidence table and the example's summary, the output in
    its <pre>: each place shows the text, none runs it (report.html goes through Jinja2 templates)."""
    bad_id, bad_output = "gsm-<script>id()</script>", "x = 1 <script>alert('out')</script>"
    report = sample_report()
    sample = report["samples"].pop("gsm-17")
    report["samples"][bad_id] = {**sample, "student": bad_output}
    failing = next(f for f in report["findings"] if f["mode"] == "teacher_error_transfer")
    failing["evidence"][0]["id"] = bad_id
    page = render_html(report)
    assert "<script" not in page.lower()
    text = "".join(parse(page).text)
    assert text.count(bad_id) == 2  # the evidence table row and the example's <summary>
    assert page.count("gsm-&lt;script&gt;id()&lt;/script&gt;") == 2
    assert text.count(bad_output) == 1
    assert page.count("x = 1 &lt;script&gt;alert(&#x27;out&#x27;)&lt;/script&gt;") == 1

"""A realistic, complete report.json dict for renderer, schema and gate tests.

``sample_report(**overrides)`` returns a fresh deep copy; top-level keys in ``overrides``
replace the defaults. Every finding carries the metrics the charts read (see the report
contract in ``distill_doctor/reports``), so every chart is drawn.
"""

from __future__ import annotations

import copy
from typing import Any

GUARDRAIL_TET = (
    "distill-doctor train sft --filter-teacher-errors --items items.jsonl "
    "--train train.jsonl --out runs/filtered"
)

_FINDINGS: list[dict[str, Any]] = [
    {
        "mode": "data_quality",
        "stage": "data",
        "verdict": "pass",
        "summary": "Training data looks clean: 0.4% exact duplicates and no empty responses.",
        "metrics": {"n_train": 500, "duplicate_rate": 0.004, "empty_responses": 0, "truncated_rate": 0.01},
        "evidence": [],
        "guardrail": "",
        "tests": [],
        "p_value": None,
        "p_adjusted": None,
        "n": 500,
    },
    {
        "mode": "teacher_error_transfer",
        "stage": "data",
        "verdict": "fail",
        "summary": "The student copies the teacher's wrong answers: 10 of 15 teacher errors reappear verbatim.",
        "metrics": {"inherited_rate": 0.667, "kappa": 0.41, "kappa_ci": [0.22, 0.58], "teacher_errors": 15},
        "evidence": [
            {"id": "gsm-17", "why": "teacher and student both answer 42 (reference 40)"},
            {"id": "gsm-23", "why": "teacher and student both answer 7 (reference 9)"},
        ],
        "guardrail": GUARDRAIL_TET,
        "tests": [
            {
                "name": "one-sided binomial vs chance agreement",
                "n": 15,
                "p_value": 0.002,
                "effect": 0.45,
                "effect_name": "excess same-wrong rate",
                "ci": [0.2, 0.67],
                "ci_level": 0.95,
                "statistic": None,
            }
        ],
        "p_value": 0.002,
        "p_adjusted": 0.012,
        "n": 130,
    },
    {
        "mode": "capacity_gap",
        "stage": "capacity",
        "verdict": "warn",
        "summary": "The student falls behind on harder items (gap grows 18 points from difficulty 1 to 3).",
        "metrics": {
            "slices": [
                {
                    "key": "difficulty",
                    "value": "1",
                    "n": 45,
                    "teacher": 0.96,
                    "student": 0.93,
                    "teacher_ci": [0.85, 0.99],
                    "student_ci": [0.82, 0.98],
                    "gap_closure": 0.97,
                },
                {
                    "key": "difficulty",
                    "value": "2",
                    "n": 45,
                    "teacher": 0.91,
                    "student": 0.84,
                    "teacher_ci": [0.79, 0.98],
                    "student_ci": [0.71, 0.93],
                    "gap_closure": 0.92,
                },
                {
                    "key": "difficulty",
                    "value": "3",
                    "n": 40,
                    "teacher": 0.85,
                    "student": 0.64,
                    "teacher_ci": [0.7, 0.94],
                    "student_ci": [0.47, 0.78],
                    "gap_closure": 0.75,
                },
                {
                    "key": "domain",
                    "value": "math",
                    "n": 130,
                    "teacher": 0.9,
                    "student": 0.81,
                    "teacher_ci": [0.84, 0.95],
                    "student_ci": [0.73, 0.87],
                    "gap_closure": 0.9,
                },
            ],
            "length_buckets": [
                {"bucket": "0-40", "n": 60, "teacher": 0.95, "student": 0.9},
                {"bucket": "40-80", "n": 50, "teacher": 0.9, "student": 0.8},
                {"bucket": "80+", "n": 20, "teacher": 0.75, "student": 0.55},
            ],
            "did": {"estimate": 0.18, "ci": [0.02, 0.34], "low": "1", "high": "3"},
            "size_ratio": None,
        },
        "evidence": [{"id": "gsm-88", "why": "difficulty 3: teacher right, student wrong"}],
        "guardrail": "distill-doctor train sft --curriculum difficulty --items items.jsonl --train train.jsonl",
        "tests": [
            {
                "name": "bootstrap difference-in-differences",
                "n": 85,
                "p_value": 0.03,
                "effect": 0.18,
                "effect_name": "gap(hard) - gap(easy)",
                "ci": [0.02, 0.34],
                "ci_level": 0.95,
                "statistic": None,
            }
        ],
        "p_value": 0.03,
        "p_adjusted": 0.12,
        "n": 130,
    },
    {
        "mode": "superficial_imitation",
        "stage": "capacity",
        "verdict": "pass",
        "summary": "Perturbed problems cost the student no more than the teacher.",
        "metrics": {
            "perturbation": {
                "n_pairs": 40,
                "teacher_original": 0.9,
                "teacher_perturbed": 0.85,
                "student_original": 0.85,
                "student_perturbed": 0.78,
                "teacher_drop": 0.05,
                "student_drop": 0.07,
                "diff": 0.02,
                "diff_ci": [-0.08, 0.12],
                "by_variant": [
                    {"variant": "numbers", "n_pairs": 20, "teacher_drop": 0.05, "student_drop": 0.1},
                    {"variant": "distractor", "n_pairs": 20, "teacher_drop": 0.05, "student_drop": 0.04},
                ],
            }
        },
        "evidence": [],
        "guardrail": "",
        "tests": [
            {
                "name": "exact McNemar on discordant pairs",
                "n": 40,
                "p_value": 0.62,
                "effect": 0.02,
                "effect_name": "drop difference (student - teacher)",
                "ci": [-0.08, 0.12],
                "ci_level": 0.95,
                "statistic": None,
            }
        ],
        "p_value": 0.62,
        "p_adjusted": 1.0,
        "n": 40,
    },
    {
        "mode": "exposure_bias",
        "stage": "mismatch",
        "verdict": "warn",
        "summary": "Long student outputs degenerate (repetition in 20% of outputs over 80 tokens).",
        "metrics": {
            "by_length": [
                {
                    "bucket": "0-40",
                    "n": 60,
                    "teacher_acc": 0.95,
                    "student_acc": 0.9,
                    "teacher_degenerate": 0.0,
                    "student_degenerate": 0.02,
                },
                {
                    "bucket": "40-80",
                    "n": 50,
                    "teacher_acc": 0.9,
                    "student_acc": 0.82,
                    "teacher_degenerate": 0.02,
                    "student_degenerate": 0.06,
                },
                {
                    "bucket": "80+",
                    "n": 20,
                    "teacher_acc": 0.8,
                    "student_acc": 0.6,
                    "teacher_degenerate": 0.05,
                    "student_degenerate": 0.2,
                },
            ],
            "degenerate_rate": {"teacher": 0.015, "student": 0.054},
            "exacc_err_pct": None,
        },
        "evidence": [{"id": "gsm-101", "why": "student output repeats one 12-token line 9 times"}],
        "guardrail": "distill-doctor train gkd --lmbda 0.5 --items items.jsonl --train train.jsonl",
        "tests": [
            {
                "name": "Cochran-Armitage trend test",
                "n": 130,
                "p_value": 0.04,
                "effect": 0.18,
                "effect_name": "degeneration rate, longest - shortest bucket",
                "ci": [0.01, 0.36],
                "ci_level": 0.95,
                "statistic": 2.05,
            }
        ],
        "p_value": 0.04,
        "p_adjusted": 0.12,
        "n": 130,
    },
    {
        "mode": "contamination",
        "stage": "provenance",
        "verdict": "warn",
        "summary": "3 evaluation items have near-duplicates in the training data.",
        "metrics": {
            "n_items": 130,
            "dirty": 3,
            "student_acc_dirty": 1.0,
            "student_acc_clean": 0.84,
            "teacher_acc_dirty": 1.0,
            "teacher_acc_clean": 0.9,
            "minhash": {"num_perm": 128, "threshold": 0.7, "shingle": 5},
        },
        "evidence": [
            {
                "id": "gsm-5",
                "why": "Jaccard 0.92 with train line 311",
                "kind": "near-duplicate",
                "score": 0.92,
            },
            {"id": "gsm-9", "why": "13-gram overlap with train line 12", "kind": "ngram", "score": 0.81},
            {"id": "gsm-40", "why": "exact prompt in train line 77", "kind": "exact", "score": 1.0},
        ],
        "guardrail": "distill-doctor decontaminate --train train.jsonl --items items.jsonl --out train.clean.jsonl",
        "tests": [],
        "p_value": None,
        "p_adjusted": None,
        "n": 130,
    },
    {
        "mode": "provenance",
        "stage": "provenance",
        "verdict": "skipped",
        "summary": "Skipped: needs --manifest",
        "metrics": {},
        "evidence": [],
        "guardrail": "",
        "tests": [],
        "p_value": None,
        "p_adjusted": None,
        "n": 0,
        "skipped_reason": "needs --manifest",
    },
]

_SAMPLES: dict[str, Any] = {
    "gsm-17": {
        "prompt": "Tom has 25 apples and buys 15 more. How many?",
        "reference": 40,
        "teacher": "25 + 15 = 42.\n#### 42",
        "student": "The answer is 42.",
        "teacher_answer": "42",
        "student_answer": "42",
        "teacher_passed": False,
        "student_passed": False,
    },
    "gsm-23": {
        "prompt": "What is 3 * 3?",
        "reference": "9",
        "teacher": "3*3 = 7\n#### 7",
        "student": "#### 7",
        "teacher_answer": "7",
        "student_answer": "7",
        "teacher_passed": False,
        "student_passed": False,
    },
    "gsm-88": {
        "prompt": "A train leaves at 3pm ...",
        "reference": 120,
        "teacher": "#### 120",
        "student": "```\nspeed = 60\n```\n#### 100",
        "teacher_answer": "120",
        "student_answer": "100",
        "teacher_passed": True,
        "student_passed": False,
    },
    "gsm-101": {
        "prompt": "Sum the first 10 odd numbers.",
        "reference": 100,
        "teacher": "#### 100",
        "student": "1 + 3 + 5 ...\n" * 9,
        "teacher_answer": "100",
        "student_answer": None,
        "teacher_passed": True,
        "student_passed": False,
    },
    "gsm-5": {
        "prompt": "If 4 pens cost $2 ...",
        "reference": 5,
        "teacher": "#### 5",
        "student": "#### 5",
        "teacher_answer": "5",
        "student_answer": "5",
        "teacher_passed": True,
        "student_passed": True,
    },
}

_REPORT: dict[str, Any] = {
    "schema_version": 1,
    "tool": {"name": "distill-doctor", "version": "0.1.0"},
    "created_at": "2026-11-24T06:00:00+00:00",
    "debug_order": ["data", "capacity", "mismatch", "provenance"],
    "primary_suspect": "teacher_error_transfer",
    "accuracy": {
        "n": 130,
        "teacher": 0.9,
        "student": 0.8154,
        "teacher_ci": [0.836, 0.946],
        "student_ci": [0.738, 0.878],
        "missing": {"teacher": 0, "student": 2},
    },
    "inputs": {
        "items": {"path": "items.jsonl", "sha256": "ab" * 32, "n": 132},
        "teacher": {"path": "teacher.jsonl", "sha256": "cd" * 32, "n": 132, "missing": 0},
        "student": {"path": "student.jsonl", "sha256": "ef" * 32, "n": 130, "missing": 2},
        "train": {"path": "train.jsonl", "sha256": "01" * 32, "n": 500},
        "manifest": None,
        "teacher_model": None,
        "student_model": None,
    },
    "items_fingerprint": {"sha256": "9a" * 32, "n": 132, "method": "sha256 over the items sorted by id"},
    "settings": {"seed": 0, "alpha": 0.05, "multiplicity": "holm"},
    "findings": _FINDINGS,
    "failure_table": {
        "n": 130,
        "counts": {
            "both_right": 100,
            "only_teacher_right": 17,
            "only_student_right": 6,
            "both_wrong_same": 5,
            "both_wrong_different": 2,
        },
        "examples": {
            "both_right": ["gsm-5"],
            "only_teacher_right": ["gsm-88", "gsm-101"],
            "only_student_right": [],
            "both_wrong_same": ["gsm-17", "gsm-23"],
            "both_wrong_different": [],
        },
    },
    "samples": _SAMPLES,
    "timings": {"load_s": 0.01, "verify_s": 0.2, "probes_s": 0.5},
}


def sample_report(**overrides: Any) -> dict[str, Any]:
    """A fresh copy of the sample report, with top-level keys replaced by ``overrides``."""
    report = copy.deepcopy(_REPORT)
    report.update(copy.deepcopy(overrides))
    return report


def set_verdict(report: dict[str, Any], mode: str, verdict: str) -> dict[str, Any]:
    """Change one finding's verdict and keep ``primary_suspect`` consistent (first failing mode)."""
    for finding in report["findings"]:
        if finding["mode"] == mode:
            finding["verdict"] = verdict
    failing = [f["mode"] for f in report["findings"] if f["verdict"] == "fail"]
    report["primary_suspect"] = failing[0] if failing else None
    return report


# Hostile strings for escaping tests: HTML/XML/Markdown breakers, controls, bidi overrides.
PAYLOADS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</textarea><textarea>",
    "]]><!-- -->",
    "\u202eevil\u202c and \u2066isolate\u2069",
    "nul\x00byte\x07bell\x1bescape",
    "lone \ud800 surrogate",
    "``` fence ```` break\n```\n",
    "| pipe | [link](javascript:alert(1)) *star* _under_ # hash",
    "&amp; &lt;b&gt; &#60;",
)
PAYLOAD = "".join(PAYLOADS)
_FIXED = {"mode", "stage", "verdict", "primary_suspect", "debug_order", "schema_version"}


def poisoned_report(payload: str = PAYLOAD) -> dict[str, Any]:
    """The sample report with ``payload`` appended to every free text value (summaries, evidence
    ids and reasons, outputs, slice names, buckets, paths, ...), to the ids that key ``samples``,
    and added as a metric key in every finding. Mode, stage and verdict names stay valid."""

    def walk(value: Any, key: str | None = None) -> Any:
        if key in _FIXED:
            return value
        if isinstance(value, str):
            return value + payload
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        return value

    report = walk(sample_report())
    report["items_fingerprint"]["sha256"] = sample_report()["items_fingerprint"]["sha256"]  # schema: hex
    report["samples"] = {k + payload: v for k, v in report["samples"].items()}
    for finding in report["findings"]:
        finding["metrics"][payload] = 0.5
        finding["metrics"]["nested" + payload] = {payload: 1, "text": payload}
    return report

"""Several samples per item: pass@1, maj@k, pass@k, and the diagnosis on such outputs."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import pytest

from distill_doctor.cli import main
from distill_doctor.data.records import Item, Judgement, ModelOutput
from distill_doctor.probes import capacity_gap, superficial_imitation
from distill_doctor.reports.schema import schema_errors
from distill_doctor.testing.synthetic_runs import make_run
from distill_doctor.verify import verify_outputs
from distill_doctor.verify.scoring import k_values, majority_vote, pass_at_k, summarize


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_pass_at_k_is_the_share_of_k_subsets_with_a_pass(n):
    """The unbiased estimator equals the exact share of k-subsets of the samples holding a pass."""
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(combinations(outcomes, k))
            exact = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(exact)


def test_pass_at_k_refuses_k_above_n():
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_k_values():
    assert k_values(1) == [1]
    assert k_values(6) == [1, 2, 4, 6]
    assert k_values(8) == [1, 2, 4, 8]


def item_verdict(*samples: tuple[bool, str | None]) -> Judgement:
    vs = tuple(Judgement(p, a) for p, a in samples)
    return Judgement(vs[0].passed, vs[0].answer, samples=vs)


def test_majority_vote_ties_go_to_the_earliest_answer():
    v = item_verdict((False, "3"), (True, "4"), (True, "4"), (False, "3"))
    assert majority_vote(v).answer == "3"  # 2 votes each: "3" appeared first
    v = item_verdict((False, "3"), (True, "4"), (True, "4"))
    assert majority_vote(v).answer == "4" and majority_vote(v).passed
    v = item_verdict((False, None), (False, None), (True, "4"))
    assert majority_vote(v).answer == "4"  # samples without an answer do not vote
    assert majority_vote(item_verdict((False, None), (False, None))) is None


def test_summary_of_one_item_set():
    verdicts = {
        "a": item_verdict((True, "1"), (True, "1"), (False, "2"), (False, None)),
        "b": item_verdict((False, "7"), (False, "7"), (True, "5"), (False, "6")),
    }
    got = summarize(verdicts, ["a", "b"])
    assert got["pass_at_1"] == pytest.approx((0.5 + 0.25) / 2)
    assert got["first_sample"] == 0.5
    assert got["maj_at_k"] == 0.5  # a: "1" wins (right); b: "7" wins (wrong)
    assert got["pass_at_k"]["4"] == 1.0
    assert got["pass_at_k"]["1"] == pytest.approx(got["pass_at_1"])
    assert (got["samples_min"], got["samples_max"]) == (4, 4)


def test_verify_outputs_scores_every_sample():
    item = Item(id="q", prompt="2+2?", reference=4, verifier="numeric")
    out = ModelOutput(id="q", output="#### 5", samples=("#### 5", "#### 4", "<think>#### 4", "#### 4"))
    v = verify_outputs([item], {"q": out})["q"]
    assert (v.passed, v.answer) == (False, "5")  # the first sample's verdict
    assert v.n_samples == 4 and v.score == 0.5  # the third was cut off inside its reasoning
    assert majority_vote(v).answer == "4"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_diagnose_reports_pass_at_1_and_maj_at_k(tmp_path):
    """Teacher and student with 4 samples per item: every probe runs, the accuracy block holds pass@1."""
    rng = random.Random(0)
    items, teacher, student = [], [], []
    expected_pass1 = []
    for i in range(80):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        items.append(
            {
                "id": f"q{i}",
                "prompt": f"What is {a}+{b}?",
                "reference": a + b,
                "tags": {"difficulty": 1 + i % 3},
            }
        )
        for rows, acc in ((teacher, 0.9), (student, 0.7)):
            answers = [a + b if rng.random() < acc else a + b + rng.randint(1, 9) for _ in range(4)]
            rows.append({"id": f"q{i}", "samples": [f"{a}+{b}={x}\n#### {x}" for x in answers]})
            if rows is student:
                expected_pass1.append(sum(x == a + b for x in answers) / 4)
    paths = [
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
        for name, rows in (("items", items), ("teacher", teacher), ("student", student))
    ]
    out = tmp_path / "report"
    args = ["diagnose", "--items", str(paths[0]), "--teacher", str(paths[1]), "--student", str(paths[2])]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert schema_errors(report) == []
    acc = report["accuracy"]
    assert acc["student"] == pytest.approx(sum(expected_pass1) / len(expected_pass1))
    multi = acc["multi_sample"]
    assert multi["student"]["pass_at_1"] == pytest.approx(acc["student"])
    assert multi["student"]["samples_min"] == 4 and set(multi["student"]["pass_at_k"]) == {"1", "2", "4"}
    assert multi["teacher"]["maj_at_k"] >= multi["teacher"]["pass_at_1"] - 0.05
    assert acc["student_ci"][0] < acc["student"] < acc["student_ci"][1]
    for finding in report["findings"]:
        assert "probe error" not in (finding.get("skipped_reason") or ""), finding
    rows = list(report["samples"].values())
    assert rows and all(r["student_samples"] == 4 and 0 <= r["student_pass_share"] <= 1 for r in rows)
    for page in ("report.md", "report.html"):
        text = (out / page).read_text()
        assert "maj@k" in text and "accuracy is pass@1" in text


def test_probes_take_shares_for_means_and_first_samples_for_exact_tests():
    """capacity_gap and superficial_imitation average each item's share of passing samples; the
    exact McNemar counts stay those of the first samples (the single-sample run's)."""
    single = make_run("superficial", n=120, seed=3)
    # Each student item gets a second sample with the opposite outcome: every share is 0.5.
    multi = replace(
        single,
        student_verdicts={
            i: replace(v, samples=(v, Judgement(not v.passed, "x")))
            for i, v in single.student_verdicts.items()
        },
    )
    cap = capacity_gap.run(multi).metrics
    assert cap["student"] == 0.5
    sup_single = superficial_imitation.run(single).metrics["perturbation"]
    sup_multi = superficial_imitation.run(multi).metrics["perturbation"]
    assert sup_multi["student_original"] == sup_multi["student_perturbed"] == 0.5
    assert (sup_multi["student_breaks"], sup_multi["student_repairs"]) == (
        sup_single["student_breaks"],
        sup_single["student_repairs"],
    )
    assert sup_multi["mcnemar_p"] == sup_single["mcnemar_p"]

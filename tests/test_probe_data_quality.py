"""data_quality on planted, clean, tiny and degenerate training sets (uses the real verifier)."""

import importlib

import numpy as np
import pytest
from datasets import Dataset

from distill_doctor.probes import data_quality as probe
from distill_doctor.probes.base import DiagnosisInputs
from distill_doctor.testing.synthetic_runs import check_finding, make_run
from distill_doctor.text.near_duplicates import NearDupConfig, near_duplicate_pairs

if not hasattr(importlib.import_module("distill_doctor.verify"), "verify"):
    pytest.skip("distill_doctor.verify.verify is not available yet", allow_module_level=True)


def _inputs(rows, seed=0):
    return DiagnosisInputs(
        items=[], student={}, student_verdicts={}, train=Dataset.from_list(rows), seed=seed
    )


def _rows(n, *, wrong=0.0, seed=0, dup=0.0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b = int(rng.integers(10, 999)), int(rng.integers(10, 999))
        ans = a + b + (int(rng.integers(1, 9)) if rng.random() < wrong else 0)
        rows.append(
            {
                "id": f"r{i}",
                "prompt": f"Compute {a} + {b}.",
                "response": f"Step 1: {a} + {b} = {ans}.\nThe answer is {ans}.",
                "source": "synthetic",
                "reference": str(a + b),
            }
        )
    rows += [dict(rows[j], id=f"d{j}") for j in range(int(dup * n))]
    return rows


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_bad_data_fails(seed):
    f = probe.run(make_run("data_quality", 200, seed))
    d = check_finding(f)
    assert f.verdict == "fail"
    m = d["metrics"]
    assert m["checks"]["verified_error"] == "fail"
    assert m["verified_error_rate"] > 0.2 and m["verified_error_ci"][0] > 0.05
    assert m["format"]["truncated"] > 0 and m["format"]["repetition_loop"] > 0
    assert m["exact_duplicates"] > 0
    nd = m["near_duplicates"]
    assert {"num_perm", "lsh_threshold", "jaccard_threshold", "shingle_words", "scheme"} <= set(nd)
    assert any("reference" in e["why"] for e in f.evidence)


@pytest.mark.parametrize("kind", ["clean_high", "clean_low", "tiny"])
def test_clean_training_sets_pass(kind):
    f = probe.run(make_run(kind, 100, 3, train=True))
    check_finding(f)
    assert f.verdict == "pass", f.summary


@pytest.mark.parametrize("seed", [0, 1])
def test_teacher_errors_in_targets_are_left_to_error_transfer(seed):
    """Alone the probe fails; when the student demonstrably repeats teacher errors, the diagnosis
    reports the wrong targets under teacher_error_transfer and lowers this fail to warn."""
    from distill_doctor.diagnose.run import attribute_teacher_errors
    from distill_doctor.probes import teacher_error_transfer

    inputs = make_run("error_transfer", 300, seed, train=True)
    f = probe.run(inputs)
    d = check_finding(f)
    assert d["metrics"]["verified_error_rate"] > 0.1
    assert d["metrics"]["teacher_attribution"]["verified_error"]["beyond_teacher"] is False
    assert f.verdict == "fail"
    assert d["metrics"]["teacher_explained_checks"] == ["verified_error"]
    transfer = teacher_error_transfer.run(inputs)
    assert transfer.verdict == "fail"
    lowered, same = attribute_teacher_errors([f, transfer])
    assert lowered.verdict == "warn" and "teacher_error_transfer" in lowered.summary
    assert same is transfer and f.verdict == "fail"  # a new finding; the probe's own is kept


def test_wrong_targets_fail_when_the_student_does_not_repeat_teacher_errors():
    from distill_doctor.diagnose.run import attribute_teacher_errors
    from distill_doctor.probes import teacher_error_transfer

    inputs = make_run("error_transfer", 300, 0, train=True)
    f = probe.run(inputs)
    transfer = teacher_error_transfer.run(make_run("clean_high", 300, 0))
    assert transfer.verdict == "pass"
    assert attribute_teacher_errors([f, transfer]) == [f, transfer]
    assert f.verdict == "fail"


def test_few_wrong_targets_at_most_warn():
    f = probe.run(_inputs(_rows(400, wrong=0.03, seed=4)))
    check_finding(f)
    assert f.verdict in ("pass", "warn")


def test_tiny_training_set_at_most_warn():
    f = probe.run(_inputs(_rows(10, wrong=0.5, seed=5)))
    check_finding(f)
    assert f.verdict == "warn"


def test_duplicates_alone():
    f = probe.run(_inputs(_rows(150, seed=6, dup=0.8)))
    d = check_finding(f)
    assert d["metrics"]["checks"]["duplicate"] == "fail"
    assert d["metrics"]["checks"]["verified_error"] == "pass"


def test_free_text_references_are_not_misjudged():
    rows = [
        {
            "prompt": f"Describe topic {i}.",
            "response": f"Topic {i} is a broad subject with many parts worth a long explanation here, really.",
            "reference": f"a description of topic {i}",
        }
        for i in range(60)
    ]
    f = probe.run(_inputs(rows))
    d = check_finding(f)
    assert d["metrics"]["verified"] == 0 and d["metrics"]["unverifiable"] == 60
    assert f.verdict == "pass"


def test_no_reference_column_and_empty():
    rows = [{"prompt": f"Say hi {i}", "response": f"Hi number {i}!"} for i in range(30)]
    f = probe.run(_inputs(rows))
    check_finding(f)
    assert f.verdict == "pass" and f.metrics["verified"] == 0
    empty = probe.run(DiagnosisInputs(items=[], student={}, student_verdicts={}, train=Dataset.from_list([])))
    assert empty.verdict == "pass"


def test_mixed_script_and_empty_responses_counted():
    rows = _rows(60, seed=7)
    for r in rows[:20]:
        r["response"] = (
            r["response"].replace("Step 1:", "Step 1: 我们先把两个数字加起来,") if r["response"] else ""
        )
    rows[20]["response"] = ""
    f = probe.run(_inputs(rows))
    m = check_finding(f)["metrics"]
    assert m["format"]["mixed_script"] == 20 and m["format"]["empty"] == 1
    assert f.verdict == "fail"


def test_near_duplicates_found_and_confirmed():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choice(vocab, 40)) for _ in range(300)]
    for k in range(30):
        w = texts[k].split()
        w[int(rng.integers(40))] = "zz"
        texts.append(" ".join(w))
    cfg = NearDupConfig()
    pairs = near_duplicate_pairs(texts, cfg)
    found = {(i, j) for i, j, _ in pairs}
    assert sum((k, 300 + k) in found for k in range(30)) >= 29
    assert all(jac >= cfg.jaccard_threshold for _, _, jac in pairs)
    assert len(pairs) <= 32


def test_sampled_near_duplicate_rate_is_corrected(monkeypatch):
    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(5000)]
    rows = [{"prompt": f"Task {i}", "response": " ".join(rng.choice(vocab, 40))} for i in range(800)]
    for k in range(200):  # 200 near-duplicate partners: a true redundant share of 0.2
        words = rows[k]["response"].split()
        words[int(rng.integers(40))] = "zz"
        rows.append({"prompt": rows[k]["prompt"], "response": " ".join(words)})
    monkeypatch.setattr(probe, "NEAR_DUP_SAMPLE", 500)
    nd = probe.run(_inputs(rows)).metrics["near_duplicates"]
    assert nd["rows_checked"] == 500 and nd["sample_share"] == 0.5
    assert nd["rate_in_sample"] < 0.15 and 0.12 < nd["rate"] < 0.28


def test_false_fail_rate_on_clean_training_sets():
    # 200 clean, reference-verified training sets of 20-120 rows
    fails = 0
    for seed in range(200):
        n = int(np.random.default_rng(seed).integers(20, 120))
        inputs = _inputs(_rows(n, seed=seed), seed=seed)
        fails += probe.run(inputs).verdict == "fail"
    assert fails == 0


@pytest.mark.slow
def test_large_training_set_is_sampled_and_fast():
    import time

    n = 400_000
    rng = np.random.default_rng(0)
    a, b = rng.integers(10, 99_999, n), rng.integers(10, 99_999, n)
    ds = Dataset.from_dict(
        {
            "prompt": [f"Compute {x} + {y} and explain." for x, y in zip(a, b)],
            "response": [
                f"Step 1: add.\nStep 2: {x} + {y} = {x + y}.\nThe answer is {x + y}." for x, y in zip(a, b)
            ],
            "reference": [str(x + y) for x, y in zip(a, b)],
        }
    )
    t0 = time.perf_counter()
    f = probe.run(DiagnosisInputs(items=[], student={}, student_verdicts={}, train=ds))
    assert time.perf_counter() - t0 < 180
    assert f.metrics["sampled_rows"] == probe.TEXT_SAMPLE
    assert f.metrics["near_duplicates"]["rows_checked"] <= probe.NEAR_DUP_SAMPLE
    assert f.verdict == "pass"

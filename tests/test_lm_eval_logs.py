"""lm-eval logs as first-class input, on files lm-eval itself wrote (see ``lm_eval_fixtures``).

Covers issue 13's "What was seen": multiple-choice samples scored as text (0% for a logged acc 1.0),
``--items`` required although every sample carries its doc and target, and the silent misjoin of
gsm8k samples with an items file in another order.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from lm_eval_fixtures import arc_rows, build

from distill_doctor.cli import main
from distill_doctor.data import load_items, load_outputs
from distill_doctor.data.lm_eval_logs import LETTERS, mc_prediction, read_samples_file

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Every task's teacher and student logs, written once by lm-eval (about 20 s)."""
    return build(tmp_path_factory.mktemp("lm_eval_logs"))


def lm_eval_result(samples: Path, key: str) -> float:
    """lm-eval's own aggregate from the results_*.json it wrote beside the samples file."""
    sf = read_samples_file(samples)
    results = json.loads(Path(sf.results_path).read_text())["results"][sf.task]
    return results[key]


def run_diagnose(tmp_path: Path, *args: str, capsys) -> tuple[int, dict | None, str]:
    out = tmp_path / "report"
    rc = main(["diagnose", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    report = json.loads((out / "report.json").read_text()) if rc == 0 else None
    return rc, report, err


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# metric each task's verifier accuracy must equal: lm-eval's own aggregate for the same reading
EXPECTED_METRIC = {
    "gsm8k": "exact_match,flexible-extract",
    "gsm8k_cot_self_consistency": "exact_match,score-first",
    "arc_easy": "acc,none",
    "hendrycks_math_algebra": "exact_match,none",
    "humaneval": "pass_at_k,create_test",
}


@pytest.mark.parametrize("task", sorted(EXPECTED_METRIC))
def test_lm_eval_logs_alone_are_enough(logs, tmp_path, capsys, task):
    """No --items: items, references and verifiers come from the samples; the verifier agrees with
    lm-eval's own per-sample metric on every item, so the accuracies are lm-eval's."""
    t, s = logs[task].samples["teacher"], logs[task].samples["student"]
    rc, report, err = run_diagnose(tmp_path, "--teacher", str(t), "--student", str(s), capsys=capsys)
    assert rc == 0, err
    metric, filt = EXPECTED_METRIC[task].split(",")
    assert report["accuracy"]["teacher"] == pytest.approx(lm_eval_result(t, EXPECTED_METRIC[task]))
    assert report["accuracy"]["student"] == pytest.approx(lm_eval_result(s, EXPECTED_METRIC[task]))
    assert report["accuracy"]["n"] == len(read_samples_file(t).docs)
    for role in ("teacher", "student"):
        block = report["lm_eval_agreement"][role]
        assert (block["metric"], block["filter"], block["rate"], block["warning"]) == (
            metric,
            filt,
            1.0,
            None,
        )
    assert report["inputs"]["items"]["derived_from"] == "lm-eval samples"
    assert "warning" not in err


def test_multiple_choice_is_the_highest_loglikelihood_not_text(logs, tmp_path, capsys):
    """arc_easy with an items file: each sample's prediction is its highest-loglikelihood choice, so a
    sample logged acc 1.0 passes (it scored 0%, exit 0, when the loglikelihood "-2.0" was read as text)."""
    t, s = logs["arc_easy"].samples["teacher"], logs["arc_easy"].samples["student"]
    items = []
    for row in arc_rows():
        gold = row["choices"]["label"].index(row["answerKey"])
        items.append(
            {"id": row["id"], "prompt": row["question"], "reference": LETTERS[gold], "verifier": "choice"}
        )
    path = write_jsonl(tmp_path / "arc_items.jsonl", items)
    rc, report, err = run_diagnose(
        tmp_path, "--items", str(path), "--teacher", str(t), "--student", str(s), capsys=capsys
    )
    assert rc == 0, err
    assert report["accuracy"]["teacher"] == pytest.approx(lm_eval_result(t, "acc,none"))
    assert report["lm_eval_agreement"]["teacher"]["rate"] == 1.0
    logged = [json.loads(line) for line in t.read_text().splitlines()]
    assert any(r["acc"] == 1.0 for r in logged)
    outputs = load_outputs(t, load_items(path))
    for r in logged:
        assert (outputs.outputs[r["doc"]["id"]].output == f"Answer: {LETTERS[int(r['target'])]}") == (
            r["acc"] == 1.0
        )


def test_acc_norm_rule_matches_lm_eval_acc_norm(logs, tmp_path, capsys):
    """--mc-rule acc_norm divides each loglikelihood by the choice's length, as lm-eval's acc_norm."""
    t, s = logs["arc_easy"].samples["teacher"], logs["arc_easy"].samples["student"]
    acc, acc_norm = lm_eval_result(t, "acc,none"), lm_eval_result(t, "acc_norm,none")
    assert acc != acc_norm  # the fixture has items where the two rules pick different choices
    rc, report, err = run_diagnose(
        tmp_path, "--teacher", str(t), "--student", str(s), "--mc-rule", "acc_norm", capsys=capsys
    )
    assert rc == 0, err
    assert report["accuracy"]["teacher"] == pytest.approx(acc_norm)
    block = report["lm_eval_agreement"]["teacher"]
    assert (block["metric"], block["rate"], block["mc_rule"]) == ("acc_norm", 1.0, "acc_norm")


def test_mc_prediction_ties_and_lengths():
    assert mc_prediction([-1.0, -1.0], ["a", "b"], "acc") == 0  # numpy.argmax: first on ties
    assert mc_prediction([-4.0, -3.0], ["long choice", "x"], "acc") == 1
    assert mc_prediction([-4.0, -3.0], ["long choice", "x"], "acc_norm") == 0


def gsm8k_items(logs, *, prompt: str = "question") -> list[dict]:
    rows = [json.loads(line) for line in logs["gsm8k"].data.read_text().splitlines()]
    items = []
    for k, row in enumerate(rows):
        text = row["question"] if prompt == "question" else f"Question: {row['question']}\nAnswer:"
        items.append({"id": f"g{k}", "prompt": text, "reference": int(row["answer"].split("####")[-1])})
    return items


@pytest.mark.parametrize("prompt", ["question", "rendered"])
def test_shuffled_items_join_by_content(logs, tmp_path, capsys, prompt):
    """gsm8k samples with an items file in another order: joined by content, the accuracy is lm-eval's
    (it was 0.8% instead of 34.7% when joined by doc_id order)."""
    t, s = logs["gsm8k"].samples["teacher"], logs["gsm8k"].samples["student"]
    items = gsm8k_items(logs, prompt=prompt)
    random.Random(1).shuffle(items)
    path = write_jsonl(tmp_path / "items.jsonl", items)
    rc, report, err = run_diagnose(
        tmp_path, "--items", str(path), "--teacher", str(t), "--student", str(s), capsys=capsys
    )
    assert rc == 0, err
    assert report["accuracy"]["teacher"] == pytest.approx(lm_eval_result(t, "exact_match,flexible-extract"))
    assert report["accuracy"]["student"] == pytest.approx(lm_eval_result(s, "exact_match,flexible-extract"))
    assert report["lm_eval_agreement"]["teacher"]["rate"] == 1.0


def test_a_join_that_cannot_be_proven_is_refused(logs, tmp_path, capsys):
    """An items file that is not the one lm-eval ran on (one prompt differs): exit 2, naming the
    samples file's first document that matches no item."""
    t, s = logs["gsm8k"].samples["teacher"], logs["gsm8k"].samples["student"]
    items = gsm8k_items(logs)
    items[7]["prompt"] = items[7]["prompt"].replace("gives away", "buys")
    path = write_jsonl(tmp_path / "items.jsonl", items)
    rc, _, err = run_diagnose(
        tmp_path, "--items", str(path), "--teacher", str(t), "--student", str(s), capsys=capsys
    )
    assert rc == 2
    line = next(d.line for d in read_samples_file(s).docs if d.doc_id == 7)  # the student is read first
    assert f"{s}:{line}" in err and "cannot prove which item" in err and "doc_id 7" in err
    assert "Traceback" not in err


def test_student_logs_of_other_documents_are_refused(logs, tmp_path, capsys):
    """No --items: the student's samples must be the teacher's documents (joined by doc_hash)."""
    t, s = logs["gsm8k"].samples["teacher"], logs["arc_easy"].samples["student"]
    rc, _, err = run_diagnose(tmp_path, "--teacher", str(t), "--student", str(s), capsys=capsys)
    assert rc == 2 and "same lm-eval task" in err and str(s) in err  # another task: refused by name


def test_native_outputs_need_items(tmp_path, capsys):
    out = write_jsonl(tmp_path / "student.jsonl", [{"id": "a", "output": "1"}])
    rc, _, err = run_diagnose(tmp_path, "--student", str(out), capsys=capsys)
    assert rc == 2 and "--items is required unless" in err


def test_repeats_become_samples(logs):
    """``repeats: 4`` logs four responses per document: they are the output's samples, in order."""
    path = logs["gsm8k_cot_self_consistency"].samples["teacher"]
    from distill_doctor.data.outputs import items_from_samples

    items = items_from_samples(path)
    outputs = load_outputs(path, items)
    rows = {json.loads(line)["doc_id"]: json.loads(line) for line in path.read_text().splitlines()}
    for item in items:
        out = outputs.outputs[item.id]
        assert out.samples == tuple(rows[int(item.id)]["resps"][0]) and len(out.samples) == 4
        assert out.output == out.samples[0]


def test_disagreement_with_lm_eval_is_a_visible_warning(logs, tmp_path, capsys):
    """A verifier that misreads the task (here: an items file naming a regex no answer matches)
    disagrees with lm-eval's own exact_match: exit 0, but a warning on stderr and in report.json
    with the first disagreeing items."""
    t, s = logs["gsm8k"].samples["teacher"], logs["gsm8k"].samples["student"]
    items = [dict(it, verifier="regex:^never$") for it in gsm8k_items(logs)]
    path = write_jsonl(tmp_path / "items.jsonl", items)
    rc, report, err = run_diagnose(
        tmp_path, "--items", str(path), "--teacher", str(t), "--student", str(s), capsys=capsys
    )
    assert rc == 0
    block = report["lm_eval_agreement"]["teacher"]
    rows = [json.loads(line) for line in t.read_text().splitlines()]
    right = [f"g{r['doc_id']}" for r in rows if r["filter"] == block["filter"] and r["exact_match"] == 1.0]
    assert right and block["n"] == len(items) and block["agree"] == len(items) - len(right)
    assert block["warning"] and "disagree" in block["warning"]
    assert [d["id"] for d in block["disagreeing"]] == sorted(right, key=lambda i: int(i[1:]))[:10]
    assert "warning: teacher:" in err and "warning: student:" in err
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "**Warning:** the verifier and lm-eval's exact" in markdown
    from distill_doctor.reports.schema import validate_report

    validate_report(report)


def test_eval_tells_one_accuracy_story(tmp_path, capsys, monkeypatch):
    """``eval`` prints the verifier's accuracy as THE accuracy, and lm-eval's own metric labelled as
    lm-eval's, with its filter and its per-item agreement (it printed "verifier accuracy 0.833,
    lm-eval exact_match 0.000" side by side)."""
    from distill_doctor.produce import lm_eval_runner
    from distill_doctor.testing import lm_eval_replay

    rows = [{"id": f"q{i}", "prompt": f"What is {i}+{i + 1}?", "reference": 2 * i + 1} for i in range(6)]
    items = write_jsonl(tmp_path / "items.jsonl", rows)
    answers = [
        {
            "match": r["prompt"],
            "outputs": [f"{i}+{i + 1}={r['reference'] + (i == 5)}\n#### {r['reference'] + (i == 5)}"],
        }
        for i, r in enumerate(rows)
    ]
    table = tmp_path / "answers.json"
    table.write_text(json.dumps(answers))
    monkeypatch.setattr(
        lm_eval_runner, "load_hflm", lambda *a, **k: lm_eval_replay.ReplayLM(answers=str(table))
    )
    (tmp_path / "model").mkdir()
    out = tmp_path / "outputs.jsonl"
    rc = main(["eval", "--items", str(items), "--model", str(tmp_path / "model"), "--out", str(out)])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert "accuracy 0.833 (5/6 items pass the verifier)" in lines[0] and "lm-eval" not in lines[0]
    assert lines[1].startswith(
        "  lm-eval's own exact_match (filter none): 0.000; it agrees with the verifier on 1/6"
    )


def test_repeats_score_like_lm_eval_majority_vote(logs, tmp_path, capsys):
    """The four samples per document, scored by distill-doctor (maj@k), give lm-eval's own maj@4."""
    t, s = (logs["gsm8k_cot_self_consistency"].samples[r] for r in ("teacher", "student"))
    rc, report, err = run_diagnose(tmp_path, "--teacher", str(t), "--student", str(s), capsys=capsys)
    assert rc == 0, err
    multi = report["accuracy"]["multi_sample"]
    for role, path in (("teacher", t), ("student", s)):
        assert multi[role]["samples_min"] == multi[role]["samples_max"] == 4
        assert multi[role]["maj_at_k"] == pytest.approx(lm_eval_result(path, "exact_match,maj@4"))


def test_task_families_pick_their_verifier(logs):
    from distill_doctor.data.outputs import items_from_samples

    kinds = {
        task: {it.verifier for it in items_from_samples(b.samples["teacher"])} for task, b in logs.items()
    }
    assert kinds == {
        "gsm8k": {"numeric"},
        "gsm8k_cot_self_consistency": {"numeric"},
        "arc_easy": {"choice"},
        "hendrycks_math_algebra": {"math"},
        "humaneval": {"code"},
        "mbpp": {"code"},
    }
    math_items = items_from_samples(logs["hendrycks_math_algebra"].samples["teacher"])
    assert math_items[2].reference == "\\frac{3}{4}" and math_items[0].tags["difficulty"] == 1


def test_mbpp_runs_in_the_sandbox_and_a_real_disagreement_is_flagged(logs, tmp_path, capsys):
    """mbpp completions run against the doc's test_list. lm-eval's mbpp runs the raw completion, so
    the teacher's right answers written as fenced blocks fail there and pass the verifier: the
    agreement warning names exactly those items; the student (no right fenced answer) agrees."""
    t, s = logs["mbpp"].samples["teacher"], logs["mbpp"].samples["student"]
    rc, report, err = run_diagnose(tmp_path, "--teacher", str(t), "--student", str(s), capsys=capsys)
    assert rc == 0, err
    rows = [json.loads(line) for line in t.read_text().splitlines()]
    fenced_right = [
        str(r["doc"]["task_id"]) for r in rows if r["resps"][0][0].startswith("```") and r["doc_id"] in (2, 5)
    ]
    assert fenced_right == ["603", "606"]
    assert report["accuracy"]["teacher"] == pytest.approx(lm_eval_result(t, "pass_at_1,none") + 2 / 6)
    teacher = report["lm_eval_agreement"]["teacher"]
    assert [d["id"] for d in teacher["disagreeing"]] == fenced_right and teacher["warning"]
    assert all(d["verifier_passed"] and d["lm_eval"] == 0.0 for d in teacher["disagreeing"])
    assert report["lm_eval_agreement"]["student"]["rate"] == 1.0
    assert report["accuracy"]["student"] == pytest.approx(lm_eval_result(s, "pass_at_1,none"))
    assert "warning: teacher:" in err and "603, 606" in err

"""Red-team cases for lm-eval logs as input, on files lm-eval itself wrote (``lm_eval_more_tasks``).

Each task's teacher and student logs come from the task's real YAML run by lm-eval with the replay
model. ``diagnose`` must either give lm-eval's own accuracy (exit 0) or refuse with one line naming
the task and what it cannot read (exit 2): never a confident number lm-eval would not give.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval_more_tasks import build_task

from distill_doctor.cli import main

pytestmark = pytest.mark.integration


def lm_eval_score(samples: Path, key: str) -> float:
    """lm-eval's aggregate ``key`` from the results file written with ``samples``."""
    ts = samples.name.rsplit("_", 1)[1].removesuffix(".gz").removesuffix(".jsonl")
    results = json.loads((samples.parent / f"results_{ts}.json").read_text())["results"]
    (block,) = results.values()
    return block[key]


def diagnose(
    tmp_path: Path, teacher: Path, student: Path, capsys, *extra: str
) -> tuple[int, dict | None, str]:
    out = tmp_path / "report"
    rc = main(
        [
            "diagnose",
            "--teacher",
            str(teacher),
            "--student",
            str(student),
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    return rc, json.loads((out / "report.json").read_text()) if rc == 0 else None, err


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Logs of the tasks below, written once by lm-eval (about 2 s per task)."""
    root = tmp_path_factory.mktemp("redteam_logs")
    return {
        t: build_task(root / t, t)
        for t in (
            "truthfulqa_mc1",
            "truthfulqa_mc2",
            "mmlu_anatomy",
            "piqa",
            "hellaswag",
            "winogrande",
            "lambada_openai",
            "arc_challenge",
            "triviaqa",
            "gsm8k_cot",
            "humaneval_instruct",
            "mbpp_instruct",
        )
    }


@pytest.mark.parametrize(
    "task,rule",
    [
        ("truthfulqa_mc1", "acc"),
        ("mmlu_anatomy", "acc"),
        ("piqa", "acc"),
        ("piqa", "acc_norm"),
        ("hellaswag", "acc"),
        ("hellaswag", "acc_norm"),
    ],
)
def test_multiple_choice_tasks_give_lm_evals_accuracy(logs, tmp_path, capsys, task, rule):
    """One-gold multiple-choice tasks: diagnose's accuracies are lm-eval's acc / acc_norm."""
    t, s = logs[task]["teacher"], logs[task]["student"]
    rc, report, err = diagnose(tmp_path, t, s, capsys, "--mc-rule", rule)
    assert rc == 0, err
    assert report["accuracy"]["teacher"] == pytest.approx(lm_eval_score(t, f"{rule},none"))
    assert report["accuracy"]["student"] == pytest.approx(lm_eval_score(s, f"{rule},none"))
    assert report["lm_eval_agreement"]["teacher"]["rate"] == 1.0


def test_truthfulqa_mc2_probability_mass_is_refused(logs, tmp_path, capsys):
    """truthfulqa_mc2's acc is the probability mass on several true answers (lm-eval: 0.668 for the
    teacher). Read as "gold choice 0 has the highest loglikelihood" it was 0.417, exit 0, and no
    agreement warning (fractional scores are not compared). Now: exit 2 naming the task and field."""
    t, s = logs["truthfulqa_mc2"]["teacher"], logs["truthfulqa_mc2"]["student"]
    assert 0.6 < lm_eval_score(t, "acc,none") < 0.7
    rc, _, err = diagnose(tmp_path, t, s, capsys)
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert "truthfulqa_mc2" in line and "field 'acc'" in line and "not 0 or 1" in line


@pytest.mark.parametrize("task,says", [("winogrande", "multiple-input"), ("lambada_openai", "loglikelihood")])
def test_unsupported_families_are_refused_by_name(logs, tmp_path, capsys, task, says):
    rc, _, err = diagnose(tmp_path, logs[task]["teacher"], logs[task]["student"], capsys)
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert task in line and says in line


def test_student_of_another_task_is_refused(logs, tmp_path, capsys):
    """arc_challenge teacher, piqa student on the same question texts: the rendered prompts are equal
    ("Question: ...\\nAnswer:"), so the join by content succeeded and piqa's two-choice predictions
    were scored against arc's four letters (student 0.25, lm-eval 0.5, exit 0). Now exit 2 naming both."""
    t, s = logs["arc_challenge"]["teacher"], logs["piqa"]["student"]
    rc, _, err = diagnose(tmp_path, t, s, capsys)
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert "task piqa" in line and "task arc_challenge" in line


def test_renamed_samples_with_other_choices_are_refused(logs, tmp_path, capsys):
    """A renamed samples file (no task in its name, no results beside it) whose documents offer other
    choices than the items: the letters would mean other answers, so it is refused by line."""
    renamed = tmp_path / "student.jsonl"
    renamed.write_bytes(logs["piqa"]["student"].read_bytes())
    rc, _, err = diagnose(tmp_path, logs["arc_challenge"]["teacher"], renamed, capsys)
    assert rc == 2
    assert f"{renamed}:1: field 'arguments'" in err and "other choices" in err


def test_several_acceptable_answers_are_refused(logs, tmp_path, capsys):
    """triviaqa's target is the list of aliases, logged as its str(): lm-eval counts any alias
    (teacher 0.71); read as one reference the list's repr matched nothing (0.0 and 0.0, exit 0)."""
    t, s = logs["triviaqa"]["teacher"], logs["triviaqa"]["student"]
    assert lm_eval_score(t, "exact_match,remove_whitespace") > 0.6
    rc, _, err = diagnose(tmp_path, t, s, capsys)
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert "triviaqa" in line and "field 'target'" in line and "acceptable answers" in line


@pytest.mark.parametrize("change", ["gzip", "no_results"])
@pytest.mark.parametrize(
    "task,key", [("arc_challenge", "acc,none"), ("gsm8k_cot", "exact_match,strict-match")]
)
def test_gzipped_or_alone_samples_give_the_same_accuracy(logs, tmp_path, capsys, task, key, change):
    """Samples gzip'd beside their results, or copied away from the results file: same accuracies."""
    import gzip

    paths = {}
    for role in ("teacher", "student"):
        src = logs[task][role]
        if change == "gzip":
            dst = src.parent / (src.name + ".gz")
            dst.write_bytes(gzip.compress(src.read_bytes()))
        else:
            (tmp_path / role).mkdir()
            dst = tmp_path / role / src.name
            dst.write_bytes(src.read_bytes())
        paths[role] = dst
    rc, report, err = diagnose(tmp_path, paths["teacher"], paths["student"], capsys)
    assert rc == 0, err
    for role in ("teacher", "student"):
        assert report["accuracy"][role] == pytest.approx(lm_eval_score(logs[task][role], key))


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Runs with lm-eval options that differ between the roles, or change what is logged."""
    root = tmp_path_factory.mktemp("redteam_variants")
    return {
        "teacher_limit": build_task(
            root / "tl", "arc_challenge", options={"teacher": {"limit": 10}, "student": {}}
        ),
        "predict_only": build_task(
            root / "po", "arc_challenge", options={r: {"predict_only": True} for r in ("teacher", "student")}
        ),
        "mc2_predict_only": build_task(
            root / "mc2",
            "truthfulqa_mc2",
            options={r: {"predict_only": True} for r in ("teacher", "student")},
        ),
    }


def test_student_with_more_documents_pairs_on_the_teachers(variants, tmp_path, capsys):
    """Teacher run with --limit 10, student with all 20 documents: the student's extra documents
    were refused as 'cannot prove which item' (exit 2). Now they are left out, counted and named;
    the accuracies are on the 10 shared documents, equal to lm-eval's per-sample acc there."""
    t, s = variants["teacher_limit"]["teacher"], variants["teacher_limit"]["student"]
    rc, report, err = diagnose(tmp_path, t, s, capsys)
    assert rc == 0, err
    assert "10 lm-eval documents are not in the items' own log" in err
    assert report["accuracy"]["n"] == 10
    assert report["inputs"]["student"]["beyond_items"] == 10
    rows = [json.loads(line) for line in s.read_text().splitlines()]
    assert report["accuracy"]["student"] == pytest.approx(sum(r["acc"] for r in rows[:10]) / 10)
    assert report["accuracy"]["teacher"] == pytest.approx(lm_eval_score(t, "acc,none"))


def test_predict_only_multiple_choice_is_read(logs, variants, tmp_path, capsys):
    """--predict_only logs no metric and replaces process_results by its bare name: a plain
    multiple-choice task is still read (argmax of the logged loglikelihoods), giving the acc
    lm-eval computes when it scores the same answers."""
    t, s = variants["predict_only"]["teacher"], variants["predict_only"]["student"]
    rc, report, err = diagnose(tmp_path, t, s, capsys)
    assert rc == 0, err
    for role in ("teacher", "student"):
        assert report["accuracy"][role] == pytest.approx(
            lm_eval_score(logs["arc_challenge"][role], "acc,none")
        )


def test_predict_only_truthfulqa_mc2_is_refused(variants, tmp_path, capsys):
    t, s = variants["mc2_predict_only"]["teacher"], variants["mc2_predict_only"]["student"]
    rc, _, err = diagnose(tmp_path, t, s, capsys)
    assert rc == 2 and "truthfulqa_mc2" in err and "logs no acc" in err


def test_concatenated_task_samples_are_refused_with_the_reason(logs, tmp_path, capsys):
    """mmlu subtasks (or any two tasks) concatenated into one file: doc_id 0 comes again with
    another document; the refusal says so instead of 'duplicate output'."""
    paths = {}
    for role in ("teacher", "student"):
        paths[role] = tmp_path / f"{role}.jsonl"
        paths[role].write_bytes(logs["mmlu_anatomy"][role].read_bytes() + logs["piqa"][role].read_bytes())
    rc, _, err = diagnose(tmp_path, paths["teacher"], paths["student"], capsys)
    assert rc == 2
    assert f"{paths['teacher']}:21: field 'doc_id'" in err and "concatenated" in err


@pytest.mark.parametrize("beside_results", [True, False])
def test_humaneval_instruct_completion_ends_at_the_closing_fence(logs, tmp_path, capsys, beside_results):
    """humaneval_instruct opens a ```python block holding the prompt (gen_prefix); the model writes
    the body, closes the fence and adds prose. Run whole, that was a syntax error: 0.0 and 0.0
    (lm-eval: 0.67 and 0.58), exit 0. Now the completion ends at the closing fence, as in lm-eval's
    build_predictions_instruct, with the config beside the samples or without it."""
    paths = {}
    for role in ("teacher", "student"):
        src = logs["humaneval_instruct"][role]
        if beside_results:
            paths[role] = src
        else:
            (tmp_path / role).mkdir()
            paths[role] = tmp_path / role / src.name
            paths[role].write_bytes(src.read_bytes())
    rc, report, err = diagnose(tmp_path, paths["teacher"], paths["student"], capsys)
    assert rc == 0, err
    for role in ("teacher", "student"):
        expected = lm_eval_score(logs["humaneval_instruct"][role], "pass_at_k,create_test")
        assert report["accuracy"][role] == pytest.approx(expected)
        assert report["lm_eval_agreement"][role]["warning"] is None


def test_ifeval_is_refused_not_scored_against_its_zero_target(tmp_path_factory, tmp_path, capsys):
    """IFEval logs target 0 and scores the response with its instruction checks (lm-eval: 0.67 and
    0.58). Read as a generic task against "0": teacher 0.0, student 0.0, exit 0, and no agreement
    block at all (its scores are booleans, which were skipped). Now exit 2 naming the task."""
    pytest.importorskip("langdetect")
    pytest.importorskip("immutabledict")
    logs = build_task(tmp_path_factory.mktemp("ifeval"), "ifeval")
    assert lm_eval_score(logs["teacher"], "prompt_level_strict_acc,none") > 0.6
    capsys.readouterr()  # lm-eval's own messages while it wrote the logs
    rc, _, err = diagnose(tmp_path, logs["teacher"], logs["student"], capsys)
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert "ifeval" in line and "process_results" in line and "field 'target'" in line


def test_mbpp_instruct_is_scored_on_the_program_before_the_closing_fence(logs, tmp_path, capsys):
    """mbpp_instruct's gen_prefix opens a ```python block; the model writes the program, closes
    the fence, adds prose. distill-doctor read 0.0 for both (the unmatched fence). It now runs the
    program before the closing fence: the share of right programs in the recorded answers. lm-eval
    0.4.13 itself scores these 0 (its extract_code_blocks prepends ``` so that 'def' is read as the
    block's language tag): the disagreement is shown as the agreement warning, not hidden."""
    from lm_eval_fixtures import _right, mbpp_rows

    t, s = logs["mbpp_instruct"]["teacher"], logs["mbpp_instruct"]["student"]
    rc, report, err = diagnose(tmp_path, t, s, capsys)
    assert rc == 0, err
    n = len(mbpp_rows())
    for role in ("teacher", "student"):
        assert report["accuracy"][role] == pytest.approx(sum(_right(role, k) for k in range(n)) / n)
    if lm_eval_score(t, "pass_at_1,extract_code") == 0.0:  # lm-eval's reading, as of 0.4.13
        assert report["lm_eval_agreement"]["teacher"]["warning"] and "warning: teacher" in err


def test_acc_norm_only_task_is_read_with_acc_norm_by_default(tmp_path_factory, tmp_path, capsys):
    """The leaderboard's bbh (like gpqa and musr) logs acc_norm only. With acc as the fixed default
    rule diagnose printed acc (teacher 0.70 here), a number lm-eval never computed (its acc_norm:
    0.35), and nothing to check it against. The default now follows the task; --mc-rule still wins."""
    logs = build_task(tmp_path_factory.mktemp("bbh_mc"), "leaderboard_bbh_boolean_expressions")
    capsys.readouterr()
    t, s = logs["teacher"], logs["student"]
    rc, report, err = diagnose(tmp_path, t, s, capsys)
    assert rc == 0, err
    for role in ("teacher", "student"):
        assert report["accuracy"][role] == pytest.approx(lm_eval_score(logs[role], "acc_norm,none"))
        assert report["lm_eval_agreement"][role]["mc_rule"] == "acc_norm"
    rc, report, err = diagnose(tmp_path / "acc", t, s, capsys, "--mc-rule", "acc")
    assert rc == 0, err
    assert report["accuracy"]["teacher"] != pytest.approx(lm_eval_score(t, "acc_norm,none"))


def test_two_choice_task_shares_wrong_answers_by_chance(tmp_path_factory, tmp_path, capsys):
    """piqa, 40 items, teacher and student right independently (70% / 55%): on a two-choice task
    two wrong answers are always the same one. The chance rate took K = 4 (no options are listed in
    piqa's prompt) and the global rate 0.52: 'Some sign of inherited teacher errors (7/7 shared
    wrong answers, 100% vs chance 52%)', a warn on a clean run. K is now the choices logged."""
    logs = build_task(tmp_path_factory.mktemp("piqa40"), "piqa_independent_40")
    capsys.readouterr()
    rc, report, err = diagnose(tmp_path, logs["teacher"], logs["student"], capsys)
    assert rc == 0, err
    (finding,) = [f for f in report["findings"] if f["mode"] == "teacher_error_transfer"]
    assert finding["metrics"]["same_wrong"] == finding["metrics"]["both_wrong"] > 0
    assert finding["metrics"]["chance"]["choice"] == 1.0
    assert finding["verdict"] == "pass"

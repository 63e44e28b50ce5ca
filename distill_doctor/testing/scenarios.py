"""Whole diagnosis scenarios with a known label, written as files in the SPEC formats.

``build_scenario(ScenarioSpec(label, seed, n, ...), directory)`` writes ``items.jsonl``,
``teacher.jsonl``, ``student.jsonl`` and, where the spec asks, ``train.jsonl`` and
``provenance.yaml``; it returns a :class:`Scenario` whose ``cli_args(out)`` is the argument list of
``distill-doctor diagnose``. ``label`` is ``clean`` or one planted mode (``MODES``).

How the models behave (content in ``scenario_content.py``):

- Correctness is drawn per item from an accuracy curve over difficulty 1-5; items of one group
  (original / numbers / distractor) share a latent draw per model, so variants are correlated.
- Clean: the student is uniformly ``student_gap`` below the teacher on every difficulty and
  variant, its errors independent of the teacher's; wrong answers come from each item's
  attractor distribution (off-by-one, forgot-last-step, popular distractor), so some wrong
  answers coincide by chance. Both models degenerate rarely, independent of length. Training data
  holds correct targets on other problems written with the same instruction prefix; the manifest is
  complete, permissive and has the right sha256.
- Planted: ``teacher_error_transfer`` copies the teacher's wrong answer (and text) on 60% of the
  teacher's errors; ``capacity_gap`` keeps the student near the teacher on difficulty 1-2 and far
  below on 4-5; ``superficial_imitation`` fails perturbed variants far more than the teacher;
  ``exposure_bias`` turns long student outputs into repetition loops without a final answer;
  ``contamination`` puts 10% of the eval items (prompt + solution) in the training data and the
  student nearly always solves those; ``data_quality`` gives 15% of training targets a wrong final
  answer and adds duplicates; ``provenance`` breaks the manifest (non-commercial teacher license,
  no decontamination record, or a sha256 mismatch).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill_doctor.testing import scenario_content as sc

MODES = (
    "data_quality",
    "teacher_error_transfer",
    "capacity_gap",
    "superficial_imitation",
    "exposure_bias",
    "contamination",
    "provenance",
)
STATISTICAL = tuple(m for m in MODES if m != "provenance")
PROVENANCE_FAULTS = ("license", "decontamination", "sha")
TINY = 30  # runs below this many items may give at most warn on statistical probes


@dataclass(frozen=True)
class ScenarioSpec:
    label: str  # "clean" or a mode in MODES
    seed: int
    n: int
    teacher_acc: float = 0.95
    student_gap: float = 0.08
    domains: tuple[tuple[str, float], ...] = (
        ("math", 0.55),
        ("choice", 0.2),
        ("exact", 0.13),
        ("code", 0.12),
    )
    max_code: int = 24
    with_train: bool = True
    with_manifest: bool = True
    train_chat: bool = False
    train_reference: bool = True
    provenance_fault: str | None = None  # for label "provenance"; default rotates with the seed
    infinite_loops: bool = False
    template_twins: bool = False  # clean trap: 10% of eval math stories also in train with new numbers
    student_scale: str = "prob"  # clean student gap: "prob" (p_T - gap) or "logit" (gap * 6 logits behind)
    extra_drop: float = 0.0  # superficial_imitation: > 0 keeps the student at the teacher's accuracy
    # on originals and drops it by this many points more than the teacher on perturbed variants
    hard_cutoff: bool = False  # exposure_bias: the student derails on hard math items (difficulty >= 4),
    # mostly cut off mid-derivation (the last number is still extracted), some loops

    @property
    def name(self) -> str:
        scale = ("-logit" if self.student_scale == "logit" else "") + (
            "-twins" if self.template_twins else ""
        )
        scale += (f"-drop{round(self.extra_drop * 100)}" if self.extra_drop else "") + (
            "-cutoff" if self.hard_cutoff else ""
        )
        return f"{self.label}{scale}-n{self.n}-t{int(self.teacher_acc * 100)}-s{self.seed}"

    @property
    def tiny(self) -> bool:
        return self.n < TINY


@dataclass
class Scenario:
    spec: ScenarioSpec
    directory: Path
    paths: dict[str, Path]
    planted: dict[str, object] = field(default_factory=dict)

    def cli_args(self, out: Path) -> list[str]:
        args = ["diagnose", "--items", str(self.paths["items"]), "--teacher", str(self.paths["teacher"])]
        args += ["--student", str(self.paths["student"])]
        if "train" in self.paths:
            args += ["--train", str(self.paths["train"])]
        if "manifest" in self.paths:
            args += ["--manifest", str(self.paths["manifest"])]
        return args + ["--out", str(out), "--quiet", "--workers", "2"]

    def expected_fails(self) -> set[str]:
        """Modes that must fail: the planted one, unless the run is tiny (then at most warn)."""
        label = self.spec.label
        if label == "clean" or (self.spec.tiny and label in STATISTICAL):
            return set()
        return {label}


# ---------------------------------------------------------------- accuracy model
def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def teacher_p(acc: float, d: int, variant: str | None) -> float:
    """Teacher success probability: a logistic curve over difficulty centred near ``acc``."""
    p = 1 / (1 + math.exp(-(_logit(acc) + 0.7 * (3 - d))))
    if variant == "numbers":
        p *= 0.92
    elif variant == "distractor":
        p *= 0.86
    return min(0.995, max(0.02, p))


def student_p(spec: ScenarioSpec, p_t: float, d: int, variant: str | None) -> float:
    gap = spec.student_gap
    if spec.label == "capacity_gap":
        p = p_t - 0.02 if d <= 2 else p_t * 0.65 if d == 3 else p_t * 0.25
    elif spec.label == "superficial_imitation" and spec.extra_drop:
        # the teacher's variant accuracy is p_t already: the student loses extra_drop more than that
        p = p_t - 0.02 if variant in (None, "original") else p_t - 0.02 - spec.extra_drop
    elif spec.label == "superficial_imitation":
        p = p_t - 0.02 if variant in (None, "original") else p_t * 0.35
    elif spec.student_scale == "logit":
        p = 1 / (1 + math.exp(-(_logit(min(0.995, max(0.005, p_t))) - 6 * gap)))
    else:
        p = p_t - gap
    return min(0.995, max(0.02, p))


# ---------------------------------------------------------------- eval problems
def _eval_problems(spec: ScenarioSpec, rng: random.Random) -> tuple[list[sc.Problem], list[dict]]:
    grouped_share = 0.85 if spec.label == "superficial_imitation" else 0.5
    he = list(sc.humaneval_problems())
    rng.shuffle(he)
    n_code = 0
    problems: list[sc.Problem] = []
    names, weights = zip(*spec.domains)
    counter = 0
    while len(problems) < spec.n:
        counter += 1
        domain = rng.choices(names, weights=weights)[0]
        if spec.label == "superficial_imitation" and rng.random() < 0.4:
            domain = "math"
        d = rng.randint(1, 5)
        pid = f"{domain}-{counter:04d}"
        if domain == "code":
            if n_code >= min(spec.max_code, len(he) // 2):
                continue
            problems.append(sc.code_problem(he[n_code], pid))
            n_code += 1
        elif domain == "math" and rng.random() < grouped_share and spec.n - len(problems) >= 3:
            base = sc.math_problem(rng, f"{pid}-original", d, variant="original")
            group = [base] + [sc.math_variant(rng, base, f"{pid}-{v}", v) for v in ("numbers", "distractor")]
            for p in group:
                p.group = pid
            problems.extend(group)
        elif domain == "math":
            problems.append(sc.math_problem(rng, pid, d))
        elif domain == "choice":
            problems.append(sc.choice_problem(rng, pid, d))
        else:
            problems.append(sc.exact_problem(rng, pid, d))
    return problems[: spec.n], he[n_code:]


# ---------------------------------------------------------------- outputs
def _style(rng: random.Random, domain: str) -> tuple[str, int]:
    style = rng.choices(sc.FINAL_STYLES, weights=(0.5, 0.3, 0.2))[0]
    return style, rng.choice((0, 0, 1, 1, 2, 3, 4, 5, 6))


def _output(rng: random.Random, p: sc.Problem, correct: bool, style: str, extra: int, spec: ScenarioSpec,
            role: str, answer: object | None = None) -> tuple[str, object]:  # fmt: skip
    """(text, final answer) for one model on one problem."""
    if p.domain == "code":
        fenced = rng.random() < 0.5
        if correct:
            completion = p.solution
        else:
            kinds = list(sc.BUG_KINDS) + ([("infinite_loop", 0.04)] if spec.infinite_loops else [])
            kind = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
            completion = sc.buggy_completion(p.solution, kind)
        text = sc.code_text(p, completion, fenced)
        long_code = completion.count("\n") >= 8
        if role == "student" and spec.label == "exposure_bias" and long_code and rng.random() < 0.8:
            code_lines = completion.split("\n")
            text = sc.code_text(p, "\n".join(code_lines[:3] + [code_lines[2]] * 20) + "\n", fenced)
        return text, completion
    if answer is None:
        answer = p.reference if correct else sc.draw_wrong(rng, p)
    lines = len(p.steps) + extra + 1
    if role == "student" and spec.hard_cutoff:
        if p.domain == "math" and p.difficulty >= 4 and rng.random() < 0.6:
            if rng.random() < 0.7:  # cut off before the last step: the numeric fallback finds a number
                return sc.cutoff_text(rng, p, style, extra), None
            return sc.degenerate_text(rng, p, style, extra), None
    elif role == "student" and spec.label == "exposure_bias" and lines >= 7 and rng.random() < 0.8:
        return sc.degenerate_text(rng, p, style, extra), None
    if rng.random() < 0.015:  # rare degeneration for either model, independent of length
        return sc.degenerate_text(rng, p, style, extra), None
    return sc.reasoning_text(rng, p, answer, style, extra, wrong=not correct), answer


def _model_outputs(spec: ScenarioSpec, rng: random.Random, problems: list[sc.Problem],
                   contaminated: set[str]) -> tuple[list[dict], list[dict]]:  # fmt: skip
    teacher, student = [], []
    group_u: dict[tuple[str, str], float] = {}

    def draw(role: str, p: sc.Problem) -> float:
        key = (role, p.group or p.pid)
        if key not in group_u:
            group_u[key] = rng.random()
        return min(0.999, max(0.0, group_u[key] + rng.uniform(-0.12, 0.12))) if p.group else group_u[key]

    for p in problems:
        p_t = teacher_p(spec.teacher_acc, p.difficulty, p.variant)
        t_ok = draw("teacher", p) < p_t
        t_style, t_extra = _style(rng, p.domain)
        t_text, t_ans = _output(rng, p, t_ok, t_style, t_extra, spec, "teacher")
        p_s = student_p(spec, p_t, p.difficulty, p.variant)
        s_style = t_style if rng.random() < 0.8 else _style(rng, p.domain)[0]  # distilled: same format
        s_extra = max(0, t_extra + rng.choice((-1, 0, 0, 1)))
        if p.pid in contaminated:
            s_ok = rng.random() < 0.97
        else:
            s_ok = draw("student", p) < p_s
        copy = spec.label == "teacher_error_transfer" and not t_ok and rng.random() < 0.6
        if copy and p.domain == "code":
            s_text = t_text
        elif copy:
            s_text, _ = _output(rng, p, False, s_style, s_extra, spec, "student", answer=t_ans)
        else:
            s_text, _ = _output(rng, p, s_ok, s_style, s_extra, spec, "student")
        teacher.append({"id": p.pid, "output": t_text})
        student.append({"id": p.pid, "output": s_text})
    rng.shuffle(teacher)
    rng.shuffle(student)
    return teacher, student


# ---------------------------------------------------------------- training data and manifest
def _train_records(spec: ScenarioSpec, rng: random.Random, problems: list[sc.Problem], spare_code: list[dict],
                   contaminated: set[str]) -> list[dict]:  # fmt: skip
    eval_prompts = {p.prompt for p in problems}
    n_train = max(24, min(1500, 3 * spec.n)) if not spec.tiny else 2 * spec.n
    records: list[dict] = []
    k = 0
    while len(records) < n_train:
        k += 1
        domain = rng.choices(("math", "choice", "exact", "code"), weights=(0.55, 0.2, 0.13, 0.12))[0]
        d = rng.randint(1, 5)
        if domain == "code":
            if not spare_code:
                continue
            p = sc.code_problem(spare_code.pop(), f"train-{k}")
            response, ref = p.solution, None
        else:
            if domain == "math":
                p = sc.math_problem(rng, f"train-{k}", d, names=sc.TRAIN_NAMES)
            else:
                p = {"choice": sc.choice_problem, "exact": sc.exact_problem}[domain](rng, f"train-{k}", d)
            if p.prompt in eval_prompts:
                continue
            response, ref = (
                sc.reasoning_text(rng, p, p.reference, _style(rng, domain)[0], 0, wrong=False),
                p.reference,
            )
        eval_prompts.add(p.prompt)
        rec: dict[str, object] = {
            "id": f"train-{k}",
            "prompt": p.prompt,
            "response": response,
            "source": f"synthetic-{domain}",
        }
        if ref is not None and spec.train_reference:
            rec["reference"] = ref
        if spec.label == "data_quality" and domain != "code" and rng.random() < 0.15:
            wrong = sc.draw_wrong(rng, p)
            rec["response"] = sc.reasoning_text(rng, p, wrong, "hash", 0, wrong=True)
            rec["reference"] = ref  # the known answer, which the target contradicts
        records.append(rec)
    if spec.template_twins:  # same story, new numbers (a GSM-Symbolic-style augmentation), not the item
        stories = [p for p in problems if p.domain == "math" and p.variant in (None, "original")]
        for p in rng.sample(stories, k=max(1, len(stories) // 10)):
            twin = sc.math_variant(rng, p, f"twin-{p.pid}", "numbers")
            if twin.prompt not in eval_prompts:
                text = sc.reasoning_text(rng, twin, twin.reference, "hash", 0, wrong=False)
                records.append(
                    {"id": twin.pid, "prompt": twin.prompt, "response": text, "reference": twin.reference}
                )
    by_id = {p.pid: p for p in problems}
    for pid in sorted(contaminated):
        p = by_id[pid]
        response = (
            p.solution
            if p.domain == "code"
            else sc.reasoning_text(rng, p, p.reference, "hash", 0, wrong=False)
        )
        records.append(
            {"id": f"leak-{pid}", "prompt": p.prompt, "response": response, "source": "web-scrape"}
        )
    if spec.label == "data_quality":
        records += [dict(r) for r in rng.sample(records, k=max(2, round(0.15 * len(records))))]
    rng.shuffle(records)
    if spec.train_chat:
        return [_as_chat(r) for r in records]
    return records


def _as_chat(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in ("prompt", "response")}
    out["messages"] = [
        {"role": "user", "content": rec["prompt"]},
        {"role": "assistant", "content": rec["response"]},
    ]
    return out


def _manifest(
    spec: ScenarioSpec, rng: random.Random, train_path: Path, n_train: int
) -> tuple[dict, str | None]:
    sha = hashlib.sha256(train_path.read_bytes()).hexdigest()
    m: dict[str, Any] = {
        "teacher": {"name": "acme/teacher-7b-instruct", "revision": "9f1c2e7a", "license": "apache-2.0"},
        "student_base": {"name": "acme/student-1b", "revision": "1b2d3f4e", "license": "mit"},
        "prompts": [{"source": "synthetic-math-v2", "license": "cc-by-4.0", "count": n_train}],
        "generation": {
            "temperature": 0.7,
            "top_p": 0.95,
            "max_new_tokens": 512,
            "samples_per_prompt": 1,
            "seed": 1234,
        },  # fmt: skip
        "filters": [
            {
                "name": "answer-check",
                "rule": "final answer equals reference",
                "kept": n_train,
                "dropped": rng.randint(5, 80),
            }
        ],  # fmt: skip
        "decontamination": {
            "benchmarks": ["eval-set"],
            "method": "13-gram overlap",
            "ngram": 13,
            "threshold": 0.8,
            "removed": rng.randint(0, 12),
        },  # fmt: skip
        "dataset_sha256": sha,
    }
    fault = None
    if spec.label == "provenance":
        fault = spec.provenance_fault or PROVENANCE_FAULTS[spec.seed % len(PROVENANCE_FAULTS)]
        if fault == "license":
            m["teacher"]["license"] = rng.choice(("cc-by-nc-4.0", "cc-by-nc-sa-4.0", "research-only"))
        elif fault == "decontamination":
            del m["decontamination"]
        else:
            m["dataset_sha256"] = hashlib.sha256(b"an older version of the data").hexdigest()
    return m, fault


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------- public
def build_scenario(spec: ScenarioSpec, directory: Path) -> Scenario:
    """Write the scenario's files under ``directory`` and return where they are."""
    if spec.label != "clean" and spec.label not in MODES:
        raise ValueError(f"unknown label {spec.label!r}")
    rng = random.Random(f"{spec.label}/{spec.seed}/{spec.n}/{spec.teacher_acc}")
    directory.mkdir(parents=True, exist_ok=True)
    problems, spare_code = _eval_problems(spec, rng)
    contaminated: set[str] = set()
    if spec.label == "contamination":
        contaminated = {p.pid for p in rng.sample(problems, k=max(2, round(0.1 * len(problems))))}
    teacher, student = _model_outputs(spec, rng, problems, contaminated)
    items = [p.item_record() for p in problems]
    rng.shuffle(items)
    paths = {k: directory / f"{k}.jsonl" for k in ("items", "teacher", "student")}
    _write_jsonl(paths["items"], items)
    _write_jsonl(paths["teacher"], teacher)
    _write_jsonl(paths["student"], student)
    planted: dict[str, object] = {"contaminated": sorted(contaminated)}
    needs_train = spec.with_train or spec.label in ("data_quality", "contamination", "provenance")
    if needs_train:
        records = _train_records(spec, rng, problems, spare_code, contaminated)
        paths["train"] = directory / "train.jsonl"
        _write_jsonl(paths["train"], records)
        if spec.with_manifest or spec.label == "provenance":
            manifest, fault = _manifest(spec, rng, paths["train"], len(records))
            paths["manifest"] = directory / "provenance.yaml"
            paths["manifest"].write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
            planted["provenance_fault"] = fault
    return Scenario(spec, directory, paths, planted)

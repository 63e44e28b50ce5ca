"""Exposure bias: the student degenerates as its own generations grow longer, much faster than the teacher.

Trained only on teacher-written prefixes, a student never learns to continue from its own
mistakes; at inference the mismatch compounds with length. The output-level signature, per
item and per model:

- ``degenerate`` = a repetition loop, or no final answer (none the verifier could extract, or, when
  the teacher marks answers explicitly in >= 80% of outputs, a 20+-word output without such a
  marker: a derivation cut off mid-way; not for code items), a truncated ending (:mod:`text_features`),
  or a switch of writing system mid-output (``mixed script``);
- ``derailed``: in outputs with checkable ``a op b = c`` steps, the first wrong step is carried
  into later steps or the answer instead of being corrected. Every model carries some errors on,
  so only a student carrying them on much more often than the teacher (Fisher exact, one-sided,
  difference >= 0.2, at least 10 student outputs with a wrong step) counts, and only as ``warn``.

Items are bucketed by the TEACHER's output length in words, not the student's: a looping or
rambling student output is long *because* it degenerated, so bucketing by its own length would
find "degeneration grows with length" in any run (circular). The teacher's length measures how
long a generation the item needs (when it barely varies: the reference's, then the prompt's length).

Tests, with d_i = student_degenerate_i - teacher_degenerate_i (paired on the item):
- compounding: DiD = mean(d | long) - mean(d | short), long = teacher length above the median;
  one-sided permutation test of the long/short labels (Welch's t-test above 2,000 items),
  percentile bootstrap CI over items;
- long bucket: one-sided exact McNemar (student vs teacher degeneration on the same long items);
- overall: the same McNemar on all items (degeneration with no length trend gives ``warn``).

``fail`` needs both the DiD and the long-bucket test significant (intersection-union test: the
primary p is the larger of the two), DiD >= 0.10 with its CI above 0, the long-bucket excess
>= 0.10, at least ``MIN_ITEMS`` items and ``MIN_SIDE`` per side. This separates exposure bias
from a capacity gap (accuracy on hard slices): a student that is merely less accurate, even much
less accurate on long items, still ends its outputs with an answer and does not loop.
Model-based measurements (``--teacher-model --student-model``, :mod:`exposure_models`) are
supporting evidence: on their own at most ``warn``, and they upgrade an output-level ``warn``
that rests on a significant degeneration excess on a big enough sample to ``fail`` only when the
R_l CI lies entirely above ``R_MARGIN`` on at least ``R_MIN_PROMPTS`` prompts.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from scipy.stats import ttest_ind

from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, StatTest, skipped
from distill_doctor.stats import (
    binom_test_greater,
    bootstrap_distribution,
    fisher_exact,
    json_float,
    json_interval,
    percentile_ci,
    permutation_test,
)
from distill_doctor.text.text_features import (
    cut_off_in_reasoning,
    explicit_answer_format,
    mixed_script,
    repetition_loop,
    truncated,
    word_count,
)

MODE = "exposure_bias"
MIN_ITEMS = 40
MIN_SIDE = 15
DID_MARGIN = 0.10
LONG_MARGIN = 0.10
OVERALL_MARGIN = 0.05
N_BUCKETS = 4
R_MARGIN = 1.5
R_MIN_PROMPTS = 32
DERAIL_MARGIN = 0.2
PERMUTATION_MAX_N = 2000
EXPLICIT_SHARE = 0.8
MIN_REASONING_WORDS = 20
MIN_DERAILED = 10
GUARDRAIL = (
    "distill-doctor train gkd --config gkd.yaml --set gkd.lmbda=0.5  "
    "# on-policy GKD: the student learns from its own generations; meanwhile cap max_new_tokens "
    "and add a repetition penalty at inference"
)
_NUM = r"-?\d+(?:\.\d+)?"
_EQ = re.compile(rf"({_NUM})\s*([-+*/×x])\s*({_NUM})\s*=\s*({_NUM})")


def _apply(a: float, op: str, b: float) -> float | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in "*×x":
        return a * b
    return a / b if b != 0 else None


def _same(x: float, y: float) -> bool:
    return abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y))


def derailment(text: str | None, final_answer: str | None = None) -> str | None:
    """How an output continues after its first wrong ``a op b = c`` step.

    Returns ``None`` (no wrong checkable step), ``"carried"`` (the wrong value is reused by a later
    step or is the final answer, and the right value never appears), ``"recovered"`` (the right
    value appears later) or ``"stopped"`` (nothing after the wrong step uses either value).
    """
    if not text:
        return None
    eqs = list(_EQ.finditer(text[:20_000]))
    for k, m in enumerate(eqs):
        a, op, b, c = float(m.group(1)), m.group(2), float(m.group(3)), float(m.group(4))
        right = _apply(a, op, b)
        if right is None or _same(right, c):
            continue
        later = [float(x) for x in re.findall(_NUM, text[m.end() :])]
        if any(_same(x, right) for x in later):
            return "recovered"
        reused = any(_same(float(e.group(1)), c) or _same(float(e.group(3)), c) for e in eqs[k + 1 :])
        try:
            ends_on_it = final_answer is not None and _same(float(final_answer), c) and bool(later)
        except ValueError:
            ends_on_it = False
        return "carried" if reused or ends_on_it else "stopped"
    return None


def degeneration(text: str | None, answer_missing: bool, *, is_code: bool) -> list[str]:
    """The degeneration signs of one output (empty when none)."""
    signs = []
    if repetition_loop(text):
        signs.append("loop")
    if answer_missing and not is_code:
        signs.append("no final answer")
    if cut_off_in_reasoning(text):
        signs.append("cut off inside reasoning")
    elif truncated(text):
        signs.append("truncated")
    if mixed_script(text):
        signs.append("mixed script")
    return signs


def student_degeneration(inputs: DiagnosisInputs, ids: list[str]) -> dict[str, list[str]]:
    """This probe's degeneration signs of the student's outputs on ``ids``, by item id.

    The same definition :func:`run` uses, so other probes (capacity_gap's degenerate-collapse rule)
    count exactly what this probe counts: "no final answer" includes a reasoning-length output
    without an answer marker in a run whose teacher marks its answers (a derivation cut off mid-way,
    where a last-number fallback still extracts a number). The convention is read from the
    teacher's outputs on every scored item, as in :func:`run`.
    """
    if inputs.teacher is None:
        return {}
    items = {it.id: it for it in inputs.items}
    scored = [i for i in inputs.scored_ids() if i in inputs.teacher and i in inputs.student]
    explicit = _explicit_convention(
        [inputs.teacher[i].output for i in scored], [items[i].verifier_kind == "code" for i in scored]
    )
    out = {}
    for i in ids:
        text, answer = inputs.student[i].output, inputs.student_verdicts[i].answer
        is_code = items[i].verifier_kind == "code"
        out[i] = degeneration(text, _answer_missing(text, answer, explicit), is_code=is_code)
    return out


def _explicit_convention(teacher_texts: list[str], is_code: list[bool]) -> bool:
    """Whether the teacher marks its final answers explicitly (boxed, ####, "answer is") in >= 80% of outputs."""
    texts = [x for x, c in zip(teacher_texts, is_code) if not c]
    if not texts:
        return False
    return sum(explicit_answer_format(x) is not None for x in texts) >= EXPLICIT_SHARE * len(texts)


def _answer_missing(text: str | None, answer: str | None, explicit: bool) -> bool:
    """No final answer: none extracted, or (when the run marks answers explicitly) a reasoning-length
    output without a marker. The numeric fallback "last number in the text" finds an "answer" in a
    derivation cut off mid-way; a terse output ("42") is not flagged."""
    if answer is None:
        return True
    return explicit and word_count(text) >= MIN_REASONING_WORDS and explicit_answer_format(text) is None


def _bucket_edges(lengths: np.ndarray) -> list[float]:
    qs = np.quantile(lengths, np.linspace(0, 1, N_BUCKETS + 1)[1:-1])
    return sorted(set(float(q) for q in qs))


def _by_length(lengths, t_ok, s_ok, t_deg, s_deg) -> list[dict[str, Any]]:
    edges = _bucket_edges(lengths)
    which = np.searchsorted(edges, lengths, side="left")
    rows = []
    for b in range(len(edges) + 1):
        sel = which == b
        if not sel.any():
            continue
        lo, hi = int(lengths[sel].min()), int(lengths[sel].max())
        rows.append(
            {
                "bucket": f"{lo}-{hi}",
                "n": int(sel.sum()),
                "teacher_acc": json_float(t_ok[sel].mean()),
                "student_acc": json_float(s_ok[sel].mean()),
                "teacher_degenerate": json_float(t_deg[sel].mean()),
                "student_degenerate": json_float(s_deg[sel].mean()),
            }
        )
    return rows


def _mcnemar_greater(s: np.ndarray, t: np.ndarray) -> tuple[int, int, float]:
    """One-sided exact McNemar: does the student degenerate where the teacher does not, more than the reverse?"""
    b = int((s & ~t).sum())
    c = int((t & ~s).sum())
    return b, c, binom_test_greater(b, b + c, 0.5)


def _did_stat(d: np.ndarray, long: np.ndarray) -> np.ndarray:
    """(B, n) d and long-labels -> (B,) mean(d | long) - mean(d | short); nan when a side is empty."""
    lf = long.astype(float)
    nl, ns = lf.sum(-1), (1 - lf).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (d * lf).sum(-1) / nl - (d * (1 - lf)).sum(-1) / ns


def _did_test(d: np.ndarray, long: np.ndarray, seed: int) -> tuple[float, float, str]:
    """DiD and its one-sided p: a permutation test of the long/short labels (2,000 permutations);
    above ``PERMUTATION_MAX_N`` items Welch's t-test, whose normal approximation is then excellent."""
    if len(d) <= PERMUTATION_MAX_N:
        did, p, _ = permutation_test(
            lambda lab: _did_stat(d[None, :], lab),
            long.astype(int),
            n_perm=2000,
            seed=seed,
            alternative="greater",
        )
        return float(did), float(p), "permutation test"
    did = float(_did_stat(d[None, :], long[None, :])[0])
    res = ttest_ind(d[long], d[~long], equal_var=False, alternative="greater")
    p = float(res.pvalue) if np.isfinite(res.pvalue) else (0.0 if did > 0 else 1.0)
    return did, p, "Welch t-test"


def run(inputs: DiagnosisInputs) -> Finding:
    ids = [i for i in inputs.scored_ids() if inputs.teacher and i in inputs.teacher and i in inputs.student]
    items = {it.id: it for it in inputs.items}
    n = len(ids)
    tv, sv = inputs.teacher_verdicts, inputs.student_verdicts
    if n == 0 or tv is None:  # nothing tested: never a pass
        return skipped(MODE, "no item has both a teacher and a student output to compare")
    is_code = [items[i].verifier_kind == "code" for i in ids]
    t_text = [inputs.teacher[i].output for i in ids]
    s_text = [inputs.student[i].output for i in ids]
    explicit = _explicit_convention(t_text, is_code)
    t_signs = [
        degeneration(x, _answer_missing(x, tv[i].answer, explicit), is_code=c)
        for x, i, c in zip(t_text, ids, is_code)
    ]
    s_signs = [
        degeneration(x, _answer_missing(x, sv[i].answer, explicit), is_code=c)
        for x, i, c in zip(s_text, ids, is_code)
    ]
    t_deg = np.array([bool(x) for x in t_signs])
    s_deg = np.array([bool(x) for x in s_signs])
    t_ok = np.array([tv[i].passed for i in ids], dtype=bool)
    s_ok = np.array([sv[i].passed for i in ids], dtype=bool)
    measure, lengths = _length_measure([items[i] for i in ids], t_text)
    d = s_deg.astype(float) - t_deg.astype(float)

    long = lengths > np.median(lengths)
    n_long, n_short = int(long.sum()), int((~long).sum())
    b_all, c_all, p_all = _mcnemar_greater(s_deg, t_deg)
    excess_all = (b_all - c_all) / n
    b_long, c_long, p_long = _mcnemar_greater(s_deg[long], t_deg[long])
    excess_long = (b_long - c_long) / n_long if n_long else 0.0
    tests = [
        StatTest(
            "exact McNemar, one-sided (student degenerates more than teacher, all items)",
            n,
            json_float(p_all),
            json_float(excess_all),
            "student - teacher degeneration",
            statistic=float(b_all),
        ),
        StatTest(
            "exact McNemar, one-sided (long half by teacher length)",
            n_long,
            json_float(p_long),
            json_float(excess_long),
            "student - teacher degeneration (long)",
            statistic=float(b_long),
        ),
    ]
    did = p_did = None
    did_ci: tuple[float, float] | None = None
    if n_long and n_short:
        did, p_did, did_test = _did_test(d, long, inputs.seed)
        reps = bootstrap_distribution(
            _did_stat, d, long, n_boot=2000 if n <= PERMUTATION_MAX_N else 1000, seed=inputs.seed
        )
        did_ci = percentile_ci(reps)
        tests.insert(
            0,
            StatTest(
                f"{did_test}, one-sided (DiD of degeneration, long vs short)",
                n,
                json_float(p_did),
                json_float(did),
                "DiD (student - teacher degeneration)",
                ci=(json_float(did_ci[0]), json_float(did_ci[1])),
            ),
        )
        acc_d = t_ok.astype(float) - s_ok.astype(float)
        acc_did = float(_did_stat(acc_d[None, :], long[None, :])[0])
    else:
        acc_did = None

    derail = {
        "teacher": _derail_counts(t_text, [tv[i].answer for i in ids]),
        "student": _derail_counts(s_text, [sv[i].answer for i in ids]),
    }
    derail_test = _derail_test(derail)
    if derail_test is not None:
        tests.append(derail_test)
    metrics: dict[str, Any] = {
        "n": n,
        "length_measure": measure,
        "median_length": json_float(float(np.median(lengths))),
        "n_long": n_long,
        "n_short": n_short,
        "teacher_degenerate": json_float(t_deg.mean()),
        "student_degenerate": json_float(s_deg.mean()),
        "student_signs": _sign_counts(s_signs),
        "teacher_signs": _sign_counts(t_signs),
        "did_degeneration": json_float(did),
        "did_ci": json_interval(did_ci),
        "excess_long": json_float(excess_long),
        "excess_all": json_float(excess_all),
        "did_accuracy_gap": json_float(acc_did),
        "derailment": derail,
        "by_length": _by_length(lengths, t_ok, s_ok, t_deg, s_deg),
        "rules": {
            "min_items": MIN_ITEMS,
            "min_side": MIN_SIDE,
            "did_margin": DID_MARGIN,
            "long_margin": LONG_MARGIN,
            "overall_margin": OVERALL_MARGIN,
            "r_margin": R_MARGIN,
        },
    }

    alpha = inputs.alpha
    big = n >= MIN_ITEMS and min(n_long, n_short) >= MIN_SIDE
    compounding = (
        p_did is not None
        and p_did < alpha
        and p_long < alpha
        and did >= DID_MARGIN
        and did_ci is not None
        and did_ci[0] > 0
        and excess_long >= LONG_MARGIN
    )
    uniform = p_all < alpha and excess_all >= OVERALL_MARGIN
    small_signal = excess_long >= 2 * LONG_MARGIN and b_long >= 3 and (did or 0) >= DID_MARGIN
    carries = (
        derail_test is not None
        and derail_test.p_value is not None
        and derail_test.p_value < alpha
        and (derail_test.effect or 0) >= DERAIL_MARGIN
    )
    primary = max(p_did, p_long) if p_did is not None else p_all
    metrics["derailment_warn"] = bool(carries)

    if compounding and big:
        verdict = "fail"
    elif compounding or uniform or small_signal or carries:
        verdict = "warn"
    else:
        verdict = "pass"

    if inputs.teacher_model is not None and inputs.student_model is not None:
        verdict = _with_models(inputs, ids, metrics, tests, verdict, big and (uniform or compounding))

    summary = _summary(verdict, metrics, compounding, uniform)
    evidence = _evidence(ids, long, lengths, s_deg, t_deg, s_signs)
    return Finding(
        MODE,
        verdict,
        summary,
        metrics=metrics,
        evidence=evidence,
        guardrail=GUARDRAIL,
        tests=tests,
        p_value=json_float(primary),
        n=n,
    )


def _derail_counts(texts: list[str], answers: list[str | None]) -> dict[str, Any]:
    counts = {"carried": 0, "recovered": 0, "stopped": 0}
    for x, a in zip(texts, answers):
        kind = derailment(x, a)
        if kind:
            counts[kind] += 1
    decided = counts["carried"] + counts["recovered"]
    counts["carried_share"] = json_float(counts["carried"] / decided) if decided else None
    return counts


def _length_measure(items: list, teacher_texts: list[str]) -> tuple[str, np.ndarray]:
    """The generation length an item needs, never the student's own: the teacher's output words;
    when those barely vary (a median split leaves fewer than ``MIN_SIDE`` on a side), the
    reference's words, then the prompt's words."""
    candidates = [
        ("teacher output words", [word_count(x) for x in teacher_texts]),
        (
            "reference words",
            [word_count(str(it.reference)) if it.reference is not None else 0 for it in items],
        ),
        ("prompt words", [word_count(it.prompt) for it in items]),
    ]
    for name, values in candidates:
        arr = np.asarray(values, dtype=float)
        long = arr > np.median(arr)
        if min(int(long.sum()), int((~long).sum())) >= MIN_SIDE:
            return name, arr
    return candidates[0][0], np.asarray(candidates[0][1], dtype=float)


def _derail_test(derail: dict[str, Any]) -> StatTest | None:
    """Fisher exact, one-sided: after a first wrong step, does the student carry the error on more often?"""
    s, t = derail["student"], derail["teacher"]
    ns, nt = s["carried"] + s["recovered"], t["carried"] + t["recovered"]
    if ns < MIN_DERAILED or nt == 0:
        return None
    odds, p = fisher_exact(s["carried"], s["recovered"], t["carried"], t["recovered"], alternative="greater")
    return StatTest(
        "Fisher exact, one-sided (student carries its first wrong step on more often than the teacher)",
        ns + nt,
        json_float(p),
        json_float(s["carried"] / ns - t["carried"] / nt),
        "carried share student - teacher",
        statistic=json_float(odds),
    )


def _sign_counts(signs: list[list[str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in signs:
        for k in s:
            out[k] = out.get(k, 0) + 1
    return out


def _evidence(ids, long, lengths, s_deg, t_deg, s_signs) -> list[dict[str, str]]:
    only_student = [k for k in range(len(ids)) if s_deg[k] and not t_deg[k]]
    only_student.sort(key=lambda k: (not long[k], -lengths[k]))
    return [
        {
            "id": ids[k],
            "why": f"student output: {', '.join(s_signs[k])}; the teacher's "
            f"({int(lengths[k])} words) is clean",
        }
        for k in only_student[:10]
    ]


def _summary(verdict: str, m: dict[str, Any], compounding: bool, uniform: bool) -> str:
    s, t = m["student_degenerate"], m["teacher_degenerate"]
    if verdict == "pass":
        return (
            f"No compounding degeneration: student {s:.0%} vs teacher {t:.0%} degenerate outputs, "
            "with no excess growing with length."
        )
    if compounding:
        return (
            f"Student degeneration grows with generation length faster than the teacher's (DiD "
            f"{m['did_degeneration']:+.2f}, long-half excess {m['excess_long']:+.2f}): train on-policy."
        )
    if uniform:
        return (
            f"The student degenerates more often than the teacher ({s:.0%} vs {t:.0%}) but not clearly "
            "more on long generations: check loops and missing answers."
        )
    if m.get("derailment_warn"):
        ds, dt = m["derailment"]["student"]["carried_share"], m["derailment"]["teacher"]["carried_share"]
        return (
            f"After a first wrong step the student carries the error on ({ds:.0%}) far more often than "
            f"the teacher ({dt:.0%}), which corrects itself: it never learned to recover from its own mistakes."
        )
    mb = m.get("model_based")
    if mb and mb.get("ratios") and mb["ratios"][-1].get("ratio") is not None:
        r = mb["ratios"][-1]
        return (
            f"The student diverges from the teacher {r['ratio']:.2f}x more on its own prefixes than on the "
            f"teacher's (R_l at {r['length']} tokens): exposure bias at the model level."
        )
    return "Signs of exposure bias too weak or too few to be conclusive: inspect the listed outputs."


def _with_models(inputs: DiagnosisInputs, ids, metrics, tests, verdict: str, upgradable: bool) -> str:
    """Add the model-based divergence ratio; upgrade conservatively (see the module docstring)."""
    from distill_doctor.probes.exposure_models import measure_exposure_bias

    items = {it.id: it for it in inputs.items}
    res = measure_exposure_bias(
        inputs.teacher_model, inputs.student_model, [items[i] for i in ids], seed=inputs.seed
    )
    metrics["model_based"] = res
    longest = res["ratios"][-1] if res.get("ratios") else None
    if longest is None or longest.get("ci") is None or longest["ci"][0] is None:
        return verdict
    tests.append(
        StatTest(
            f"R_l = L_FR / L_TF at l = {longest['length']} (bootstrap over prompts)",
            res["n_prompts"],
            None,
            longest["ratio"],
            "R_l",
            ci=(longest["ci"][0], longest["ci"][1]),
        )
    )
    strong = res["n_prompts"] >= R_MIN_PROMPTS and longest["ci"][0] > R_MARGIN
    if strong and verdict == "pass":
        return "warn"
    if strong and verdict == "warn" and upgradable:  # significant output-level excess on a big sample
        return "fail"
    return verdict


PROBE = Probe(
    mode=MODE,
    needs=("teacher",),
    run=run,
    describe="Degeneration (loops, missing answers, truncation) of student vs teacher as a function of "
    "the teacher's output length; with models, Arora et al.'s R_l = L_FR / L_TF.",
)

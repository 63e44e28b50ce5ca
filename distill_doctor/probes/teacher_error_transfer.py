"""Teacher error transfer: does the student reproduce the teacher's *specific* wrong answers?

Why not just error consistency: two independent models are both wrong on hard items, and
on the same item they often land on the same attractive wrong answer (an off-by-one, a
common slip). So kappa (reported, with a bootstrap CI) is context, not the verdict.

Primary test. Among items where both models are wrong and both wrong answers were
extracted (``n_bw``), count ``k`` where the student's answer equals the teacher's.
Exact one-sided binomial test of k/n_bw against a chance rate p0, where p0 is the largest of:
- ``cross_item``: how often a student wrong answer equals the teacher's wrong answer on a
  *different* both-wrong item with the same reference (the answer space's concentration);
- ``global``: the same over all pairs of different both-wrong items (both models falling
  back on one default answer such as "0");
- ``code``: for code items, how often a student completion is "the same program" as the
  teacher's completion of a different item (stubs that coincide);
- ``choice``: 1 / (K - 1) for multiple-choice items with K options seen;
- ``floor`` = 0.25: allowance for shared attractor wrong answers on the same item, which
  no cross-item baseline can see.
Fail needs >= 30 scored items, n_bw >= 10, p < alpha, and a practically large rate: k/n_bw >= max(0.5, 2 p0).
Fewer both-wrong items, or a significant but smaller rate, give at most ``warn``.

Code items: the verdict's answer is a failure signature ("AssertionError"), far too coarse;
a code pair counts as the same wrong answer only with the same signature *and* the same
program: the completions (normalised code minus the prompt's lines) both have >= 8 words
and a word 3-gram Jaccard >= 0.9.

When ``train`` is given, eval items whose prompt appears in the training set are kept out of
the primary test: a wrong answer repeated there is memorisation of that training row, which is
contamination's finding. With references, those items whose training target is wrong form the
"echo": the share where the student repeats the wrong target (reported; ``warn`` at most).
Also reported: teacher formatting faults (no answer, truncated, looping) the student repeats
(Fisher exact test).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from distill_doctor.data.records import Item, Judgement
from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, StatTest
from distill_doctor.probes.wrong_answer_chance import (
    choice_chance,
    code_chance,
    code_completion,
    cross_item_chance,
    global_chance,
    same_code,
)
from distill_doctor.stats import (
    binom_test_greater,
    bootstrap_ci,
    clopper_pearson,
    cohen_kappa,
    fisher_exact,
    json_float,
    json_interval,
    kappa_statistic,
)
from distill_doctor.text import text_features as tf

MODE = "teacher_error_transfer"
MIN_BOTH_WRONG = 10
MIN_ITEMS = 30  # a run this small gives at most warn, however many errors it shares
CHANCE_FLOOR = 0.25
MIN_RATE = 0.5
GUARDRAIL = (
    "Filter the teacher's targets with the verifier before training: "
    "`distill-doctor generate --reject-with verifier ...`, then retrain; for items without a "
    "reference, sample several teacher answers and keep the majority answer."
)


def _same_wrong(item: Item, t: Judgement, s: Judgement, t_text: str, s_text: str) -> bool:
    if t.answer is None or s.answer is None or t.answer != s.answer:
        return False
    if item.verifier_kind != "code":
        return True
    return same_code(code_completion(item, t_text), code_completion(item, s_text))


def _format_faults(item: Item, text: str | None, verdict: Judgement) -> bool:
    """No extractable answer (not for code, whose passing verdicts carry no answer), truncation or a loop."""
    no_answer = item.verifier_kind != "code" and verdict.answer is None
    return no_answer or tf.truncated(text) or tf.repetition_loop(text)


def _norm(prompt: object) -> str:
    return " ".join(str(prompt).split())


def _train_keys(prompt: object) -> list[str]:
    """Normalised forms of a training prompt: as is, and (chat rows, rendered by the loader
    as ``role: content`` lines) the content of the last ``user:`` message."""
    text = str(prompt)
    keys = [_norm(text)]
    marker = text.rfind("user: ")
    if marker != -1 and (marker == 0 or text[marker - 1] == "\n"):
        keys.append(_norm(text[marker + len("user: ") :]))
    return keys


def _train_prompt_rows(ds: Any, has_ref: bool) -> Iterator[tuple[str, list | None, list | None, int]]:
    """``(prompt, shard responses, shard references, position in the shard)`` for every training row,
    read shard by shard (columnar, bounded memory; see ``probes/shards.py``)."""
    from distill_doctor.probes.shards import source_of

    src = source_of(ds)
    for shard in src.shards():
        cols = src.read(shard, ["prompt", "response", "reference"] if has_ref else ["prompt"])
        responses, refs = (cols["response"], cols["reference"]) if has_ref else (None, None)
        for row, prompt in enumerate(cols["prompt"]):
            yield prompt or "", responses, refs, row


def _train_overlap(inputs: DiagnosisInputs, items: dict[str, Item]) -> tuple[set[str], dict[str, Any] | None]:
    """Eval item ids whose prompt is in the training set, and (with references) the echo:
    of those whose training target is wrong, how many the student answers the same way."""
    ds = inputs.train
    if ds is None or "prompt" not in getattr(ds, "column_names", []):
        return set(), None
    wanted: dict[str, list[Item]] = defaultdict(list)
    for it in items.values():
        wanted[_norm(it.prompt)].append(it)
    has_ref = "reference" in ds.column_names and "response" in ds.column_names
    if has_ref:
        from distill_doctor.verify import extract_answer, verify
    seen: set[str] = set()
    hits: dict[str, str] = {}  # item id -> wrong target answer
    for prompt, responses, refs, row in _train_prompt_rows(ds, has_ref):
        matches = next((wanted[k] for k in _train_keys(prompt) if k in wanted), None)
        if not matches:
            continue
        seen.update(it.id for it in matches)
        if not has_ref or refs[row] is None:
            continue
        for it in matches:
            if it.verifier_kind == "code":
                continue
            if it.verifier_kind == "math":  # equal forms differ as strings: compare with math-verify
                v = verify(replace(it, reference=refs[row]), str(responses[row] or ""))
                if not v.passed and v.answer is not None:
                    hits[it.id] = v.answer
                continue
            try:
                ans = extract_answer(str(responses[row] or ""), it.verifier_kind)
                ref_ans = extract_answer(str(refs[row]), it.verifier_kind)
            except Exception:
                continue
            if ans is not None and ref_ans is not None and ans != ref_ans:
                hits[it.id] = ans
    if not has_ref:
        return seen, None
    sv = inputs.student_verdicts
    scored = [(i, a) for i, a in hits.items() if i in sv]
    repeated = [i for i, a in scored if sv[i].answer == a]
    return seen, {"n": len(scored), "k": len(repeated), "ids": repeated[:10]}


def run(inputs: DiagnosisInputs) -> Finding:
    items = {it.id: it for it in inputs.items}
    ids = inputs.scored_ids()
    tv, sv = inputs.teacher_verdicts or {}, inputs.student_verdicts
    t_out = inputs.teacher or {}
    s_out = inputs.student
    n = len(ids)
    t_ok = np.array([tv[i].passed for i in ids], dtype=bool)
    s_ok = np.array([sv[i].passed for i in ids], dtype=bool)

    # Items whose prompt is in the training set: a repeated wrong answer there is memorisation
    # of that row (contamination territory); reported as the echo, kept out of the primary test.
    seen, echo = _train_overlap(inputs, items)
    teacher_wrong = [i for i in ids if not tv[i].passed and tv[i].answer is not None and i not in seen]
    both_wrong = [i for i in teacher_wrong if not sv[i].passed and sv[i].answer is not None]
    same = [
        i
        for i in both_wrong
        if _same_wrong(
            items[i],
            tv[i],
            sv[i],
            t_out[i].output if i in t_out else "",
            s_out[i].output if i in s_out else "",
        )
    ]
    n_tw, n_bw, k = len(teacher_wrong), len(both_wrong), len(same)

    plain = [i for i in both_wrong if items[i].verifier_kind != "code"]  # code signatures are not answers
    p_global = global_chance([tv[i].answer for i in plain], [sv[i].answer for i in plain])
    code_items = [i for i in both_wrong if items[i].verifier_kind == "code"]
    p_code = code_chance(
        [
            (
                code_completion(items[i], t_out[i].output if i in t_out else ""),
                code_completion(items[i], s_out[i].output if i in s_out else ""),
                tv[i].answer,
                sv[i].answer,
            )
            for i in code_items
        ],
        inputs.seed,
    )
    cross, cross_pairs = cross_item_chance(
        [str(items[i].reference) for i in plain],
        [tv[i].answer for i in plain],
        [sv[i].answer for i in plain],
        [items[i].group or f"#{i}" for i in plain],
    )
    choice = choice_chance([items[i] for i in both_wrong], CHANCE_FLOOR) if both_wrong else 0.0
    p0 = max(cross, p_global, p_code, choice, CHANCE_FLOOR)
    rate = k / n_bw if n_bw else float("nan")
    p_primary = binom_test_greater(k, n_bw, p0) if n_bw else None
    rate_ci = clopper_pearson(k, n_bw)
    threshold = max(MIN_RATE, 2 * p0)

    kappa = cohen_kappa(t_ok, s_ok) if n else float("nan")
    kappa_ci = bootstrap_ci(kappa_statistic, t_ok, s_ok, n_boot=1000, seed=inputs.seed) if n >= 2 else None

    tests = [
        StatTest(
            name=f"exact binomial, same wrong answer vs chance p0={p0:.3f} (one-sided)",
            n=n_bw,
            p_value=p_primary,
            effect=json_float(rate),
            effect_name="same-wrong-answer rate among both-wrong items",
            ci=rate_ci,
        ),
        StatTest(
            name="error consistency (Cohen's kappa, paired bootstrap CI)",
            n=n,
            p_value=None,
            effect=json_float(kappa),
            effect_name="kappa",
            ci=tuple(json_float(x) for x in kappa_ci) if kappa_ci else None,
        ),
    ]

    # Training targets that carry wrong answers, echoed by the student (supporting evidence).
    if echo is not None and echo["n"]:
        p_echo = binom_test_greater(echo["k"], echo["n"], p0)
        echo["rate"] = json_float(echo["k"] / echo["n"])
        echo["p_value"] = json_float(p_echo, 8)
        tests.append(
            StatTest(
                name=f"exact binomial, student repeats wrong training target vs p0={p0:.3f}",
                n=echo["n"],
                p_value=p_echo,
                effect=echo["rate"],
                effect_name="share of wrong training targets repeated",
                ci=clopper_pearson(echo["k"], echo["n"]),
            )
        )

    # Recurring teacher formatting faults reproduced by the student.
    t_fault = np.array(
        [_format_faults(items[i], t_out[i].output if i in t_out else None, tv[i]) for i in ids], bool
    )
    s_fault = np.array(
        [_format_faults(items[i], s_out[i].output if i in s_out else None, sv[i]) for i in ids], bool
    )
    fmt: dict[str, Any] = {"teacher_faults": int(t_fault.sum()), "student_faults": int(s_fault.sum())}
    if t_fault.any() and (~t_fault).any():
        a, b = int((t_fault & s_fault).sum()), int((t_fault & ~s_fault).sum())
        c, d = int((~t_fault & s_fault).sum()), int((~t_fault & ~s_fault).sum())
        odds, p_fmt = fisher_exact(a, b, c, d, alternative="greater")
        fmt.update(both=a, odds_ratio=json_float(odds), p_value=json_float(p_fmt, 8))
        tests.append(
            StatTest(
                "Fisher exact, student format fault given teacher fault",
                n,
                p_fmt,
                json_float(odds),
                "odds ratio",
            )
        )

    primary_ok = (
        n >= MIN_ITEMS
        and n_bw >= MIN_BOTH_WRONG
        and p_primary is not None
        and p_primary < inputs.alpha
        and rate >= threshold
    )
    if primary_ok:
        verdict, p_value = "fail", p_primary
    elif p_primary is not None and p_primary < inputs.alpha and rate >= 1.5 * p0:
        verdict, p_value = "warn", p_primary
    elif n_bw and n_bw < MIN_BOTH_WRONG and k >= 3 and rate >= threshold:
        verdict, p_value = "warn", p_primary
    elif echo is not None and echo["n"] and echo["k"] >= 3 and echo["k"] / echo["n"] >= 0.5:
        verdict, p_value = "warn", echo["p_value"]
    else:
        verdict, p_value = "pass", p_primary

    evidence = [
        {
            "id": i,
            "why": f"teacher and student both answered {tv[i].answer!s:.60} (reference {items[i].reference!s:.60})",
        }
        for i in same[:8]
    ]
    if echo is not None:
        evidence += [
            {"id": i, "why": "student repeats the wrong answer of its training target"}
            for i in echo["ids"][:2]
        ]

    pct = f"{rate:.0%}" if n_bw else "n/a"
    if verdict == "fail":
        summary = (
            f"The student repeats the teacher's exact wrong answer on {k} of {n_bw} items both get wrong "
            f"({pct}, chance {p0:.0%}): it learned the teacher's mistakes; filter the teacher's targets."
        )
    elif verdict == "warn":
        summary = (
            f"Some sign of inherited teacher errors ({k}/{n_bw} shared wrong answers, {pct} vs chance {p0:.0%}), "
            "not enough for a firm verdict; check the listed items."
        )
    elif n_bw == 0:
        summary = (
            "No items where both models are wrong with extracted answers, so no teacher error could transfer."
        )
    else:
        summary = (
            f"No sign of inherited teacher errors: {k} of {n_bw} shared wrong answers ({pct}), "
            f"consistent with chance ({p0:.0%})."
        )

    metrics = {
        "n": n,
        "teacher_wrong": n_tw,
        "both_wrong": n_bw,
        "same_wrong": k,
        "inherited_rate": json_float(k / n_tw) if n_tw else None,
        "inherited_rate_ci": list(clopper_pearson(k, n_tw)),
        "same_wrong_rate": json_float(rate),
        "same_wrong_rate_ci": list(rate_ci),
        "chance": {
            "p0": json_float(p0),
            "cross_item": json_float(cross),
            "global": json_float(p_global),
            "code": json_float(p_code),
            "cross_item_pairs": cross_pairs,
            "choice": json_float(choice),
            "floor": CHANCE_FLOOR,
        },
        "fail_rule": {
            "min_items": MIN_ITEMS,
            "min_both_wrong": MIN_BOTH_WRONG,
            "min_rate": json_float(threshold),
            "alpha": inputs.alpha,
        },
        "kappa": json_float(kappa),
        "kappa_ci": json_interval(kappa_ci),
        "student_acc_when_teacher_wrong": json_float(float(s_ok[~t_ok].mean())) if (~t_ok).any() else None,
        "student_acc_when_teacher_right": json_float(float(s_ok[t_ok].mean())) if t_ok.any() else None,
        "format_faults": fmt,
        "train_echo": echo,
        "excluded_seen_in_train": len(seen & set(ids)),
    }
    return Finding(
        mode=MODE,
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        evidence=evidence[:10],
        guardrail=GUARDRAIL if verdict != "pass" else "",
        tests=tests,
        p_value=p_value,
        n=n,
    )


PROBE = Probe(
    mode=MODE,
    needs=("teacher",),
    run=run,
    describe="Does the student give the teacher's specific wrong answers more often than chance?",
)

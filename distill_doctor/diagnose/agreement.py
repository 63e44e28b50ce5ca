"""The report's ``lm_eval_agreement`` block: the verifier against lm-eval's own logged metric.

The per-item comparison and the choice of the best (metric, filter) pair are measured in
:mod:`distill_doctor.verify.agreement` (the eval command prints them too); this module turns them
into the block of report.json, with a ``warning`` and the first disagreeing items when even the
best pair disagrees on more than :data:`MAX_DISAGREEMENT` of the items.
"""

from __future__ import annotations

from typing import Any

from distill_doctor.data.outputs import LoggedScores
from distill_doctor.data.records import Judgement
from distill_doctor.verify.agreement import MAX_DISAGREEMENT, best_pair

SHOWN_ITEMS = 10


def agreement_block(
    scores: LoggedScores | None, verdicts: dict[str, Judgement], ids: list[str]
) -> dict[str, Any] | None:
    """The ``lm_eval_agreement.<role>`` block of report.json, or None when lm-eval logged no score."""
    if scores is None or not scores.values:
        return None
    best, pairs = best_pair(scores, verdicts, ids)
    block: dict[str, Any] = {
        "samples_file": scores.path,
        "task": scores.task,
        "output_type": scores.output_type,
        "metric": best.metric,
        "filter": best.filter,
        "n": best.n,
        "agree": best.agree,
        "rate": best.rate,
        "lm_eval_accuracy": _mean(scores.values[(best.metric, best.filter)], ids),
        "pairs": [
            {"metric": p.metric, "filter": p.filter, "n": p.n, "agree": p.agree, "rate": p.rate}
            for p in pairs
        ],
        "disagreeing": [
            {"id": i, "verifier_passed": passed, "lm_eval": value}
            for i, passed, value in best.disagreeing[:SHOWN_ITEMS]
        ],
        "warning": None,
    }
    if scores.mc_rule is not None:
        block["mc_rule"] = scores.mc_rule
    if best.n and (best.n - best.agree) / best.n > MAX_DISAGREEMENT:
        first = ", ".join(i for i, _, _ in best.disagreeing[:5])
        block["warning"] = (
            f"the verifier and lm-eval's {best.label} disagree on {best.n - best.agree} of {best.n} items "
            f"({100 * (1 - best.agree / best.n):.1f}%, more than {100 * MAX_DISAGREEMENT:.0f}%): the accuracy may rest "
            f"on a misread task (first: {first})"
        )
    return block


def _mean(values: dict[str, float], ids: list[str]) -> float | None:
    scored = [values[i] for i in ids if i in values]
    return sum(scored) / len(scored) if scored else None


def warning_lines(blocks: dict[str, Any]) -> list[str]:
    """One console line per role whose agreement block carries a warning."""
    return [
        f"distill-doctor: warning: {role}: {block['warning']}"
        for role, block in blocks.items()
        if block and block.get("warning")
    ]

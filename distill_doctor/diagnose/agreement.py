"""Agreement of the verifier with lm-eval's own logged metric, item by item.

When outputs come from lm-eval samples files, each document carries lm-eval's own score
(``exact_match`` under each filter, ``acc``/``acc_norm``, ``pass_at_k`` ...). distill-doctor scores
the same text with its verifiers; the two should agree on (nearly) every item. A large
disagreement means one of the two read the task wrongly (a multiple-choice task scored as
text, a reference read from the wrong field, a filter that misses the model's answer format),
so the accuracy the diagnosis stands on is in doubt and the user must see it.

Per (metric, filter) pair logged, the agreement is the share of items where the verifier's
pass equals lm-eval's score (scores 0 or 1 only; fractional scores such as pass@k > 1 are not
compared). The pair that agrees best is the one reported (filters differ by design: gsm8k's
``strict-match`` misses answers not written ``#### N``); when even it disagrees on more than
:data:`MAX_DISAGREEMENT` of the items, the block carries a ``warning`` and the first
disagreeing items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill_doctor.data.records import Judgement

MAX_DISAGREEMENT = 0.01  # share of compared items
SHOWN_ITEMS = 10


@dataclass(frozen=True)
class PairAgreement:
    """The verifier against one lm-eval (metric, filter) on the items both scored."""

    metric: str
    filter: str
    n: int
    agree: int
    disagreeing: tuple[tuple[str, bool, float], ...]  # (item id, verifier passed, lm-eval score)

    @property
    def rate(self) -> float | None:
        return self.agree / self.n if self.n else None

    @property
    def label(self) -> str:
        return f"{self.metric} ({self.filter})" if self.filter != "none" else self.metric


def pair_agreement(
    metric: str, filt: str, logged: dict[str, float], verdicts: dict[str, Judgement], ids: list[str]
) -> PairAgreement:
    """Compare on ``ids`` (item order) where lm-eval logged a 0/1 score and the verifier judged."""
    n = agree = 0
    bad = []
    for item_id in ids:
        value, verdict = logged.get(item_id), verdicts.get(item_id)
        if value is None or verdict is None or value not in (0.0, 1.0):
            continue
        n += 1
        if verdict.passed == (value == 1.0):
            agree += 1
        else:
            bad.append((item_id, verdict.passed, value))
    return PairAgreement(metric, filt, n, agree, tuple(bad))


def best_pair(scores: Any, verdicts: dict[str, Judgement], ids: list[str]) -> tuple[PairAgreement, list[PairAgreement]]:
    """Every logged pair's agreement, and the best one (highest rate; the first logged on ties)."""
    pairs = [pair_agreement(m, f, values, verdicts, ids) for (m, f), values in scores.values.items()]
    compared = [p for p in pairs if p.n]
    best = max(compared, key=lambda p: p.rate or 0.0) if compared else pairs[0]
    return best, pairs


def agreement_block(scores: Any, verdicts: dict[str, Judgement], ids: list[str]) -> dict[str, Any] | None:
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
            {"metric": p.metric, "filter": p.filter, "n": p.n, "agree": p.agree, "rate": p.rate} for p in pairs
        ],
        "disagreeing": [
            {"id": i, "verifier_passed": passed, "lm_eval": value} for i, passed, value in best.disagreeing[:SHOWN_ITEMS]
        ],
        "warning": None,
    }
    if scores.mc_rule is not None:
        block["mc_rule"] = scores.mc_rule
    if best.n and (best.n - best.agree) / best.n > MAX_DISAGREEMENT:
        first = ", ".join(i for i, _, _ in best.disagreeing[:5])
        block["warning"] = (
            f"the verifier and lm-eval's {best.label} disagree on {best.n - best.agree} of {best.n} items "
            f"({100 * (1 - best.rate):.1f}%, more than {100 * MAX_DISAGREEMENT:.0f}%): the accuracy may rest "
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

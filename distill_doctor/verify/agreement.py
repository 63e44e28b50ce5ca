"""Agreement of the verifier with lm-eval's own logged metric, item by item (the measurement;
the report block is :mod:`distill_doctor.diagnose.agreement`).

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

from distill_doctor.data.outputs import LoggedScores
from distill_doctor.data.records import Judgement

MAX_DISAGREEMENT = 0.01  # share of compared items


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


def best_pair(
    scores: LoggedScores, verdicts: dict[str, Judgement], ids: list[str]
) -> tuple[PairAgreement, list[PairAgreement]]:
    """Every logged pair's agreement, and the best one (highest rate; the first logged on ties)."""
    pairs = [pair_agreement(m, f, values, verdicts, ids) for (m, f), values in scores.values.items()]
    compared = [p for p in pairs if p.n]
    best = max(compared, key=lambda p: p.rate or 0.0) if compared else pairs[0]
    return best, pairs

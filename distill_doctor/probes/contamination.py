"""Contamination: evaluation items that appear in the training data.

Measures: every eval prompt (and reference of at least 13 words) is indexed
(:mod:`distill_doctor.text.overlap`) and every training row (prompt + response) streams through
it. An item is *dirty* when one training row equals it after normalisation (``exact``), contains
it whole (``contained``), holds it with at most two words changed, re-punctuated, numbers kept
(``edited``), covers >= 80% of its non-template words with shared word 13-grams (``ngram``, the
Llama-2 rule per row), or is a MinHash near duplicate (``near``, Jaccard >= 0.7). Words keep their
punctuation (``12+5`` is not ``12-5``); template n-grams shared across the eval set are removed;
lower coverage is partial overlap (reported, not dirty). Also measured: each model's accuracy on
dirty vs clean items (Fisher exact, one-sided) and, with ``--student-model``, Min-K%++ membership
AUC (:mod:`min_k_plus`), both supporting evidence only.

Rule (:data:`RULE`): a count, not an estimate (``p_value`` None): ``fail`` when at least 3 items
and 1% of an eval set of at least 30 are dirty, ``warn`` for any dirty item otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, Ruling, StatTest
from distill_doctor.probes.shards import Shard, TrainingSource, map_shards, source_of
from distill_doctor.stats import clopper_pearson, fisher_exact, json_float
from distill_doctor.text.decontamination import REF_SUFFIX, index_for
from distill_doctor.text.overlap import Hit, HitSummary, OverlapIndex
from distill_doctor.vocabulary import ALPHA, Mode, Verdict

MODE = Mode.CONTAMINATION
MIN_K_MAX_ITEMS = 200  # cap on prompts scored with the model (speed)
_KIND_RANK = {"exact": 0, "contained": 1, "edited": 2, "ngram": 3, "near": 4}
EVIDENCE = 10
GUARDRAIL = (
    "distill-doctor generate --prompts PROMPTS.jsonl --teacher-model TEACHER --out train.jsonl "
    "--decontaminate items.jsonl  # drops rows overlapping the eval set (13-gram coverage, whole-text, "
    "MinHash) and records benchmarks, method and the removed count in the manifest; then retrain"
)


@dataclass(frozen=True)
class ContaminationRule:
    """Fail on ``min_dirty`` dirty items that are ``min_share`` of an eval set of ``min_items``;
    ``partial_coverage``: the union coverage from which a clean item is reported as partial."""

    min_dirty: int = 3
    min_share: float = 0.01
    min_items: int = 30
    partial_coverage: float = 0.2  # Llama 2: below 20% coverage is clean

    def as_metrics(self, alpha: float) -> dict[str, Any]:
        """``metrics["rules"]`` (a count, not a test: alpha plays no part)."""
        return {
            "min_dirty": self.min_dirty,
            "min_share": self.min_share,
            "min_items": self.min_items,
            "partial_coverage": self.partial_coverage,
        }

    def describe(self) -> str:
        return ">= 3 items and >= 1% of items are dirty (one training row copies, edits or covers >= 80% of each)"


RULE = ContaminationRule()


def train_rows(train: Any) -> Iterator[tuple[str, str]]:
    """``(prompt, response)`` pairs of the training rows, read shard by shard."""
    src = source_of(train)
    for shard in src.shards():
        cols = src.read(shard, ("prompt", "response"))
        for p, r in zip(cols["prompt"], cols["response"]):
            yield (p or "", r or "")


@dataclass(frozen=True)
class ScanShard:
    """One shard of the contamination scan: its rows' hits against the index, summarised."""

    index: OverlapIndex
    source: TrainingSource

    def __call__(self, shard: Shard) -> HitSummary:
        cols = self.source.read(shard, ("prompt", "response"))
        summary = HitSummary()
        for hit in self.index.scan_columns(cols["prompt"], cols["response"], first_row=shard.start):
            summary.add(hit)
        return summary


def scan_training(
    index: OverlapIndex, train: Any, *, workers: int | None = 1, engine: str = "local", progress: bool = False
) -> dict[str, dict[str, Any]]:
    """Every training row through ``index``, in shards (bounded memory; ``workers`` processes or
    Ray); per eval document, the merged hit summary (:class:`HitSummary`), the same for any
    number of workers."""
    src = source_of(train)
    total = HitSummary()
    job = ScanShard(index, src)
    for part in map_shards(
        job, src.shards(), workers=workers, engine=engine, desc="contamination scan", progress=progress
    ):
        total.merge(part)
    return total.finish(index)


@dataclass(frozen=True)
class ItemOverlap:
    """One eval item's strongest overlap with the training rows (prompt or reference, whichever is
    stronger): ``coverage`` the union over rows, ``row_coverage`` the best single row's."""

    id: str
    part: str  # "prompt" or "reference"
    dirty: bool
    coverage: float
    row_coverage: float
    kinds: dict[str, float]  # kind -> best score
    best: Hit
    rows: list[int]

    @classmethod
    def of(cls, item_id: str, part: str, rec: dict[str, Any]) -> ItemOverlap:
        """From a :meth:`HitSummary.finish` record."""
        return cls(
            id=item_id,
            part=part,
            dirty=bool(rec["dirty"]),
            coverage=rec["coverage"],
            row_coverage=rec["row_coverage"],
            kinds=rec["kinds"],
            best=rec["best"],
            rows=rec["rows"],
        )


@dataclass(frozen=True)
class GroupAccuracy:
    """One model's accuracy on dirty and clean items; ``test``: Fisher exact when both groups exist."""

    role: str
    acc_dirty: float | None
    acc_clean: float | None
    test: StatTest | None


@dataclass(frozen=True)
class ContaminationMeasured:
    """The scan's result; ``index`` is None when there was nothing to compare."""

    n_items: int
    n_train_rows: int
    index: dict[str, Any] | None  # OverlapIndex.params()
    ngram: int = 13
    dirty_coverage: float = 0.8
    overlaps: dict[str, ItemOverlap] = field(default_factory=dict)  # items with any hit
    dirty_by_kind: dict[str, int] = field(default_factory=dict)
    accuracy: tuple[GroupAccuracy, ...] = ()
    membership: dict[str, Any] | None = None  # Min-K%++ block, with --student-model
    train_ids: dict[int, Any] = field(default_factory=dict)  # ids of the evidence's training rows

    @property
    def dirty(self) -> list[str]:
        return [i for i, o in self.overlaps.items() if o.dirty]

    @property
    def share(self) -> float:
        return len(self.dirty) / self.n_items

    def partial(self, coverage: float) -> list[str]:
        return [i for i, o in self.overlaps.items() if not o.dirty and o.coverage >= coverage]

    def ranked_dirty(self) -> list[str]:
        """Dirty items, strongest evidence first (kind, then row coverage, then id)."""
        o = self.overlaps
        return sorted(self.dirty, key=lambda i: (_KIND_RANK[o[i].best.kind], -o[i].row_coverage, i))


# -- measure ----------------------------------------------------------------------------------


def _train_ids(train: Any, rows: list[int]) -> dict[int, Any]:
    """Ids of the training rows named in the evidence (read from their shards only)."""
    src = source_of(train)
    if not rows or "id" not in src.column_names():
        return {}
    return src.values_at(rows, "id")


def _by_item(per_doc: dict[str, dict[str, Any]]) -> dict[str, ItemOverlap]:
    """Merge prompt and reference records per item: the stronger one (dirty first, then coverage) wins."""
    out: dict[str, ItemOverlap] = {}
    for key, rec in per_doc.items():
        part = "reference" if key.endswith(REF_SUFFIX) else "prompt"
        item_id = key[: -len(REF_SUFFIX)] if part == "reference" else key
        new = ItemOverlap.of(item_id, part, rec)
        old = out.get(item_id)
        if old is None or (new.dirty, new.coverage) > (old.dirty, old.coverage):
            out[item_id] = new
    return out


def _dirty_by_kind(overlaps: dict[str, ItemOverlap], dirty_coverage: float) -> dict[str, int]:
    """Dirty items per kind of hit (an ngram hit counts only when one row alone reaches the rule)."""
    kinds: dict[str, int] = {}
    for o in overlaps.values():
        if not o.dirty:
            continue
        for k in o.kinds:
            if k != "ngram" or o.row_coverage >= dirty_coverage:
                kinds[k] = kinds.get(k, 0) + 1
    return kinds


def measure(inputs: DiagnosisInputs) -> ContaminationMeasured:
    """Stream the training rows through the eval index; per item its overlap; no verdict."""
    items = inputs.items
    if not items or inputs.train is None:
        return ContaminationMeasured(n_items=len(items), n_train_rows=0, index=None)
    index = index_for(items)
    per_doc = scan_training(
        index, inputs.train, workers=inputs.workers, engine=inputs.engine, progress=not inputs.quiet
    )
    overlaps = _by_item(per_doc)
    measured = ContaminationMeasured(
        n_items=len(items),
        n_train_rows=len(inputs.train),
        index=index.params(),
        ngram=index.ngram,
        dirty_coverage=index.dirty_coverage,
        overlaps=overlaps,
        dirty_by_kind=_dirty_by_kind(overlaps, index.dirty_coverage),
    )
    dirty = set(measured.dirty)
    membership = None
    if inputs.student_model is not None and dirty and len(dirty) < len(items):
        membership = _membership(inputs, dirty)
    rows = [overlaps[i].best.row for i in measured.ranked_dirty()[:EVIDENCE]]
    return replace(
        measured,
        accuracy=_accuracy(inputs, dirty),
        membership=membership,
        train_ids=_train_ids(inputs.train, rows),
    )


def _accuracy(inputs: DiagnosisInputs, dirty: set[str]) -> tuple[GroupAccuracy, ...]:
    """Fisher exact, one-sided: does each model pass dirty items more often than clean ones?"""
    out = []
    for role, verdicts in (("student", inputs.student_verdicts), ("teacher", inputs.teacher_verdicts)):
        if verdicts is None:
            continue
        ids = [it.id for it in inputs.items if it.id in verdicts]
        a = sum(1 for i in ids if i in dirty and verdicts[i].passed)
        b = sum(1 for i in ids if i in dirty and not verdicts[i].passed)
        c = sum(1 for i in ids if i not in dirty and verdicts[i].passed)
        d = sum(1 for i in ids if i not in dirty and not verdicts[i].passed)
        acc_dirty = a / (a + b) if a + b else None
        acc_clean = c / (c + d) if c + d else None
        test = None
        if acc_dirty is not None and acc_clean is not None:
            odds, p = fisher_exact(a, b, c, d, alternative="greater")
            test = StatTest(
                name=f"Fisher exact, one-sided ({role} passes dirty items more often)",
                n=a + b + c + d,
                p_value=json_float(p),
                effect=json_float(acc_dirty - acc_clean),
                effect_name="accuracy dirty - clean",
                statistic=json_float(odds),
            )
        out.append(GroupAccuracy(role, acc_dirty, acc_clean, test))
    return tuple(out)


def _membership(inputs: DiagnosisInputs, dirty: set[str]) -> dict[str, Any]:
    """Min-K%++ scores of dirty vs clean prompts under the student model (supporting evidence)."""
    from distill_doctor.probes.min_k_plus import membership

    dirty_items = [it for it in inputs.items if it.id in dirty][: MIN_K_MAX_ITEMS // 2]
    clean_items = [it for it in inputs.items if it.id not in dirty][: MIN_K_MAX_ITEMS - len(dirty_items)]
    assert inputs.student_model is not None
    found = membership(
        inputs.student_model,
        [it.prompt for it in dirty_items],
        [it.prompt for it in clean_items],
        seed=inputs.seed,
    )
    return found.as_metrics()


# -- decide -----------------------------------------------------------------------------------


def decide(measured: ContaminationMeasured, rule: ContaminationRule, alpha: float) -> Ruling:
    """The dirty count against ``rule``: a fact, so the ruling carries no p-value."""
    n_dirty = len(measured.dirty)
    if not measured.n_items or not n_dirty:
        return Ruling(Verdict.PASS, None)
    big_enough = measured.n_items >= rule.min_items
    if n_dirty >= rule.min_dirty and measured.share >= rule.min_share and big_enough:
        return Ruling(Verdict.FAIL, None)
    return Ruling(Verdict.WARN, None)


# -- summarize --------------------------------------------------------------------------------


def _why(o: ItemOverlap, train_ids: dict[int, Any], ngram: int) -> str:
    best = o.best
    what = "its reference answer" if o.part == "reference" else "its prompt"
    row = f"training row {best.row}"
    if train_ids.get(best.row) is not None:
        row += f" (id {train_ids[best.row]})"
    if best.kind == "exact":
        return f"{what} appears verbatim (after normalisation) as {row}"
    if best.kind == "contained":
        return f"{what} occurs whole inside {row}"
    if best.kind == "edited":
        k = best.positions[0] if best.positions else 0
        how = "re-punctuated only" if k == 0 else f"{k} word{'s' if k > 1 else ''} changed"
        return f"{what} appears in {row}, {how}"
    if best.kind == "near":
        return f"{what} is a near-duplicate of {row} (Jaccard {best.score:.2f} on word shingles)"
    return f"{o.row_coverage:.0%} of the words of {what} lie in {ngram}-grams shared with {row}"


def _evidence(measured: ContaminationMeasured, rule: ContaminationRule) -> list[dict[str, Any]]:
    """The dirty items, strongest first, then the most covered partial ones, at most ``EVIDENCE``."""
    evidence = []
    for i in measured.ranked_dirty()[:EVIDENCE]:
        o = measured.overlaps[i]
        evidence.append(
            {
                "id": i,
                "why": _why(o, measured.train_ids, measured.ngram),
                "kind": o.best.kind,
                "score": json_float(o.best.score),
                "coverage": json_float(o.coverage),
                "train_rows": o.rows,
                "part": o.part,
            }
        )
    partial = sorted(measured.partial(rule.partial_coverage), key=lambda i: -measured.overlaps[i].coverage)
    for i in partial[: max(0, EVIDENCE - len(evidence))]:
        o = measured.overlaps[i]
        evidence.append(
            {
                "id": i,
                "why": f"partial overlap: {o.coverage:.0%} of the words of its {o.part} in shared "
                f"{measured.ngram}-grams (below the {measured.dirty_coverage:.0%} dirty rule)",
                "kind": "partial",
                "coverage": json_float(o.coverage),
                "train_rows": o.rows,
            }
        )
    return evidence


def _metrics(measured: ContaminationMeasured, rule: ContaminationRule, alpha: float) -> dict[str, Any]:
    lo, hi = clopper_pearson(len(measured.dirty), measured.n_items)
    metrics: dict[str, Any] = {
        "n_items": measured.n_items,
        "n_train_rows": measured.n_train_rows,
        "dirty": len(measured.dirty),
        "dirty_share": json_float(measured.share),
        "dirty_share_ci": [json_float(lo), json_float(hi)],
        "partial": len(measured.partial(rule.partial_coverage)),
        "dirty_by_kind": measured.dirty_by_kind,
        "items_with_any_hit": len(measured.overlaps),
        "index": measured.index,
        "rules": rule.as_metrics(alpha),
    }
    for acc in measured.accuracy:
        metrics[f"{acc.role}_acc_dirty"] = json_float(acc.acc_dirty)
        metrics[f"{acc.role}_acc_clean"] = json_float(acc.acc_clean)
    if measured.membership is not None:
        metrics["min_k_plus"] = measured.membership
    return metrics


def _tests(measured: ContaminationMeasured) -> list[StatTest]:
    lo, hi = clopper_pearson(len(measured.dirty), measured.n_items)
    count = StatTest(
        name="dirty items (exact count; Clopper-Pearson 95% CI)",
        n=measured.n_items,
        p_value=None,
        effect=json_float(measured.share),
        effect_name="dirty share",
        ci=(round(lo, 6), round(hi, 6)),  # json_float of a finite interval
    )
    return [count] + [acc.test for acc in measured.accuracy if acc.test is not None]


def _summary(measured: ContaminationMeasured, ruling: Ruling, rule: ContaminationRule) -> str:
    n_dirty, n_items = len(measured.dirty), measured.n_items
    if ruling.verdict == Verdict.FAIL:
        return (
            f"{n_dirty} of {n_items} evaluation items ({measured.share:.1%}) appear in the training data; "
            "scores on them measure memorisation: decontaminate and re-evaluate."
        )
    if ruling.verdict == Verdict.WARN:
        why = "on a small evaluation set" if n_items < rule.min_items else "below the fail rule"
        return (
            f"{n_dirty} of {n_items} evaluation items appear in the training data ({why}); "
            "check the listed rows and decontaminate."
        )
    return (
        f"No evaluation item appears in the {measured.n_train_rows} training rows "
        f"({len(measured.partial(rule.partial_coverage))} with partial {measured.ngram}-gram overlap "
        "below the dirty rule)."
    )


def summarize(
    measured: ContaminationMeasured, ruling: Ruling, rule: ContaminationRule = RULE, alpha: float = ALPHA
) -> Finding:
    """The finding: summary, metrics (with ``rule``'s thresholds), tests and evidence."""
    if measured.index is None:
        return Finding(
            MODE, Verdict.PASS, "No evaluation items or no training rows to compare.", n=measured.n_items
        )
    return Finding(
        MODE,
        ruling.verdict,
        _summary(measured, ruling, rule),
        metrics=_metrics(measured, rule, alpha),
        evidence=_evidence(measured, rule),
        guardrail=GUARDRAIL,
        tests=_tests(measured),
        p_value=None,
        n=measured.n_items,
        measured=measured,
        ruling=ruling,
    )


def run(inputs: DiagnosisInputs) -> Finding:
    measured = measure(inputs)
    return summarize(measured, decide(measured, RULE, inputs.alpha), RULE, inputs.alpha)


PROBE = Probe(
    mode=MODE,
    needs=("train",),
    run=run,
    describe="Exact 13-gram coverage, whole-text, containment and MinHash near-duplicate matches "
    "between training rows and evaluation prompts.",
)

"""Contamination: evaluation items that appear in the training data.

Every eval prompt (and every reference of at least 13 words) is indexed (:mod:`distill_doctor.text.overlap`) and every training row
(prompt + response) streams through it. An item is *dirty* when a training row

- equals its prompt after normalisation (``exact``; short prompts have no 13-grams),
- contains it whole (``contained``; prompts of 8-12 words),
- covers at least 80% of its non-template words with shared word 13-grams (``ngram``; the
  Llama-2 rule applied per training row: the union over all rows is reported too, but prompts
  that embed few-shot exemplars from a train split are covered piecewise by unrelated rows), or
- is a near-duplicate of its prompt (``near``; MinHash/LSH, exact Jaccard >= 0.7 on 5-word shingles).
- holds it with at most two words changed (one per 10 content words), re-punctuated, anywhere in the row
  (``edited``; every number kept), so a one-word edit of a 20-word prompt is dirty, not partial.

Words are normalised as lm-eval's Janitor does (lowercase, whitespace split) except that punctuation
characters are kept as tokens: deleting them makes ``12+5`` equal ``12-5`` and two HumanEval
problems that differ only in their bracket characters identical. A single shared 13-gram is never enough: template text shared by many eval items (a common
instruction, "Write a function that ... returns") is removed before matching, and coverage below
80% counts as partial overlap (reported, not dirty).

Verdict: contamination is a provenance problem even when accuracy is not inflated, so the verdict
rests on the dirty count, a fact rather than an estimate (``p_value`` stays ``None``): ``fail``
when at least ``MIN_DIRTY`` items and ``MIN_SHARE`` of the eval set are dirty on an eval set of at
least ``MIN_ITEMS``; ``warn`` for fewer dirty items or a small eval set; ``pass`` otherwise.
Whether the student scores higher on dirty items is tested (Fisher exact, one-sided) and reported
as a secondary test; with ``--student-model``, Min-K%++ membership scores of dirty vs clean
prompts are reported as supporting evidence only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from distill_doctor.probes.base import DiagnosisInputs, Finding, Probe, StatTest
from distill_doctor.probes.shards import Shard, TrainingSource, map_shards, source_of
from distill_doctor.stats import clopper_pearson, fisher_exact, json_float, json_interval
from distill_doctor.text.decontamination import REF_SUFFIX, index_for
from distill_doctor.text.overlap import HitSummary, OverlapIndex

MODE = "contamination"
MIN_DIRTY = 3
MIN_SHARE = 0.01
MIN_ITEMS = 30
PARTIAL_COVERAGE = 0.2  # Llama 2: below 20% coverage is clean
MIN_K_MAX_ITEMS = 200  # cap on prompts scored with the model (speed)
_KIND_RANK = {"exact": 0, "contained": 1, "edited": 2, "ngram": 3, "near": 4}


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


def _train_ids(train: Any, rows: list[int]) -> dict[int, Any]:
    """Ids of the training rows named in the evidence (read from their shards only)."""
    src = source_of(train)
    if not rows or "id" not in src.column_names():
        return {}
    return src.values_at(rows, "id")


def _by_item(per_doc: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merge prompt and reference records per item: the stronger one (dirty first, then coverage) wins."""
    out: dict[str, dict[str, Any]] = {}
    for key, rec in per_doc.items():
        part = "reference" if key.endswith(REF_SUFFIX) else "prompt"
        item_id = key[: -len(REF_SUFFIX)] if part == "reference" else key
        rec = {**rec, "part": part}
        old = out.get(item_id)
        if old is None or (rec["dirty"], rec["coverage"]) > (old["dirty"], old["coverage"]):
            out[item_id] = rec
    return out


def _why(rec: dict[str, Any], train_ids: dict[int, Any], ngram: int) -> str:
    best = rec["best"]
    what = "its reference answer" if rec.get("part") == "reference" else "its prompt"
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
    return f"{rec['row_coverage']:.0%} of the words of {what} lie in {ngram}-grams shared with {row}"


def run(inputs: DiagnosisInputs) -> Finding:
    items = inputs.items
    n_items = len(items)
    if n_items == 0 or inputs.train is None:
        return Finding(MODE, "pass", "No evaluation items or no training rows to compare.", n=n_items)
    index = index_for(items)
    per_doc = scan_training(
        index, inputs.train, workers=inputs.workers, engine=inputs.engine, progress=not inputs.quiet
    )
    per_item = _by_item(per_doc)
    dirty = [i for i, rec in per_item.items() if rec["dirty"]]
    partial = [i for i, rec in per_item.items() if not rec["dirty"] and rec["coverage"] >= PARTIAL_COVERAGE]
    n_dirty = len(dirty)
    share = n_dirty / n_items
    lo, hi = clopper_pearson(n_dirty, n_items)
    kinds: dict[str, int] = {}
    for i in dirty:
        for k in per_item[i]["kinds"]:
            if k != "ngram" or per_item[i]["row_coverage"] >= index.dirty_coverage:
                kinds[k] = kinds.get(k, 0) + 1

    metrics: dict[str, Any] = {
        "n_items": n_items,
        "n_train_rows": len(inputs.train),
        "dirty": n_dirty,
        "dirty_share": json_float(share),
        "dirty_share_ci": [json_float(lo), json_float(hi)],
        "partial": len(partial),
        "dirty_by_kind": kinds,
        "items_with_any_hit": len(per_item),
        "index": index.params(),
        "rules": {
            "min_dirty": MIN_DIRTY,
            "min_share": MIN_SHARE,
            "min_items": MIN_ITEMS,
            "partial_coverage": PARTIAL_COVERAGE,
        },
    }
    tests = [
        StatTest(
            name="dirty items (exact count; Clopper-Pearson 95% CI)",
            n=n_items,
            p_value=None,
            effect=json_float(share),
            effect_name="dirty share",
            ci=(json_float(lo), json_float(hi)),
        )
    ]
    tests += _accuracy_tests(inputs, set(dirty), metrics)
    if inputs.student_model is not None and dirty and n_dirty < n_items:
        metrics["min_k_plus"] = _membership(inputs, set(dirty))

    ranked = sorted(
        dirty, key=lambda i: (_KIND_RANK[per_item[i]["best"].kind], -per_item[i]["row_coverage"], i)
    )
    train_ids = _train_ids(inputs.train, [per_item[i]["best"].row for i in ranked[:10]])
    evidence = [
        {
            "id": i,
            "why": _why(per_item[i], train_ids, index.ngram),
            "kind": per_item[i]["best"].kind,
            "score": json_float(per_item[i]["best"].score),
            "coverage": json_float(per_item[i]["coverage"]),
            "train_rows": per_item[i]["rows"],
            "part": per_item[i]["part"],
        }
        for i in ranked[:10]
    ]
    if len(evidence) < 10:
        for i in sorted(partial, key=lambda i: -per_item[i]["coverage"])[: 10 - len(evidence)]:
            evidence.append(
                {
                    "id": i,
                    "why": f"partial overlap: {per_item[i]['coverage']:.0%} of the words of its {per_item[i]['part']} in shared "
                    f"{index.ngram}-grams (below the {index.dirty_coverage:.0%} dirty rule)",
                    "kind": "partial",
                    "coverage": json_float(per_item[i]["coverage"]),
                    "train_rows": per_item[i]["rows"],
                }
            )

    guardrail = (
        "distill-doctor generate --prompts PROMPTS.jsonl --teacher-model TEACHER --out train.jsonl "
        "--decontaminate items.jsonl  # drops rows overlapping the eval set (13-gram coverage, whole-text, "
        "MinHash) and records benchmarks, method and the removed count in the manifest; then retrain"
    )
    big_enough = n_items >= MIN_ITEMS
    if n_dirty >= MIN_DIRTY and share >= MIN_SHARE and big_enough:
        verdict = "fail"
        summary = (
            f"{n_dirty} of {n_items} evaluation items ({share:.1%}) appear in the training data; "
            "scores on them measure memorisation: decontaminate and re-evaluate."
        )
    elif n_dirty:
        verdict = "warn"
        why = "on a small evaluation set" if not big_enough else "below the fail rule"
        summary = (
            f"{n_dirty} of {n_items} evaluation items appear in the training data ({why}); "
            "check the listed rows and decontaminate."
        )
    else:
        verdict = "pass"
        summary = (
            f"No evaluation item appears in the {len(inputs.train)} training rows "
            f"({len(partial)} with partial {index.ngram}-gram overlap below the dirty rule)."
        )
    return Finding(
        MODE,
        verdict,
        summary,
        metrics=metrics,
        evidence=evidence,
        guardrail=guardrail,
        tests=tests,
        p_value=None,
        n=n_items,
    )


def _accuracy_tests(inputs: DiagnosisInputs, dirty: set[str], metrics: dict[str, Any]) -> list[StatTest]:
    """Fisher exact, one-sided: does each model pass dirty items more often than clean ones?"""
    tests = []
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
        metrics[f"{role}_acc_dirty"] = json_float(acc_dirty)
        metrics[f"{role}_acc_clean"] = json_float(acc_clean)
        if a + b and c + d:
            odds, p = fisher_exact(a, b, c, d, alternative="greater")
            diff = acc_dirty - acc_clean
            tests.append(
                StatTest(
                    name=f"Fisher exact, one-sided ({role} passes dirty items more often)",
                    n=a + b + c + d,
                    p_value=json_float(p),
                    effect=json_float(diff),
                    effect_name="accuracy dirty - clean",
                    statistic=json_float(odds),
                )
            )
    return tests


def _membership(inputs: DiagnosisInputs, dirty: set[str]) -> dict[str, Any]:
    """Min-K%++ scores of dirty vs clean prompts under the student model (supporting evidence)."""
    from distill_doctor.probes.min_k_plus import auc, load_model, min_k_plus_scores

    dirty_items = [it for it in inputs.items if it.id in dirty][: MIN_K_MAX_ITEMS // 2]
    clean_items = [it for it in inputs.items if it.id not in dirty][: MIN_K_MAX_ITEMS - len(dirty_items)]
    model, tok = load_model(inputs.student_model)
    scores = min_k_plus_scores(model, tok, [it.prompt for it in dirty_items + clean_items])
    s_dirty, s_clean = scores[: len(dirty_items)], scores[len(dirty_items) :]
    value, ci = auc(s_dirty, s_clean, seed=inputs.seed)
    return {
        "k": 0.2,
        "n_dirty": len(s_dirty),
        "n_clean": len(s_clean),
        "auc_dirty_vs_clean": json_float(value),
        "auc_ci": json_interval(ci),
        "note": "AUC > 0.5: dirty prompts look more like training members to the student (supporting only)",
    }


PROBE = Probe(
    mode=MODE,
    needs=("train",),
    run=run,
    describe="Exact 13-gram coverage, whole-text, containment and MinHash near-duplicate matches "
    "between training rows and evaluation prompts.",
)

"""The report's ``speculative`` block: how good a draft model the student is for its teacher.

Acceptance is measured per token along the teacher's own outputs (the text speculative sampling
produces is distributed as the teacher's, so these are the prefixes a deployed draft meets) and
along the student's; ``acceptance_rate`` is the teacher-output one when teacher outputs were
given. alpha is the token-weighted mean (all accepted probability over all tokens) and its
interval a percentile bootstrap over items, since tokens within an item are not independent.

The block efficiency and speedup use that single alpha as if acceptance were i.i.d. across
positions (Leviathan et al.'s assumption). ``block_efficiency_sequential`` drops the
assumption: it replays the speculative loop with each position's own acceptance probability,
output by output, and the two side by side show how much the assumption costs on this run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill_doctor.data.records import Item, ModelOutput
from distill_doctor.speculative.acceptance import TokenAcceptance, load_pair, token_acceptance
from distill_doctor.speculative.cost import measure_draft_cost
from distill_doctor.speculative.theory import (
    GAMMAS,
    block_efficiency,
    sequential_block_efficiency,
    speedup,
)
from distill_doctor.stats import bootstrap_ci, json_float, json_interval

MAX_ITEMS = 400
POSITION_EDGES = (0, 4, 8, 16, 32, 64, 128, 256)
MAX_SLICE_VALUES = 12
ASSUMPTION = (
    "block_efficiency and speedup treat alpha as i.i.d. across positions (Leviathan et al.); "
    "block_efficiency_sequential replays the loop with each position's own acceptance and cuts "
    "blocks at the end of each output"
)


def _rate_and_ci(accepts: Sequence[np.ndarray], seed: int) -> tuple[float | None, Any, int]:
    """Token-weighted mean of ``accepts`` and its item-bootstrap 95% interval; n tokens."""
    sums = np.array([float(a.sum()) for a in accepts if len(a)])
    counts = np.array([float(len(a)) for a in accepts if len(a)])
    if counts.sum() == 0:
        return None, None, 0
    rate = float(sums.sum() / counts.sum())
    ci = bootstrap_ci(lambda s, c: s.sum(-1) / c.sum(-1), sums, counts, n_boot=2000, seed=seed)
    return rate, ci, int(counts.sum())


def _source_block(rows: Sequence[TokenAcceptance], seed: int) -> dict[str, Any]:
    rate, ci, n = _rate_and_ci([r.accept for r in rows], seed)
    agree, agree_ci, _ = _rate_and_ci([r.agree.astype(float) for r in rows], seed)
    return {
        "acceptance_rate": json_float(rate),
        "acceptance_ci": json_interval(ci),
        "greedy_agreement": json_float(agree),
        "greedy_agreement_ci": json_interval(agree_ci),
        "n_tokens": n,
        "n_items": sum(1 for r in rows if len(r.accept)),
    }


def by_position(rows: Sequence[TokenAcceptance]) -> list[dict[str, Any]]:
    """Acceptance in output-position buckets [start, end) (0 = the first output token)."""
    out = []
    for lo, hi in zip(POSITION_EDGES, POSITION_EDGES[1:]):
        parts = [r.accept[lo:hi] for r in rows if len(r.accept) > lo]
        n = sum(len(p) for p in parts)
        if n:
            rate = sum(float(p.sum()) for p in parts) / n
            out.append(
                {
                    "start": lo,
                    "end": hi,
                    "acceptance_rate": json_float(rate),
                    "n_tokens": n,
                    "n_items": len(parts),
                }
            )
    return out


def by_slice(
    rows: Sequence[TokenAcceptance], items: Mapping[str, Item], seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Acceptance per value of every item tag with at most ``MAX_SLICE_VALUES`` values."""
    keys = sorted({k for r in rows for k in items[r.item_id].tags})
    out: dict[str, list[dict[str, Any]]] = {}
    for key in keys:
        groups: dict[str, list[TokenAcceptance]] = {}
        for r in rows:
            if key in items[r.item_id].tags:
                groups.setdefault(str(items[r.item_id].tags[key]), []).append(r)
        if not 1 < len(groups) <= MAX_SLICE_VALUES:
            continue
        entries = []
        for value in sorted(groups, key=lambda v: (len(v), v)):
            rate, ci, n = _rate_and_ci([r.accept for r in groups[value]], seed)
            entries.append(
                {
                    "value": value,
                    "acceptance_rate": json_float(rate),
                    "acceptance_ci": json_interval(ci),
                    "n_tokens": n,
                    "n_items": len(groups[value]),
                }
            )
        out[key] = entries
    return out


def _by_gamma(fn) -> dict[str, float | None]:
    return {str(g): json_float(fn(g)) for g in GAMMAS}


def summarize(
    sources: Mapping[str, Sequence[TokenAcceptance]],
    items: Mapping[str, Item],
    *,
    temperature: float,
    draft_cost: float,
    cost_source: str,
    forward_ms: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``speculative`` block from per-token acceptances keyed by source (``teacher``/``student``)."""
    along = "teacher" if sources.get("teacher") else "student"
    rows = list(sources.get(along) or [])
    main = _source_block(rows, seed)
    alpha, ci = main["acceptance_rate"], main["acceptance_ci"]
    block: dict[str, Any] = {
        "along": f"{along} outputs",
        "temperature": temperature,
        **main,
        "by_source": {name: _source_block(list(r), seed) for name, r in sources.items() if r},
        "by_position": by_position(rows),
        "by_slice": by_slice(rows, items, seed),
        "draft_cost": json_float(draft_cost),
        "draft_cost_source": cost_source,
        "forward_ms": {k: json_float(v, 4) for k, v in (forward_ms or {}).items()},
        "assumption": ASSUMPTION,
    }
    if alpha is None:
        return {**block, "block_efficiency": {}, "speedup": {}}
    lo, hi = (ci or [None, None])[0], (ci or [None, None])[1]
    block["block_efficiency"] = _by_gamma(lambda g: block_efficiency(alpha, g))
    if lo is not None and hi is not None:
        block["block_efficiency_ci"] = {
            str(g): [json_float(block_efficiency(lo, g)), json_float(block_efficiency(hi, g))] for g in GAMMAS
        }
    block["block_efficiency_sequential"] = _by_gamma(
        lambda g: sequential_block_efficiency([r.accept for r in rows], g, n_sim=50, seed=seed)
    )
    block["speedup"] = _by_gamma(lambda g: speedup(alpha, g, draft_cost))
    best = max(GAMMAS, key=lambda g: speedup(alpha, g, draft_cost))
    block["best_gamma"], block["best_speedup"] = best, json_float(speedup(alpha, best, draft_cost))
    block["per_item"] = {
        r.item_id: {"acceptance": json_float(float(r.accept.mean())), "n_tokens": len(r.accept)}
        for r in rows
        if len(r.accept)
    }
    return block


def _rows(items: Sequence[Item], outputs: Mapping[str, ModelOutput]) -> list[tuple[str, str, str]]:
    return [(it.id, it.prompt, outputs[it.id].output) for it in items if it.id in outputs]


def speculative_block(
    teacher_dir: str | Path,
    student_dir: str | Path,
    items: Sequence[Item],
    student_outputs: Mapping[str, ModelOutput],
    teacher_outputs: Mapping[str, ModelOutput] | None = None,
    *,
    temperature: float = 1.0,
    draft_cost: float | None = None,
    seed: int = 0,
    max_items: int = MAX_ITEMS,
    quiet: bool = True,
) -> dict[str, Any]:
    """Load both models, measure acceptance along the output files, and build the block.

    ``draft_cost`` None: measured (:func:`~distill_doctor.speculative.cost.measure_draft_cost`).
    At most ``max_items`` items (a seeded sample, in item order) are scored. ``quiet``: no
    model-loading progress bars.
    """
    from distill_doctor.produce.quiet import quiet_output

    with quiet_output(quiet):
        teacher, student, tok = load_pair(teacher_dir, student_dir)
    chosen = list(items)
    if len(chosen) > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(chosen), max_items, replace=False))
        chosen = [chosen[k] for k in keep]
    sources: dict[str, list[TokenAcceptance]] = {}
    for name, outputs in (("teacher", teacher_outputs), ("student", student_outputs)):
        if outputs:
            sources[name] = token_acceptance(
                teacher, student, tok, _rows(chosen, outputs), temperature=temperature
            )
    timing = measure_draft_cost(teacher, student, tok)
    cost, cost_source = (timing.ratio, "measured") if draft_cost is None else (draft_cost, "given")
    return summarize(
        sources,
        {it.id: it for it in items},
        temperature=temperature,
        draft_cost=cost,
        cost_source=cost_source,
        forward_ms={"teacher": timing.teacher_ms, "student": timing.student_ms},
        seed=seed,
    )

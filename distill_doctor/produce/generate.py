"""Teacher data generation: prompts -> N samples each -> filters -> training rows, with counts.

:func:`generate_dataset` is the whole pipeline as one plain function. The model enters only as a
callable ``sample(prompts, n) -> list[list[str]]`` (``n`` completions per prompt; see
:class:`~distill_doctor.produce.sampling.HFSampler` for a local model, or pass any function), so
the pipeline is deterministic under a deterministic sampler and testable without a model.

Stages, in order; each counts the candidate responses it kept and dropped (the manifest's
``filters`` list):

1. format filters (:mod:`filters`): empty, truncated, repetition loop, no final answer;
2. ``verifier`` (``reject_with="verifier"``): rejection sampling: a response is kept only when
   the item's verifier accepts it against the reference (or the tests, for code); an item
   without a reference cannot be verified, so its responses are dropped;
3. ``select`` (``keep="first"``): the first surviving sample of each prompt (best-of-N);
   ``keep="all"`` keeps every surviving sample (row ids then end in ``#<sample index>``);
4. ``exact_dedup`` then ``near_dedup`` (:mod:`dedup`) over (prompt, response);
5. ``decontamination``: rows that the contamination probe would call dirty against any given
   evaluation set are removed, with the probe's own index and rules
   (:func:`distill_doctor.text.decontamination.index_for`): one decontamination, so what is kept
   passes ``diagnose``'s contamination check on the same evaluation files.

Format filters run before the verifier so that a prompt whose first correct sample loops or is
cut off can still contribute a later, clean correct sample.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distill_doctor.data.records import Item, ModelOutput
from distill_doctor.produce.dedup import NearDedup, exact_duplicates
from distill_doctor.produce.filters import FormatFilter, default_filters

Sampler = Callable[[list[str], int], Sequence[Sequence[str]]]  # per prompt, n completions
KEEP_MODES = ("first", "all")
REJECT_MODES = ("verifier", "none")


@dataclass(frozen=True)
class GenerateOptions:
    """Pipeline settings (decoding settings belong to the sampler)."""

    samples_per_prompt: int = 4
    keep: str = "first"  # "first": best-of-N, one row per prompt; "all": every surviving sample
    reject_with: str = "verifier"  # "verifier": rejection sampling; "none": keep unverified responses
    filters: tuple[FormatFilter, ...] = field(default_factory=lambda: tuple(default_filters()))
    near_dedup: NearDedup | None = field(default_factory=NearDedup)  # None: exact dedup only
    workers: int | None = None  # parallel code-verifier processes
    source: str = "teacher"  # the rows' ``source`` field
    chunk_prompts: int = 64  # prompts per sampler call (progress granularity, memory)

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 1:
            raise ValueError(f"samples_per_prompt must be >= 1, got {self.samples_per_prompt}")
        if self.keep not in KEEP_MODES:
            raise ValueError(f"keep must be one of {KEEP_MODES}, got {self.keep!r}")
        if self.reject_with not in REJECT_MODES:
            raise ValueError(f"reject_with must be one of {REJECT_MODES}, got {self.reject_with!r}")
        if self.chunk_prompts < 1:
            raise ValueError("chunk_prompts must be >= 1")


@dataclass
class FilterRecord:
    """One stage's effect, in candidate responses (the manifest's ``filters`` entries)."""

    name: str
    rule: str
    kept: int
    dropped: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule, "kept": self.kept, "dropped": self.dropped}


@dataclass(frozen=True)
class Dropped:
    """A dropped candidate: which prompt, which sample, which stage, and why."""

    id: str
    sample: int
    stage: str
    why: str


@dataclass
class GenerationResult:
    rows: list[dict[str, Any]]  # training rows: prompt, response, id, source, reference?
    filters: list[FilterRecord]
    decontamination: dict[str, Any]
    n_prompts: int
    n_candidates: int
    dropped: list[Dropped]
    row_items: list[str] = field(default_factory=list)  # the prompt (item id) of each row

    @property
    def prompts_covered(self) -> int:
        """Prompts with at least one training row."""
        return len(set(self.row_items))

    def dropped_by_stage(self) -> dict[str, int]:
        return dict(Counter(d.stage for d in self.dropped))


@dataclass(frozen=True)
class _Candidate:
    item: Item
    sample: int  # index among the prompt's n samples
    text: str


def _sample_all(
    items: list[Item], sample: Sampler, n: int, chunk: int, progress: Callable[[int], None] | None
) -> list[_Candidate]:
    cands: list[_Candidate] = []
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        got = sample([it.prompt for it in part], n)
        if not isinstance(got, list) or len(got) != len(part):
            raise ValueError(f"the sampler returned {len(got)} lists for {len(part)} prompts")
        for it, texts in zip(part, got):
            if len(texts) != n or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"the sampler must return {n} strings per prompt (item {it.id!r})")
            cands.extend(_Candidate(it, k, t) for k, t in enumerate(texts))
        if progress is not None:
            progress(len(part))
    return cands


def _apply(
    name: str,
    rule: str,
    cands: list[_Candidate],
    reasons: Sequence[str | None],
    filters: list[FilterRecord],
    dropped: list[Dropped],
) -> list[_Candidate]:
    """Keep candidates whose reason is None; record the stage's counts and each drop's reason."""
    kept = []
    for c, why in zip(cands, reasons):
        if why is None:
            kept.append(c)
        else:
            dropped.append(Dropped(c.item.id, c.sample, name, why))
    filters.append(FilterRecord(name, rule, len(kept), len(cands) - len(kept)))
    return kept


def _verifier_reasons(cands: list[_Candidate], workers: int | None) -> list[str | None]:
    from distill_doctor.verify import verify_outputs

    reasons: list[str | None] = [None] * len(cands)
    checkable: dict[str, tuple[int, Item]] = {}
    for i, c in enumerate(cands):
        if c.item.reference is None and c.item.verifier_kind != "code":
            reasons[i] = "no reference to verify against"
        else:
            key = f"{c.item.id}\x00{c.sample}"
            checkable[key] = (i, dataclasses.replace(c.item, id=key))
    if checkable:
        outputs = {k: ModelOutput(id=k, output=cands[i].text) for k, (i, _) in checkable.items()}
        verdicts = verify_outputs([it for _, it in checkable.values()], outputs, workers=workers)
        for key, (i, _) in checkable.items():
            v = verdicts[key]
            if not v.passed:
                reasons[i] = f"verifier rejected: {v.reason or 'wrong answer'} (answer {v.answer!r})"
    return reasons


def _select_first(cands: list[_Candidate]) -> list[str | None]:
    seen: set[str] = set()
    reasons: list[str | None] = []
    for c in cands:
        if c.item.id in seen:
            reasons.append("an earlier sample of this prompt was kept")
        else:
            seen.add(c.item.id)
            reasons.append(None)
    return reasons


def _decontaminate(
    cands: list[_Candidate], benchmarks: Mapping[str, list[Item]]
) -> tuple[list[str | None], dict[str, Any]]:
    """Drop every row the contamination probe would call dirty against any of the benchmarks.

    Each benchmark gets the probe's own index (:func:`distill_doctor.text.decontamination.index_for`:
    same documents, normalisation, template rule and dirty rules), so whatever is kept here passes
    ``diagnose``'s contamination check on each of those evaluation files."""
    from distill_doctor.text.decontamination import DECONTAMINATION_METHOD, index_for

    record: dict[str, Any] = {
        "benchmarks": list(benchmarks),
        "method": DECONTAMINATION_METHOD if benchmarks else "none",
        "ngram": 13,
        "threshold": 0.7,
        "removed": 0,
    }
    reasons: list[str | None] = [None] * len(cands)
    hit_kinds: Counter[str] = Counter()
    matched: set[str] = set()
    params: dict[str, Any] = {}
    for name, items in benchmarks.items():
        if not items:
            continue
        index = index_for(items)
        params[name] = index.params()
        record.update(ngram=index.ngram, threshold=index.minhash_threshold)
        for hit in index.scan((c.item.prompt, c.text) for c in cands):
            if hit.dirty and reasons[hit.row] is None:
                reasons[hit.row] = f"{hit.kind} match with {name} item {hit.eval_id} (score {hit.score:.2f})"
                hit_kinds[hit.kind] += 1
                matched.add(f"{name}:{hit.eval_id}")
    if params:
        record.update(
            removed=sum(r is not None for r in reasons),
            eval_items=sum(len(items) for items in benchmarks.values()),
            eval_items_matched=len(matched),
            removed_by_kind=dict(hit_kinds),
            params=next(iter(params.values())) if len(params) == 1 else params,
        )
    return reasons, record


def _row(c: _Candidate, keep: str, source: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt": c.item.prompt,
        "response": str(c.text),
        "id": c.item.id if keep == "first" else f"{c.item.id}#{c.sample}",
        "source": source,
    }
    if c.item.reference is not None:
        row["reference"] = c.item.reference
    return row


def generate_dataset(
    items: list[Item],
    sample: Sampler,
    *,
    options: GenerateOptions | None = None,
    decontaminate: Mapping[str, list[Item]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Run the pipeline: sample, filter, verify, select, dedup, decontaminate; nothing is written.

    ``items``: the prompts (SPEC items; ``reference`` may be None when ``reject_with="none"``).
    ``sample``: ``sample(prompts, n) -> list[list[str]]``. ``decontaminate``: benchmark name ->
    evaluation items whose prompts must not appear in the data. ``progress``: called with the
    number of prompts sampled after each sampler call.
    """
    options = options or GenerateOptions()
    decontaminate = decontaminate or {}
    filters: list[FilterRecord] = []
    dropped: list[Dropped] = []
    cands = _sample_all(items, sample, options.samples_per_prompt, options.chunk_prompts, progress)
    n_candidates = len(cands)

    for f in options.filters:
        cands = _apply(f.name, f.rule, cands, [f.check(c.item, c.text) for c in cands], filters, dropped)
    if options.reject_with == "verifier":
        rule = "the item's verifier accepts the response against its reference (code: its tests pass)"
        cands = _apply("verifier", rule, cands, _verifier_reasons(cands, options.workers), filters, dropped)
    if options.keep == "first":
        rule = "the first surviving sample of each prompt (best-of-N)"
        cands = _apply("select", rule, cands, _select_first(cands), filters, dropped)

    pairs = [(c.item.prompt, str(c.text)) for c in cands]
    exact = exact_duplicates(pairs)
    reasons = [
        f"exact duplicate of {cands[exact[i]].item.id}" if i in exact else None for i in range(len(cands))
    ]
    rule = "prompt and response equal after case-folding and collapsing whitespace (first copy kept)"
    cands = _apply("exact_dedup", rule, cands, reasons, filters, dropped)
    if options.near_dedup is not None:
        nd = options.near_dedup
        near = nd.duplicates([(c.item.prompt, str(c.text)) for c in cands])
        reasons = [
            f"near duplicate of {cands[near[i][0]].item.id} (Jaccard {near[i][1]:.2f})" if i in near else None
            for i in range(len(cands))
        ]
        rule = (
            f"Jaccard of {nd.shingle}-token shingles of prompt + response >= {nd.threshold} (first copy kept)"
        )
        cands = _apply("near_dedup", rule, cands, reasons, filters, dropped)

    reasons, decon = _decontaminate(cands, decontaminate)
    if decontaminate:
        rule = f"matches an item of {', '.join(decontaminate)} (see decontamination)"
        cands = _apply("decontamination", rule, cands, reasons, filters, dropped)

    rows = [_row(c, options.keep, options.source) for c in cands]
    return GenerationResult(
        rows, filters, decon, len(items), n_candidates, dropped, [c.item.id for c in cands]
    )

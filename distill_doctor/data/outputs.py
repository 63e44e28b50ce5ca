"""Load one model's outputs: native ``{"id", "output", "samples"?}`` lines or lm-eval sample files.

The format is detected per file from its first record: a record with ``doc_id`` or
``resps`` is an lm-evaluation-harness ``samples_<task>_<timestamp>.jsonl`` line
(written with ``--log_samples``, read by :mod:`distill_doctor.data.lm_eval_logs`); anything
else is native.

lm-eval documents join to the items **by content, never by position** (SPEC "The join rule"):
a document belongs to the item whose row has its ``doc_hash`` (the items file written verbatim as
lm-eval's dataset), or whose prompt equals the logged doc's text or the prompt lm-eval sent (the
rendered ``doc_to_text``, the whole context, or its last few-shot block), whitespace collapsed.
A document that matches no item, or several equally, is refused (exit 2, naming its line):
``doc_id`` is lm-eval's position in *its* dataset and proves nothing about an items file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_doctor.data.items import ItemList
from distill_doctor.data.jsonl import get_id, get_str, iter_jsonl, type_name
from distill_doctor.data.lm_eval_logs import (
    LETTERS,
    LmEvalDoc,
    SamplesFile,
    is_lm_eval_record,
    logged_metric_names,
    normalize_text,
    read_doc,
    read_output,
    read_samples_file,
    render_doc_to_text,
)
from distill_doctor.data.records import Item, ModelOutput, OutputSet
from distill_doctor.errors import InputError

_is_lm_eval = is_lm_eval_record


def _native(obj: dict[str, Any], path: str, line: int) -> ModelOutput:
    out_id = get_id(obj, path=path, line=line)
    samples_raw = obj.get("samples")
    samples: tuple[str, ...] = ()
    if samples_raw is not None:
        if not isinstance(samples_raw, list):
            raise InputError(
                f"must be a list of strings, found {type_name(samples_raw)}",
                path=path,
                line=line,
                field="samples",
            )
        for i, s in enumerate(samples_raw):
            if not isinstance(s, str):
                raise InputError(
                    f"must be a string, found {type_name(s)}", path=path, line=line, field=f"samples[{i}]"
                )
        samples = tuple(samples_raw)
    output = get_str(obj, "output", path=path, line=line, required=not samples)
    if output is None:
        output = samples[0]  # only samples given: the first one is the output
    elif samples and output != samples[0]:
        raise InputError(
            "differs from samples[0]: with samples, output is the first sample (or left out)",
            path=path,
            line=line,
            field="output",
        )
    return ModelOutput(id=out_id, output=output, samples=samples, line=line)


@dataclass(frozen=True)
class LoggedScores:
    """lm-eval's own per-item scores from a samples file, for the agreement check (see
    ``diagnose.agreement``): ``values[(metric, filter)][item_id]``, in the file's filter order."""

    path: str
    task: str | None
    output_type: str
    results_path: str | None
    mc_rule: str | None  # multiple choice: "acc" or "acc_norm", the prediction rule used
    values: dict[tuple[str, str], dict[str, float]]


class ContentIndex:
    """Items indexed by content: lm-eval ``doc_hash`` candidates and whitespace-normalised prompts."""

    def __init__(self, items: list[Item]):
        self.items = items
        self.by_hash: dict[str, list[int]] = {}
        self.by_text: dict[str, list[int]] = {}
        for i, hashes in enumerate(getattr(items, "doc_hashes", None) or []):
            for h in hashes:
                self.by_hash.setdefault(h, []).append(i)
        for i, it in enumerate(items):
            self.by_text.setdefault(normalize_text(it.prompt), []).append(i)

    def texts(self, sf: SamplesFile, d: LmEvalDoc) -> list[str]:
        """What the document says it asked: the doc's string fields, the rendered ``doc_to_text``,
        each context lm-eval sent, and that context's last few-shot block."""
        out: list[str] = []
        if isinstance(d.doc, dict):
            out.extend(v for v in d.doc.values() if isinstance(v, str))
        rendered = render_doc_to_text(sf.config, d.doc)
        if rendered:
            out.append(rendered)
        delimiter = (sf.config or {}).get("fewshot_delimiter") or "\n\n"
        for context in dict.fromkeys(c for c, _ in d.arguments):
            out.append(context)
            if isinstance(delimiter, str) and delimiter in context:
                out.append(context.rsplit(delimiter, 1)[-1])
        return [t for t in (normalize_text(x) for x in out) if t]

    def matches_any(self, sf: SamplesFile, d: LmEvalDoc) -> bool:
        """Whether any item shares this document's doc_hash or one of its texts."""
        if d.doc_hash and self.by_hash.get(d.doc_hash):
            return True
        return any(self.by_text.get(t) for t in self.texts(sf, d))

    def match(self, sf: SamplesFile, d: LmEvalDoc) -> int:
        """The index of the one item this document is proven to be; InputError otherwise."""
        by_hash = set(self.by_hash.get(d.doc_hash, ())) if d.doc_hash else set()
        by_text = {i for t in self.texts(sf, d) for i in self.by_text.get(t, ())}
        found = by_hash or by_text
        doc_id = d.doc.get("id", d.doc.get("task_id")) if isinstance(d.doc, dict) else None
        if len(found) > 1 and doc_id is not None:
            found = {i for i in found if self.items[i].id == str(doc_id)} or found
        if len(found) > 1 and by_hash:
            # Identical documents (same doc_hash) in the items: their content is the same, so the
            # item named by this doc_id (items read from samples are named so) is as good as any.
            found = {i for i in found if self.items[i].id == str(d.doc_id)} or found
        if len(found) == 1:
            return found.pop()
        where = f"doc_id {d.doc_id}"
        if not found:
            raise InputError(
                f"{where}: cannot prove which item this lm-eval document is: its doc_hash matches no "
                "items row and no item's prompt equals the logged doc's text or the prompt lm-eval sent "
                "(were these samples made from another items file?)",
                path=sf.path,
                line=d.line,
                field="doc",
            )
        names = ", ".join(repr(self.items[i].id) for i in sorted(found)[:3])
        raise InputError(
            f"{where}: matches several items by content ({names}): cannot prove which one it is",
            path=sf.path,
            line=d.line,
            field="doc",
        )


def _mc_output(output: str, choices: tuple[str, ...], item: Item) -> str:
    """A multiple-choice prediction as the item's verifier reads it: the letter, or the choice's text."""
    if item.verifier_kind == "choice" or not choices:
        return output
    return choices[LETTERS.index(output.rsplit(" ", 1)[-1])]


@dataclass(frozen=True)
class SourceTask:
    """What the items read from a samples file were asked as: the task, its output type and, per
    item id, the choices (multiple choice). Another model's samples must match it to be compared."""

    path: str
    task: str | None
    output_type: str
    choices: dict[str, tuple[str, ...]]
    doc_ids: frozenset[int] = frozenset()


def _same_task(sf: SamplesFile, source: SourceTask | None) -> None:
    """Refuse samples of another task than the items': the same document asked another way (other
    choices, a generated answer instead of loglikelihoods) is not the same evaluation."""
    if source is None or sf.path == source.path:
        return
    if (sf.task and source.task and sf.task != source.task) or sf.output_type != source.output_type:
        raise InputError(
            f"logs task {sf.task or '?'} ({sf.output_type}) but the items come from task {source.task or '?'} "
            f"({source.output_type}) in {source.path}: compare teacher and student on the same lm-eval task",
            path=sf.path,
        )


def _same_choices(
    sf: SamplesFile, d: LmEvalDoc, item: Item, choices: tuple[str, ...], source: SourceTask | None
) -> None:
    """A multiple-choice document must offer the item's choices in the same order (letters are positions)."""
    if source is None:
        return
    expected = source.choices.get(item.id)
    if expected is not None and sf.path != source.path and tuple(choices) != expected:
        raise InputError(
            f"doc_id {d.doc_id} offers other choices than item {item.id!r} of {source.path} "
            f"({list(choices)[:4]} vs {list(expected)[:4]}): the letters would not mean the same answer",
            path=sf.path,
            line=d.line,
            field="arguments",
        )


def join_samples_file(sf: SamplesFile, items: list[Item], *, mc_rule: str = "acc") -> OutputSet:
    """Join every document of ``sf`` to its item by content (:class:`ContentIndex`); refuse the rest."""
    _same_task(sf, getattr(items, "lm_eval", None))
    index = ContentIndex(items)
    outputs: dict[str, ModelOutput] = {}
    values: dict[tuple[str, str], dict[str, float]] = {k: {} for k in logged_metric_names(sf, mc_rule)}
    source = getattr(items, "lm_eval", None)
    beyond: list[int] = []
    for d in sf.docs:
        if _beyond_source(sf, d, source, index):
            beyond.append(d.doc_id)
            continue
        item = items[index.match(sf, d)]
        if item.id in outputs:
            raise InputError(
                f"doc_id {d.doc_id} is item {item.id!r} again (first on line {outputs[item.id].line})",
                path=sf.path,
                line=d.line,
                field="doc",
            )
        output, samples, choices = read_output(sf, d, mc_rule=mc_rule)
        _same_choices(sf, d, item, choices, getattr(items, "lm_eval", None))
        output = _mc_output(output, choices, item)
        outputs[item.id] = ModelOutput(id=item.id, output=output, samples=samples, line=d.line)
        for key, per_item in values.items():
            if key in d.metrics:
                per_item[item.id] = d.metrics[key]
    scores = LoggedScores(
        sf.path,
        sf.task,
        sf.output_type,
        sf.results_path,
        mc_rule if sf.output_type == "multiple_choice" else None,
        values,
    )
    missing = [it.id for it in items if it.id not in outputs]
    return OutputSet(path=sf.path, outputs=outputs, missing=missing, lm_eval=scores, beyond_items=beyond)


def _beyond_source(sf: SamplesFile, d: LmEvalDoc, source: SourceTask | None, index: ContentIndex) -> bool:
    """A document of the items' own task that the items' log never had (its doc_id is not there and
    its content matches no item): another ``--limit``. Left out and counted, not refused; a doc_id the
    items' log has must join (else the files are of different data and the join refuses)."""
    return (
        source is not None
        and sf.path != source.path
        and d.doc_id not in source.doc_ids
        and not index.matches_any(sf, d)
    )


def is_lm_eval_file(path: str | Path) -> bool:
    """Whether the file's first record is an lm-eval samples row."""
    for _, obj in iter_jsonl(path):
        return is_lm_eval_record(obj)
    return False


def load_outputs(path: str | Path, items: list[Item], *, mc_rule: str = "acc") -> OutputSet:
    """Read one model's outputs and join them to ``items``: by id (native) or by content (lm-eval).

    Errors (``InputError`` naming file, line, field): an empty file, an id that is not an
    item, an item given twice, bad types, an lm-eval document that cannot be proven to be one
    item (see the module docstring). Items without an output are listed in
    ``OutputSet.missing`` (reported, not fatal). ``mc_rule``: multiple-choice prediction rule.
    """
    if is_lm_eval_file(path):
        return join_samples_file(read_samples_file(path), items, mc_rule=mc_rule)
    spath = str(path)
    known = {it.id for it in items}
    outputs: dict[str, ModelOutput] = {}
    for line, obj in iter_jsonl(path):
        if _is_lm_eval(obj):
            raise InputError(
                "mixes native and lm-eval records; use one format per file", path=spath, line=line
            )
        out = _native(obj, spath, line)
        if out.id not in known:
            raise InputError(
                f"unknown id {out.id!r}: not in the items file", path=spath, line=line, field="id"
            )
        if out.id in outputs:
            raise InputError(
                f"duplicate output for item {out.id!r} (first on line {outputs[out.id].line})",
                path=spath,
                line=line,
                field="id",
            )
        outputs[out.id] = out
    if not outputs:
        raise InputError("no outputs: the file is empty", path=spath)
    missing = [it.id for it in items if it.id not in outputs]
    return OutputSet(path=spath, outputs=outputs, missing=missing)


def items_from_samples(path: str | Path, *, mc_rule: str = "acc") -> ItemList:
    """The evaluation items an lm-eval samples file carries (no ``--items`` given): one per document,
    prompt, reference and verifier read by task family (``lm_eval_logs.read_doc``). The items'
    ``doc_hashes`` are the documents' own, so another model's samples join by content."""
    from distill_doctor.data.lm_eval_logs import dataset_ids_unique, doc_item_id

    if not is_lm_eval_file(path):
        raise InputError(
            "--items is required unless the outputs are lm-eval samples files (samples_<task>_<ts>.jsonl)",
            path=path,
        )
    sf = read_samples_file(path)
    unique = dataset_ids_unique(sf.docs)
    items, hashes = [], []
    choices: dict[str, tuple[str, ...]] = {}
    for d in sorted(sf.docs, key=lambda d: d.doc_id):
        r = read_doc(sf, d, mc_rule=mc_rule)
        items.append(
            Item(
                id=doc_item_id(d, unique),
                prompt=r.prompt,
                reference=r.reference,
                verifier=r.verifier,
                tags=r.tags,
                tests=r.tests,
                entry_point=r.entry_point,
                line=d.line,
                n_choices=len(r.choices) or None,
            )
        )
        hashes.append(frozenset({d.doc_hash}) if d.doc_hash else frozenset())
        if r.choices:
            choices[items[-1].id] = r.choices
    out = ItemList(items, sf.path, hashes)
    out.lm_eval = SourceTask(sf.path, sf.task, sf.output_type, choices, frozenset(d.doc_id for d in sf.docs))
    return out


def default_mc_rule(path: str | Path) -> str:
    """The multiple-choice rule a samples file's task is scored with: ``acc_norm`` when its rows log
    ``acc_norm`` and not ``acc`` (the leaderboard's gpqa, bbh, musr), else ``acc``. Native files: acc."""
    for _, obj in iter_jsonl(path):
        names = obj.get("metrics") if is_lm_eval_record(obj) else None
        if isinstance(names, list) and "acc_norm" in names and "acc" not in names:
            return "acc_norm"
        return "acc"
    return "acc"

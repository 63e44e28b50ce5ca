"""Load one model's outputs: native ``{"id", "output", "samples"?}`` lines or lm-eval sample files.

The format is detected per file from its first record: a record with ``doc_id`` or
``resps`` is an lm-evaluation-harness ``samples_<task>_<timestamp>.jsonl`` line
(written with ``--log_samples``); anything else is native.

lm-eval rows join to the items by ``doc_id`` = the 0-based index of the item in the
items file. The output text is the first *raw* response (``resps[0]``, nested lists
unwrapped), falling back to ``filtered_resps`` when ``resps`` is absent: distill-doctor
extracts answers itself, and lm-eval's filters replace unparseable answers with
``"[invalid]"``, which would hide the text. Repeats of one request become ``samples``.
A task logged with several filters writes one row per doc per filter; the first filter
seen is used and rows of other filters are skipped. ``doc_hash`` is checked where present:
against the logged ``doc`` (the file is self-consistent) and, when the row logs no ``doc``,
against the item row itself (see ``items.lm_doc_hash``). When the logged ``doc`` has an
``id`` or a ``prompt`` field, it must match the item at ``doc_id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill_doctor.data.items import lm_doc_hash
from distill_doctor.data.jsonl import get_id, get_str, iter_jsonl, type_name
from distill_doctor.data.records import Item, ModelOutput, OutputSet
from distill_doctor.errors import InputError


def _is_lm_eval(obj: dict[str, Any]) -> bool:
    return "doc_id" in obj or "resps" in obj


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


def _first_text(value: Any) -> str | None:
    """The first string in a (possibly nested) list, or None."""
    for _ in range(8):
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            return None
        value = value[0]
    return None


def _all_texts(value: Any) -> list[str]:
    """All strings of ``resps[0]`` (the repeats of the first request)."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        first = value[0]
        if all(isinstance(s, str) for s in first):
            return list(first)
    return []


def _check_doc(
    obj: dict[str, Any], item: Item, candidates: frozenset[str] | None, path: str, line: int
) -> None:
    doc_hash = obj.get("doc_hash")
    doc = obj.get("doc")
    if doc_hash is not None and not isinstance(doc_hash, str):
        raise InputError(
            f"must be a string, found {type_name(doc_hash)}", path=path, line=line, field="doc_hash"
        )
    if doc_hash is not None and doc is not None and lm_doc_hash(doc) != doc_hash:
        raise InputError(
            "doc_hash does not match the logged doc: the file was edited after lm-eval wrote it",
            path=path,
            line=line,
            field="doc_hash",
        )
    if isinstance(doc, dict):
        for key, expected in (("id", item.id), ("prompt", item.prompt)):
            if key in doc:
                if str(doc[key]).strip() != str(expected).strip():
                    raise InputError(
                        f"doc_id {obj['doc_id']} joins item {item.id!r} (line {item.line} of the items), "
                        f"but the logged doc has a different {key}: were these samples made from another items file?",
                        path=path,
                        line=line,
                        field=f"doc.{key}",
                    )
                break
    elif doc_hash is not None and candidates and doc_hash not in candidates:
        raise InputError(
            f"doc_hash does not match item {item.id!r} at doc_id {obj['doc_id']}: "
            "were these samples made from another items file?",
            path=path,
            line=line,
            field="doc_hash",
        )


def _lm_eval(
    obj: dict[str, Any], items: list[Item], hashes: list[frozenset[str]] | None, path: str, line: int
) -> ModelOutput:
    doc_id = obj.get("doc_id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, int):
        raise InputError(
            f"must be an integer (the 0-based index in the items file), found {type_name(doc_id)}",
            path=path,
            line=line,
            field="doc_id",
        )
    if not 0 <= doc_id < len(items):
        raise InputError(
            f"doc_id {doc_id} is outside the items file ({len(items)} items, doc_id 0..{len(items) - 1})",
            path=path,
            line=line,
            field="doc_id",
        )
    item = items[doc_id]
    _check_doc(obj, item, hashes[doc_id] if hashes and doc_id < len(hashes) else None, path, line)
    field = "resps" if obj.get("resps") is not None else "filtered_resps"
    text = _first_text(obj.get(field))
    if text is None:
        raise InputError(
            "holds no generated text (a loglikelihood / multiple-choice task?); "
            "log samples of a generate_until task",
            path=path,
            line=line,
            field=field,
        )
    samples = _all_texts(obj.get("resps"))
    return ModelOutput(id=item.id, output=text, samples=tuple(samples) if len(samples) > 1 else (), line=line)


def load_outputs(path: str | Path, items: list[Item]) -> OutputSet:
    """Read one model's outputs and join them to ``items`` by id (native) or doc_id (lm-eval).

    Errors (``InputError`` naming file, line, field): an empty file, an id that is not an
    item, an item given twice, bad types, an lm-eval doc that does not match its item.
    Items without an output are listed in ``OutputSet.missing`` (reported, not fatal).
    """
    spath = str(path)
    known = {it.id for it in items}
    hashes = getattr(items, "doc_hashes", None)
    outputs: dict[str, ModelOutput] = {}
    lm_format: bool | None = None
    lm_filter: Any = None
    for line, obj in iter_jsonl(path):
        if lm_format is None:
            lm_format = _is_lm_eval(obj)
            lm_filter = obj.get("filter")
        if lm_format:
            if not _is_lm_eval(obj):
                raise InputError(
                    "mixes lm-eval and native records; use one format per file", path=spath, line=line
                )
            if obj.get("filter") != lm_filter:
                continue  # the same docs again under another lm-eval filter
            out = _lm_eval(obj, items, hashes, spath, line)
        else:
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
                field="doc_id" if lm_format else "id",
            )
        outputs[out.id] = out
    if lm_format is None:
        raise InputError("no outputs: the file is empty", path=spath)
    missing = [it.id for it in items if it.id not in outputs]
    return OutputSet(path=spath, outputs=outputs, missing=missing)

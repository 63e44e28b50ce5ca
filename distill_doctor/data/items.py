"""Load the evaluation items (SPEC "Items"): validated, with each item's verifier resolved."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from distill_doctor.data.answers import extract_answer, parse_choice, parse_number
from distill_doctor.data.jsonl import get_id, get_str, get_str_or_number, iter_jsonl, type_name
from distill_doctor.data.math_reference import readable_reference
from distill_doctor.data.records import Item
from distill_doctor.errors import InputError

_PLAIN_VERIFIERS = ("numeric", "exact", "choice", "math", "code")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ItemList(list[Item]):
    """``list[Item]`` plus what later loaders need to know about the file they came from.

    ``path``: the items file. ``doc_hashes[i]``: the lm-evaluation-harness ``doc_hash``
    values that row ``i`` can have (see ``lm_doc_hash``), used to check lm-eval sample files.
    ``lm_eval``: for items read from a samples file, the task they were asked as
    (``outputs.SourceTask``); other samples files must be of the same task and choices.
    """

    def __init__(self, items: list[Item], path: str, doc_hashes: list[frozenset[str]]):
        super().__init__(items)
        self.path = path
        self.doc_hashes = doc_hashes
        self.lm_eval: Any = None


def lm_doc_hash(doc: Any) -> str:
    """The ``doc_hash`` lm-evaluation-harness 0.4.x logs for a document.

    ``lm_eval.evaluator`` computes ``hash_string(json.dumps(doc, indent=2,
    default=handle_non_serializable, ensure_ascii=False))`` with ``hash_string`` = sha256 hex
    of the UTF-8 bytes; ``handle_non_serializable`` turns sets into lists and anything else
    unknown into ``str``, which ``default=str`` reproduces for JSON-loaded documents.
    """
    text = json.dumps(doc, indent=2, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _reference(obj: dict[str, Any], path: str, line: int) -> str | int | float | None:
    ref = get_str_or_number(obj, "reference", path=path, line=line)
    if ref is None:
        return None
    if isinstance(ref, float) and (ref != ref or ref in (float("inf"), float("-inf"))):
        raise InputError("must be a finite number", path=path, line=line, field="reference")
    if isinstance(ref, str) and not ref.strip():
        raise InputError(
            "must not be empty (leave it out for code items)", path=path, line=line, field="reference"
        )
    return ref


def _tags(obj: dict[str, Any], path: str, line: int) -> dict[str, str | int | float]:
    tags = obj.get("tags")
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise InputError(f"must be an object, found {type_name(tags)}", path=path, line=line, field="tags")
    for key, value in tags.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError(
                f"must be a string or a number, found {type_name(value)}",
                path=path,
                line=line,
                field=f"tags.{key}",
            )
        if isinstance(value, float) and not math.isfinite(value):  # a NaN difficulty sorts nowhere
            raise InputError(
                f"must be a finite number, found {value}", path=path, line=line, field=f"tags.{key}"
            )
    return dict(tags)


def _verifier(obj: dict[str, Any], ref: Any, path: str, line: int) -> str:
    name = get_str(obj, "verifier", path=path, line=line, required=False)
    if name is None:
        if ref is None:
            raise InputError("required unless verifier is 'code'", path=path, line=line, field="reference")
        return "numeric" if parse_number(ref) is not None else "exact"
    name = name.strip()
    if name.startswith("regex:"):
        pattern = name[len("regex:") :]
        if not pattern:
            raise InputError(
                "regex verifier needs a pattern: 'regex:<pattern>'", path=path, line=line, field="verifier"
            )
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as err:
            raise InputError(
                f"regex does not compile: {err}", path=path, line=line, field="verifier"
            ) from None
        return name
    if name not in _PLAIN_VERIFIERS:
        raise InputError(
            f"unknown verifier {name!r}; expected numeric, exact, choice, math, code or regex:<pattern>",
            path=path,
            line=line,
            field="verifier",
        )
    return name


def _check_reference(verifier: str, ref: Any, path: str, line: int) -> None:
    if verifier == "code":
        return
    if ref is None:
        raise InputError(
            f"required for the {verifier.split(':')[0]} verifier", path=path, line=line, field="reference"
        )
    if verifier == "numeric":
        ok = parse_number(ref) is not None or extract_answer(str(ref), "numeric") is not None
        if not ok:
            raise InputError(
                f"numeric verifier, but {ref!r} holds no number", path=path, line=line, field="reference"
            )
    elif verifier == "math":
        if not readable_reference(ref):
            raise InputError(
                f"math verifier, but math-verify cannot read {str(ref)[:60]!r} as mathematics",
                path=path,
                line=line,
                field="reference",
            )
    elif verifier == "choice" and parse_choice(str(ref)) is None:
        raise InputError(
            f"choice verifier, but {ref!r} is not an option letter (A, B, ...)",
            path=path,
            line=line,
            field="reference",
        )


def parse_item(obj: dict[str, Any], path: str, line: int) -> Item:
    """One validated item from a parsed JSONL row (``path``/``line`` name it in errors)."""
    item_id = get_id(obj, path=path, line=line)
    prompt = get_str(obj, "prompt", path=path, line=line)
    ref = _reference(obj, path, line)
    verifier = _verifier(obj, ref, path, line)
    _check_reference(verifier, ref, path, line)
    tests = get_str(obj, "tests", path=path, line=line, required=verifier == "code")
    entry_point = get_str(obj, "entry_point", path=path, line=line, required=verifier == "code")
    if entry_point is not None and not _IDENTIFIER.match(entry_point):
        raise InputError(
            f"must be a Python function name, found {entry_point!r}",
            path=path,
            line=line,
            field="entry_point",
        )
    return Item(
        id=item_id,
        prompt=prompt,
        reference=ref,
        verifier=verifier,
        tags=_tags(obj, path, line),
        group=get_str(obj, "group", path=path, line=line, required=False),
        variant=get_str(obj, "variant", path=path, line=line, required=False),
        tests=tests,
        entry_point=entry_point,
        line=line,
    )


def check_new_id(item_id: str, first_line: dict[str, int], path: str, line: int) -> None:
    """Refuse an id already seen (``first_line``: id -> line of its first row), else record it."""
    if item_id in first_line:
        raise InputError(
            f"duplicate id {item_id!r} (first on line {first_line[item_id]})",
            path=path,
            line=line,
            field="id",
        )
    first_line[item_id] = line


def load_items(path: str | Path) -> ItemList:
    """Read and validate an items JSONL file (``.jsonl`` or ``.jsonl.gz``).

    Ids must be unique; each item's verifier is resolved (default: ``numeric`` when the
    reference parses as a number, else ``exact``); ``regex:`` patterns must compile;
    numeric/choice references must hold a number/letter; code items need ``tests`` and
    ``entry_point``. Unknown fields are ignored. Every error is an ``InputError`` naming
    the file, line and field; an empty file is an error too.
    """
    spath = str(path)
    items: list[Item] = []
    rows: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for line, obj in iter_jsonl(path):
        item = parse_item(obj, spath, line)
        check_new_id(item.id, first_line, spath, line)
        items.append(item)
        rows.append(obj)
    if not items:
        raise InputError("no items: the file is empty", path=spath)
    return ItemList(items, spath, _doc_hash_candidates(rows))


def _doc_hash_candidates(rows: list[dict[str, Any]]) -> list[frozenset[str]]:
    """Per row: the doc_hash of the row as written, and as ``datasets``' JSON loader gives it to
    lm-eval (every column of the file present, in first-seen order, missing ones as null)."""
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    out = []
    for row in rows:
        filled = {key: row.get(key) for key in columns}
        out.append(frozenset({lm_doc_hash(row), lm_doc_hash(filled)}))
    return out

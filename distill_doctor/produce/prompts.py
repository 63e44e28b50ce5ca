"""Read the prompts for ``generate``: the items format, with ``reference`` optional.

A row with a ``reference`` (or a ``code`` verifier) is validated exactly like an evaluation item
(:mod:`distill_doctor.data.items`), so rejection sampling can verify its responses. A row without
one is a bare prompt (``id``, ``prompt``, optional ``tags``/``group``/``variant``): it can be
used with ``--reject-with none``; under ``--reject-with verifier`` its responses are dropped.
"""

from __future__ import annotations

from pathlib import Path

from distill_doctor.data.items import check_new_id, parse_item
from distill_doctor.data.jsonl import get_id, get_str, iter_jsonl
from distill_doctor.data.records import VERIFIER_KINDS, Item
from distill_doctor.errors import InputError


def _bare_prompt(obj: dict, path: str, line: int) -> Item:
    verifier = (get_str(obj, "verifier", path=path, line=line, required=False) or "exact").strip()
    if verifier.split(":", 1)[0] not in VERIFIER_KINDS:
        raise InputError(
            f"unknown verifier {verifier!r}; expected numeric, exact, choice, code or regex:<pattern>",
            path=path,
            line=line,
            field="verifier",
        )
    return Item(
        id=get_id(obj, path=path, line=line),
        prompt=get_str(obj, "prompt", path=path, line=line),
        reference=None,
        verifier=verifier,
        tags=dict(obj["tags"]) if isinstance(obj.get("tags"), dict) else {},
        group=get_str(obj, "group", path=path, line=line, required=False),
        variant=get_str(obj, "variant", path=path, line=line, required=False),
        line=line,
    )


def load_prompts(path: str | Path) -> list[Item]:
    """Prompts in file order; ids unique; every error an ``InputError`` naming file, line and field."""
    spath = str(path)
    prompts: list[Item] = []
    first_line: dict[str, int] = {}
    for line, obj in iter_jsonl(path):
        verifier = obj.get("verifier")
        has_check = obj.get("reference") is not None or (
            isinstance(verifier, str) and verifier.strip() == "code"
        )
        item = parse_item(obj, spath, line) if has_check else _bare_prompt(obj, spath, line)
        check_new_id(item.id, first_line, spath, line)
        prompts.append(item)
    if not prompts:
        raise InputError("no prompts: the file is empty", path=spath)
    return prompts

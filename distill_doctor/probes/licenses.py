"""License terms that matter when a model's outputs train another model: the lookup.

The table itself is data, ``licenses.toml`` beside this module (a documented table, not legal
advice): each license id's category and note, the categories' meaning and verdict, aliases, the
values that mean "unknown", and ordered patterns for names outside the table. The categories:

| category | meaning | verdict for a teacher / student base |
|---|---|---|
| ``permissive`` | SPDX open licenses (apache-2.0, mit, bsd-*, cc0-1.0, cc-by-4.0, ...) | ok |
| ``copyleft`` | share-alike / GPL family: outputs may train; derivatives keep the terms | ok (noted) |
| ``conditional`` | allowed with conditions (Llama 3.1+ naming, Gemma derivative terms, OpenRAIL, ...) | warn |
| ``restricted_outputs`` | outputs may not improve other models (Llama 2/3.0 except own derivatives, API terms) | fail |
| ``noncommercial`` | CC-BY-NC*, "research only", Qwen research, Mistral non-production | fail |
| ``unknown`` | missing, "unknown", "other", "proprietary", ... | fail for the teacher, warn elsewhere |
| ``unlisted`` | a name neither in the table nor matching its patterns | warn (check its terms on outputs) |
"""

from __future__ import annotations

import enum
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any


class LicenseVerdict(enum.StrEnum):
    """What a license category means for distillation (the provenance probe grades it by role)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Pattern:
    """A name pattern for licenses outside the table: the table entry ``id``, or its own terms."""

    regex: re.Pattern[str]
    id: str | None
    category: str
    note: str


def _load_table() -> dict[str, Any]:
    with resources.files(__package__).joinpath("licenses.toml").open("rb") as f:
        return tomllib.load(f)


_TABLE = _load_table()
VERDICT_OF_CATEGORY: dict[str, LicenseVerdict] = {
    name: LicenseVerdict(c["verdict"]) for name, c in _TABLE["categories"].items()
}
# id -> (category, note). Ids are SPDX where one exists (lower case), else the Hub's license tag.
LICENSES: dict[str, tuple[str, str]] = {k: (v["category"], v["note"]) for k, v in _TABLE["licenses"].items()}
ALIASES: dict[str, str] = dict(_TABLE["aliases"])
_UNKNOWN = frozenset(_TABLE["unknown"])
PATTERNS: tuple[Pattern, ...] = tuple(
    Pattern(
        re.compile(p["regex"]),
        p.get("id"),
        p["category"] if "id" not in p else LICENSES[p["id"]][0],
        p["note"] if "id" not in p else LICENSES[p["id"]][1],
    )
    for p in _TABLE["patterns"]
)


@dataclass(frozen=True)
class LicenseInfo:
    given: str | None
    id: str | None  # the table id (SPDX where one exists), None when not recognised
    category: str
    note: str

    @property
    def verdict(self) -> LicenseVerdict:
        return VERDICT_OF_CATEGORY[self.category]


def _key(text: str) -> str:
    return re.sub(r"[\s_]+", "-", text.strip().lower())


def classify_license(value: object) -> LicenseInfo:
    """Classify a manifest's license string (SPDX id, Hub tag or common name) into the table's categories."""
    if value is None or not isinstance(value, str | int | float):
        return LicenseInfo(None, None, "unknown", "no license given")
    given = str(value)
    key = _key(given)
    if key in _UNKNOWN:
        return LicenseInfo(given, None, "unknown", "license unknown")
    key = ALIASES.get(key, key)
    if key in LICENSES:
        category, note = LICENSES[key]
        return LicenseInfo(given, key, category, note)
    for pattern in PATTERNS:
        if pattern.regex.search(key):
            return LicenseInfo(given, pattern.id, pattern.category, pattern.note)
    return LicenseInfo(given, None, "unlisted", "license not in the table; check its terms on outputs")

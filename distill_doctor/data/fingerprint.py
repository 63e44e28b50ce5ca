"""File fingerprints recorded in reports and manifests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ITEMS_FINGERPRINT = "sha256 over the items sorted by id, one JSON line [id, prompt, reference] each"


def file_sha256(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (works for multi-GB training files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def items_sha256(items: Iterable[Any]) -> str:
    """The evaluation set's fingerprint: sha256 of the items sorted by id, each written as the JSON
    line ``[id, prompt, reference]`` (compact, ``ensure_ascii``, ``sort_keys``) plus a newline.

    It names the item set, not the file: the same items in another order, another file layout or
    read from lm-eval samples (no items file) give the same fingerprint; a changed prompt or
    reference gives another. ``gate --baseline`` compares it between two reports.
    """
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda it: it.id):
        line = json.dumps([item.id, item.prompt, item.reference], ensure_ascii=True, sort_keys=True,
                          separators=(",", ":"))  # fmt: skip
        digest.update(line.encode("ascii") + b"\n")
    return digest.hexdigest()

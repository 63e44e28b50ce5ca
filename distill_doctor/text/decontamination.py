"""One decontamination rule for two callers: the contamination probe scans training rows with
this index, and ``generate --decontaminate`` drops teacher rows with it, so what generation keeps
is what the diagnosis would call clean."""

from __future__ import annotations

from distill_doctor.text.overlap import OverlapIndex, tokens

REF_SUFFIX = "\x00reference"
MIN_REFERENCE_WORDS = 13
DECONTAMINATION_METHOD = (
    "distill-doctor contamination index (the diagnose probe's): prompts and long references of the "
    "eval items; whole-text, contained short item, word 13-gram coverage >= 0.8 by one row (numbers "
    "kept), MinHash/LSH near-duplicate prompt confirmed by exact Jaccard; punctuation kept as tokens"
)


def eval_documents(items: list) -> dict[str, str]:
    """Texts to index: every prompt, plus references long enough to hold an n-gram (a number or a
    label matching somewhere proves nothing). Reference keys are ``<id>`` + ``REF_SUFFIX``."""
    docs = {it.id: it.prompt or "" for it in items}
    for it in items:
        if isinstance(it.reference, str) and len(tokens(it.reference, "keep")) >= MIN_REFERENCE_WORDS:
            docs[it.id + REF_SUFFIX] = it.reference
    return docs


def index_for(items: list) -> OverlapIndex:
    """The contamination index over one evaluation set: what the probe scans training rows with,
    and what ``generate --decontaminate`` drops rows with (one rule for both)."""
    return OverlapIndex(eval_documents(items), punctuation="keep")

"""Loaders for distill-doctor's inputs (SPEC "Inputs"); every error is an ``InputError`` with file/line/field."""

from distill_doctor.data.items import ItemList, lm_doc_hash, load_items
from distill_doctor.data.jsonl import iter_jsonl
from distill_doctor.data.manifest import load_manifest
from distill_doctor.data.outputs import load_outputs
from distill_doctor.data.records import Item, Judgement, ModelOutput, OutputSet
from distill_doctor.data.training import load_training, render_messages

__all__ = [
    "Item",
    "ItemList",
    "ModelOutput",
    "OutputSet",
    "Judgement",
    "iter_jsonl",
    "lm_doc_hash",
    "load_items",
    "load_manifest",
    "load_outputs",
    "load_training",
    "render_messages",
]

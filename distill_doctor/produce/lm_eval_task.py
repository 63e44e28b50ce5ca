"""An lm-evaluation-harness task built from an items file, runnable offline.

The task is a plain ``generate_until`` config: the context is the item's prompt exactly as the
student was trained on it (``doc_to_text: "{{prompt}}"``, no few-shot, no chat template, the
tokenizer's own special tokens, so BOS matches training), generation is greedy and stops at the
model's EOS (``until: []``; lm-eval always adds the EOS string) or after ``max_gen_toks`` tokens.
Only lm-eval's registered ``exact_match`` metric is used: an unregistered name would fall back to
``evaluate.load`` and the network. lm-eval's score is a rough check; the verifiers of
:mod:`distill_doctor.verify` score the outputs for the diagnosis.

The harness reads its documents with the ``datasets`` JSON loader, which infers one Arrow type
per column: a ``reference`` that is a number on one line and a string on the next is silently
converted (``"3"`` becomes ``3``) or fails to load. So the items are first written as *docs*, in
the items' order (lm-eval's ``doc_id`` is then the 0-based item index): the items file's own rows
when they survive the loader unchanged (lm-eval's ``doc_hash`` then matches the items file),
else ``{"id", "prompt", "reference"}`` with string values (see :func:`write_docs`). The docs
path is absolute (relative ``data_files`` resolve against the working directory, not the YAML's
folder) and is given as ``{test: path}`` (a plain string would make a ``train`` split only).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distill_doctor.atomic import atomic_write_text
from distill_doctor.data.records import Item

# Without these the datasets JSON loader tries the hub first (and fails, slowly or not at all).
OFFLINE_ENV = {
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
DEFAULT_MAX_GEN_TOKS = 256
TASK_PREFIX = "distill_doctor_"


def set_offline_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the offline variables that are not set yet (a user's explicit value wins). Returns them."""
    env = os.environ if environ is None else environ
    for key, value in OFFLINE_ENV.items():
        env.setdefault(key, value)
    return {key: env[key] for key in OFFLINE_ENV}


def task_name_for(items_path: str | Path) -> str:
    """A registry-safe task name from the items file name: ``distill_doctor_<stem>``."""
    stem = Path(items_path).name
    for suffix in (".gz", ".jsonl", ".json"):
        stem = stem.removesuffix(suffix)
    slug = re.sub(r"[^0-9A-Za-z]+", "_", stem).strip("_").lower() or "items"
    return TASK_PREFIX + slug


def item_doc(item: Item) -> dict[str, str]:
    """The normalised lm-eval document of one item: string fields only, one Arrow type per column."""
    reference = "" if item.reference is None else str(item.reference)
    return {"id": item.id, "prompt": item.prompt, "reference": reference}


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def load_docs_like_lm_eval(
    path: str | Path, cache_dir: str | Path | None = None
) -> list[dict[str, Any]] | None:
    """The documents lm-eval will see: ``datasets``' JSON loader over ``{test: path}``; None if it fails."""
    import datasets

    set_offline_env()
    try:
        ds = datasets.load_dataset(
            "json", data_files={"test": str(Path(path).resolve())}, split="test", cache_dir=cache_dir
        )
    except Exception:  # Arrow type errors on mixed columns: the caller falls back to normalised docs
        return None
    return [dict(d) for d in ds]


def write_docs(
    items: list[Item],
    path: str | Path,
    *,
    items_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """Write the docs the harness reads (items' order, so ``doc_id`` = item index); returns the mode.

    ``"verbatim"``: the items file's own rows, when ``datasets`` loads them back unchanged (then
    lm-eval's ``doc_hash`` values match the items file, and its samples files are accepted by
    ``diagnose`` as outputs). ``"normalized"``: :func:`item_doc` rows, when the file's columns do
    not survive Arrow type inference (e.g. ``reference`` a number on one line and a string on
    another, which the loader silently converts).
    """
    from distill_doctor.data.items import lm_doc_hash
    from distill_doctor.data.jsonl import iter_jsonl

    path = Path(path)
    if items_path is not None:
        rows = [obj for _, obj in iter_jsonl(items_path)][: len(items)]
        if [str(r.get("id")) for r in rows] == [it.id for it in items]:
            atomic_write_text(path, _jsonl(rows))
            loaded = load_docs_like_lm_eval(path, cache_dir)
            if loaded is not None and len(loaded) == len(rows):
                columns = dict.fromkeys(k for r in rows for k in r)
                same = all(
                    lm_doc_hash(doc) in (lm_doc_hash(row), lm_doc_hash({k: row.get(k) for k in columns}))
                    for doc, row in zip(loaded, rows)
                )
                if same:
                    return "verbatim"
    atomic_write_text(path, _jsonl(item_doc(it) for it in items))
    return "normalized"


def generation_kwargs(
    *, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, until: list[str] | None = None, temperature: float = 0.0
) -> dict[str, Any]:
    """lm-eval ``generation_kwargs``: greedy unless ``temperature > 0``; EOS always stops (lm-eval adds it)."""
    if max_gen_toks < 1:
        raise ValueError(f"max_gen_toks must be >= 1, got {max_gen_toks}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    return {
        "until": list(until or []),
        "do_sample": temperature > 0,
        "temperature": float(temperature),
        "max_gen_toks": int(max_gen_toks),
    }


def build_task_config(
    docs_path: str | Path,
    *,
    task_name: str,
    max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
    until: list[str] | None = None,
    temperature: float = 0.0,
) -> dict[str, Any]:
    """The task as a dict (usable inline by ``TaskManager.load`` or dumped as YAML).

    ``docs_path`` is made absolute here: the harness would resolve a relative one against the
    working directory of whoever runs it.
    """
    docs = Path(docs_path).expanduser().resolve()
    return {
        "task": task_name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(docs)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "prompt",  # a column name: the prompt verbatim, no template rendering
        "doc_to_target": "{{reference}}",
        "target_delimiter": "",
        "num_fewshot": 0,
        "generation_kwargs": generation_kwargs(
            max_gen_toks=max_gen_toks, until=until, temperature=temperature
        ),
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": True,
                "ignore_punctuation": False,
            }
        ],
        "metadata": {"version": 1.0, "source": "distill-doctor"},
    }


def write_task_yaml(config: dict[str, Any], path: str | Path) -> Path:
    """Write the task config as YAML (for ``lm_eval --include_path DIR --tasks NAME``); atomic."""
    import yaml

    text = (
        "# Written by distill-doctor: an lm-evaluation-harness generate_until task over local items.\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    )
    return atomic_write_text(Path(path), text)


def export_task(items: list[Item], items_path: str | Path, out_dir: str | Path, **kwargs: Any) -> Path:
    """Write ``<out_dir>/<task>.jsonl`` (docs, see :func:`write_docs`) and ``<out_dir>/<task>.yaml``;
    returns the YAML path.

    Run it with ``lm_eval --model hf --model_args pretrained=DIR --include_path OUT_DIR --tasks
    <task> --log_samples --output_path ...``; the samples file it writes is accepted by
    ``distill-doctor diagnose`` as outputs.
    """
    out_dir = Path(out_dir)
    name = task_name_for(items_path)
    docs = out_dir / f"{name}.jsonl"
    with tempfile.TemporaryDirectory(prefix="dd-datasets-") as cache:  # the round-trip check's cache
        write_docs(items, docs, items_path=items_path, cache_dir=cache)
    config = build_task_config(docs, task_name=name, **kwargs)
    return write_task_yaml(config, out_dir / f"{name}.yaml")

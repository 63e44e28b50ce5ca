"""Run the items through lm-evaluation-harness (Python API) and write the outputs distill-doctor reads.

One :class:`~lm_eval.models.huggingface.HFLM` per model is built once (:func:`load_hflm`) and can
run many item sets (:func:`run_items`): model loading dominates small runs. The harness's
per-sample records (``res["samples"][task]``) are joined back to the items by ``doc_id`` (the
0-based item index, see :mod:`lm_eval_task`) and written in the SPEC's outputs format
``{"id", "output"}``; lm-eval's own samples file can be kept beside it. Metric values come back as
numpy scalars and are converted before any JSON is written.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distill_doctor.atomic import atomic_write_text
from distill_doctor.data.records import Item, ModelOutput
from distill_doctor.devices import model_load_errors
from distill_doctor.errors import InputError
from distill_doctor.produce.lm_eval_task import (
    DEFAULT_MAX_GEN_TOKS,
    build_task_config,
    set_offline_env,
    task_name_for,
    write_docs,
)
from distill_doctor.produce.quiet import quiet_output


@dataclass
class EvalRun:
    """What one harness run produced for one model and one items file."""

    task: str
    outputs: list[ModelOutput]  # in item order
    samples: list[dict[str, Any]]  # lm-eval's per-sample records, JSON-safe, in doc_id order
    metrics: dict[str, Any]  # lm-eval's aggregate results for the task (exact_match, ...)
    max_gen_toks: int
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)  # the task config that ran
    docs_mode: str = "normalized"  # "verbatim": lm-eval's doc_hash values match the items file


def to_jsonable(value: Any) -> Any:
    """A JSON-safe copy: numpy scalars/arrays to Python numbers/lists, tuples to lists, the rest to str."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):  # numpy's float64 is a float subclass: make it plain
        return _plain_number(value)
    if hasattr(value, "tolist"):  # numpy scalar or array, torch tensor
        return to_jsonable(value.tolist())
    return str(value)


def _plain_number(value: Any) -> bool | int | float:
    if isinstance(value, bool):
        return bool(value)
    return int(value) if isinstance(value, int) else float(value)


def load_hflm(
    model_dir: str | Path,
    *,
    device: str = "cpu",
    batch_size: int = 8,
    max_length: int | None = None,
    dtype: str = "auto",
    quiet: bool = False,
):
    """Load a local model directory into lm-eval's ``HFLM`` (offline). Build once, reuse for many item sets.

    ``add_bos_token`` is left to the tokenizer's own default, which is what training used
    (``tokenizer(prompt)`` with special tokens): a BOS mismatch between training and evaluation
    silently wrecks scores.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InputError("not a model directory (no config.json)", path=model_dir)
    set_offline_env()
    with quiet_output(quiet):
        from lm_eval.models.huggingface import HFLM

        try:
            return HFLM(
                pretrained=str(model_dir),
                device=device,
                batch_size=batch_size,
                max_length=max_length,
                dtype=dtype,
            )
        except model_load_errors() as err:  # incl. a truncated or corrupt model.safetensors
            raise InputError(f"cannot load the model: {' '.join(str(err).split())}", path=model_dir) from None


def fit_max_gen_toks(lm, items: list[Item], requested: int) -> int:
    """``requested`` lowered so that the longest prompt plus the generation fits the model's length.

    lm-eval asserts ``max_gen_toks < max_length`` and left-truncates longer contexts; a prompt
    that leaves no room at all is an input error naming its line.
    """
    if requested < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {requested}")
    longest, worst = 0, None
    for it in items:
        n = len(lm.tok_encode(it.prompt))
        if n > longest:
            longest, worst = n, it
    room = int(lm.max_length) - longest
    if room < 1:
        raise InputError(
            f"prompt is {longest} tokens, the model's maximum length is {lm.max_length}: no room to generate",
            line=worst.line if worst else None,
            field="prompt",
        )
    return min(requested, room)


def run_items(
    lm,
    items: list[Item],
    *,
    items_path: str | Path | None = None,
    max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
    until: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    quiet: bool = False,
    work_dir: str | Path | None = None,
) -> EvalRun:
    """Run ``items`` through ``simple_evaluate`` with the given ``HFLM``; outputs joined to the items.

    ``work_dir`` receives the docs file the harness reads (and its ``datasets`` cache); by default a
    temporary folder removed afterwards. ``limit``: only the first ``limit`` items. ``items_path``:
    the file the items came from (names the task; its rows are used verbatim when they can be).
    """
    if not items:
        raise InputError("no items to evaluate", path=items_path)
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be >= 1, got {limit}")
        items = items[:limit]
    set_offline_env()
    gen_toks = fit_max_gen_toks(lm, items, max_gen_toks)
    name = task_name_for(items_path or "items")
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dd-lm-eval-")))
        else:
            work = Path(work_dir)
            work.mkdir(parents=True, exist_ok=True)
        docs = work / f"{name}.jsonl"
        cache = (work / "hf_datasets_cache").resolve()  # with the docs, not in the user's ~/.cache
        with quiet_output(quiet):
            docs_mode = write_docs(items, docs, items_path=items_path, cache_dir=cache)
        config = build_task_config(docs, task_name=name, max_gen_toks=gen_toks, until=until)
        run_config = json.loads(json.dumps(config))
        run_config["dataset_kwargs"]["cache_dir"] = str(cache)
        start = time.perf_counter()
        with quiet_output(quiet):
            import lm_eval
            from lm_eval.tasks import TaskManager

            res = lm_eval.simple_evaluate(
                model=lm,
                tasks=[run_config],
                task_manager=TaskManager(include_defaults=False),
                log_samples=True,
                bootstrap_iters=0,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
        seconds = time.perf_counter() - start
    samples = sorted((to_jsonable(s) for s in res["samples"][name]), key=lambda s: s["doc_id"])
    outputs = join_samples(samples, items, source=items_path or name)
    metrics = to_jsonable(res["results"].get(name, {}))
    return EvalRun(name, outputs, samples, metrics, gen_toks, seconds, config, docs_mode)


def join_samples(
    samples: list[dict[str, Any]], items: list[Item], *, source: str | Path
) -> list[ModelOutput]:
    """lm-eval records to SPEC outputs, by ``doc_id`` = item index; the doc's id must be the item's."""
    outputs = []
    for s in samples:
        k = int(s["doc_id"])
        if not 0 <= k < len(items):
            raise InputError(f"lm-eval returned doc_id {k} for {len(items)} items", path=source)
        doc_id = (s.get("doc") or {}).get("id")
        if doc_id is not None and str(doc_id) != items[k].id:  # ids may be JSON integers
            raise InputError(
                f"lm-eval doc {k} has id {doc_id!r}, item {k} is {items[k].id!r}", path=source, field="id"
            )
        # The raw generation (as the outputs loader reads samples files), not a filter's rewrite.
        text = s["resps"][0][0] if s.get("resps") else s["filtered_resps"][0]
        outputs.append(ModelOutput(id=items[k].id, output=str(text)))
    return outputs


def logged_scores(run: EvalRun, items: list[Item]):
    """lm-eval's own per-item scores of a run, keyed like a samples file's (``outputs.LoggedScores``)."""
    from distill_doctor.data.outputs import LoggedScores

    values: dict[tuple[str, str], dict[str, float]] = {}
    for s in run.samples:
        k = int(s["doc_id"])
        if not 0 <= k < len(items):
            continue
        filt = str(s.get("filter", "none"))
        for metric in s.get("metrics") or []:
            value = s.get(metric)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.setdefault((str(metric), filt), {})[items[k].id] = float(value)
    return LoggedScores(
        path=run.task,
        task=run.task,
        output_type="generate_until",
        results_path=None,
        mc_rule=None,
        values=values,
    )


def outputs_jsonl(outputs: list[ModelOutput]) -> str:
    """The SPEC outputs format: one ``{"id", "output"}`` (plus ``samples`` when there are several) per line."""
    lines = []
    for o in outputs:
        row: dict[str, Any] = {"id": o.id, "output": o.output}
        if o.samples:
            row["samples"] = list(o.samples)
        lines.append(json.dumps(row, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def write_outputs(path: str | Path, outputs: list[ModelOutput]) -> Path:
    """Write outputs atomically (a reader never sees half a file)."""
    return atomic_write_text(Path(path), outputs_jsonl(outputs))


def samples_filename(task: str, when: datetime | None = None) -> str:
    """lm-eval's ``--log_samples`` naming: ``samples_<task>_<timestamp>.jsonl``."""
    when = when or datetime.now(UTC)
    return f"samples_{task}_{when.strftime('%Y-%m-%dT%H-%M-%S.%f')}.jsonl"


def write_samples(path: str | Path, samples: list[dict[str, Any]]) -> Path:
    """Write lm-eval's per-sample records as JSONL (the harness's own samples-file layout); atomic."""
    text = "".join(json.dumps(to_jsonable(s), ensure_ascii=False) + "\n" for s in samples)
    return atomic_write_text(Path(path), text)

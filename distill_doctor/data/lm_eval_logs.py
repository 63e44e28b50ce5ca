"""lm-evaluation-harness logs as first-class input: ``samples_<task>_<timestamp>.jsonl`` files.

A samples file (written with ``--log_samples``) holds, per document, the dataset row (``doc``),
the target, the requests sent (``arguments``), the raw responses (``resps``), lm-eval's filtered
responses and its own per-sample metrics; a task logged with several filters writes one row per
document per filter. The task's config is in the ``results_<timestamp>.json`` lm-eval writes
beside it (same folder, same timestamp).

This module reads such a file into :class:`LmEvalDoc` records, one per document, and turns each
into what distill-doctor scores, by task family (:func:`read_doc`):

- **multiple choice** (``output_type: multiple_choice``: arc, mmlu, hellaswag, piqa, ...): there
  is no generated text. The prediction is the choice with the highest loglikelihood (``acc``) or
  the highest loglikelihood per character of the choice (``acc_norm``), exactly as
  ``lm_eval.api.task.ConfigurableTask.process_results`` computes them (ties go to the first
  choice, as ``numpy.argmax``). The output is that choice's letter (A, B, ... by position) and
  the item a ``choice`` item whose reference is the gold choice's letter.
- **code** (a ``doc`` with ``test`` and ``entry_point``: humaneval): a ``code`` item run in the
  sandbox (prompt = the doc's prompt, tests = its ``test``). mbpp (a ``doc`` with ``test_list``):
  the ``test_list`` asserts after ``test_setup_code`` are the tests, the function the first assert
  calls is the entry point, and the completion (a whole program) is run as a fenced block so
  that the prose prompt is not prepended.
- **math** (hendrycks_math / minerva_math, or a doc whose ``solution`` holds ``\\boxed``): the
  reference is the logged target (the boxed answer); verifier ``math`` when installed, else
  ``numeric`` when the answer is a number, else ``exact``.
- **gsm8k-style** (a target that holds ``#### N``): the reference is N, verifier ``numeric``.
- **anything else generated**: the target as reference, ``numeric`` when it parses as a number,
  else ``exact``. The agreement with lm-eval's own metric (``diagnose`` reports it) shows whether
  that reading is right.

The output text is the raw response (``resps``), not lm-eval's filtered one: distill-doctor
extracts answers itself, and filters replace unparseable answers with ``"[invalid]"``. Several
responses to one request (``repeats: k``) become the output's ``samples``.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill_doctor.data.answers import last_code_block, parse_number
from distill_doctor.data.items import lm_doc_hash
from distill_doctor.data.jsonl import iter_jsonl, type_name
from distill_doctor.errors import InputError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MC_RULES = ("acc", "acc_norm")
_TIMESTAMP = re.compile(r"^samples_(?P<task>.+)_(?P<ts>\d{4}-\d{2}-\d{2}T[0-9.\-]+)\.jsonl(?:\.gz)?$")
_HASHES = re.compile(r"####\s*(.+?)\s*$", re.S)
_WS = re.compile(r"\s+")


def is_lm_eval_record(obj: dict[str, Any]) -> bool:
    """A samples-file row (``doc_id`` or ``resps``), as opposed to a native ``{"id", "output"}`` line."""
    return "doc_id" in obj or "resps" in obj


def normalize_text(text: str) -> str:
    """Whitespace collapsed and trimmed: the form prompts are compared in when joining by content."""
    return _WS.sub(" ", text).strip()


@dataclass(frozen=True)
class LmEvalDoc:
    """One document of a samples file: the first filter's row, plus every filter's metrics."""

    line: int  # 1-based line of the document's first row
    doc_id: int
    doc: Any
    doc_hash: str | None
    target: Any
    arguments: tuple[tuple[str, Any], ...]  # (arg_0 = context, arg_1 = continuation or gen kwargs)
    resps: Any
    metrics: dict[tuple[str, str], float] = field(default_factory=dict)  # (metric, filter) -> value


@dataclass(frozen=True)
class SamplesFile:
    """A samples file read whole: its documents (doc_id order of the file), task and config."""

    path: str
    task: str | None
    config: dict[str, Any] | None  # the task's config from the results_*.json beside it
    results_path: str | None
    output_type: str  # "generate_until" | "multiple_choice" | "loglikelihood" | ...
    filters: tuple[str, ...]
    docs: tuple[LmEvalDoc, ...]


@dataclass(frozen=True)
class Reading:
    """What distill-doctor scores for one document: the item's fields and the model's output."""

    prompt: str
    reference: str | int | float | None
    verifier: str
    family: str  # "multiple_choice" | "code" | "math" | "gsm8k" | "generic"
    output: str
    samples: tuple[str, ...] = ()
    tests: str | None = None
    entry_point: str | None = None
    tags: dict[str, str | int | float] = field(default_factory=dict)
    choices: tuple[str, ...] = ()  # multiple choice: the choice texts, in order


# ---- reading the file ---------------------------------------------------------------------------


def _results_config(path: Path, task: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The task's config from ``results_<ts>.json`` beside the samples file (same timestamp first)."""
    if task is None:
        return None, None
    match = _TIMESTAMP.match(path.name)
    ts = match.group("ts") if match else None
    candidates = sorted(path.parent.glob("results_*.json"), reverse=True)
    if ts is not None:
        candidates.sort(key=lambda p: p.name != f"results_{ts}.json")
    for cand in candidates:
        try:
            data = json.loads(cand.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        config = (data.get("configs") or {}).get(task) if isinstance(data, dict) else None
        if isinstance(config, dict):
            return config, str(cand)
    return None, None


def _arguments(obj: dict[str, Any], path: str, line: int) -> tuple[tuple[str, Any], ...]:
    """``arguments`` as lm-eval logs them: ``{"gen_args_i": {"arg_0": ..., "arg_1": ...}}`` or a list."""
    args = obj.get("arguments")
    if isinstance(args, dict):
        args = [args[k] for k in sorted(args, key=lambda k: int(re.sub(r"\D", "", k) or 0))]
    if not isinstance(args, list):
        return ()
    out: list[tuple[Any, Any]] = []
    for a in args:
        if isinstance(a, dict):
            out.append((a.get("arg_0"), a.get("arg_1")))
        elif isinstance(a, list) and a:
            out.append((a[0], a[1] if len(a) > 1 else None))
    for context, _ in out:
        if not isinstance(context, str):
            raise InputError(
                f"arg_0 must be a string (the context lm-eval sent), found {type_name(context)}",
                path=path,
                line=line,
                field="arguments",
            )
    return tuple(out)


def _metric_values(obj: dict[str, Any], filt: str) -> dict[tuple[str, str], float]:
    names = obj.get("metrics")
    out = {}
    if isinstance(names, list):
        for name in names:
            value = obj.get(name)
            if isinstance(value, (int, float)):  # bools too: IFEval-style pass/fail scores
                out[(str(name), filt)] = float(value)
    return out


def _doc_row(obj: dict[str, Any], path: str, line: int) -> LmEvalDoc:
    doc_id = obj.get("doc_id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, int):
        raise InputError(
            f"must be an integer, found {type_name(doc_id)}", path=path, line=line, field="doc_id"
        )
    doc_hash = obj.get("doc_hash")
    if doc_hash is not None and not isinstance(doc_hash, str):
        raise InputError(
            f"must be a string, found {type_name(doc_hash)}", path=path, line=line, field="doc_hash"
        )
    doc = obj.get("doc")
    if doc_hash is not None and doc is not None and lm_doc_hash(doc) != doc_hash:
        raise InputError(
            "doc_hash does not match the logged doc: the file was edited after lm-eval wrote it",
            path=path,
            line=line,
            field="doc_hash",
        )
    if obj.get("resps") is None and obj.get("filtered_resps") is None:
        raise InputError("holds no responses (resps)", path=path, line=line, field="resps")
    return LmEvalDoc(
        line=line,
        doc_id=doc_id,
        doc=doc,
        doc_hash=doc_hash,
        target=obj.get("target"),
        arguments=_arguments(obj, path, line),
        resps=obj.get("resps") if obj.get("resps") is not None else obj.get("filtered_resps"),
        metrics=_metric_values(obj, str(obj.get("filter", "none"))),
    )


def _is_loglikelihood_pair(value: Any) -> bool:
    """``[ll, is_greedy]`` as lm-eval logs a loglikelihood response (numbers or their strings)."""
    return isinstance(value, list) and len(value) == 2 and _as_float(value[0]) is not None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _infer_output_type(doc: LmEvalDoc) -> str:
    resps = doc.resps
    if (
        isinstance(resps, list)
        and resps
        and all(isinstance(r, list) and r and _is_loglikelihood_pair(r[0]) for r in resps)
    ):
        return "multiple_choice" if len(resps) > 1 else "loglikelihood"
    return "generate_until"


def read_samples_file(path: str | Path) -> SamplesFile:
    """Read a samples file: one :class:`LmEvalDoc` per ``doc_id``, every filter's metrics collected.

    Errors (``InputError`` naming file, line, field): native rows mixed in, a doc_id logged twice
    under one filter, a ``doc_hash`` that does not match its logged ``doc``, bad types.
    """
    spath, p = str(path), Path(path)
    match = _TIMESTAMP.match(p.name)
    task = match.group("task") if match else None
    by_id: dict[int, LmEvalDoc] = {}
    seen: dict[tuple[int, str], int] = {}
    filters: dict[str, None] = {}
    for line, obj in iter_jsonl(path):
        if not is_lm_eval_record(obj):
            raise InputError(
                "mixes lm-eval and native records; use one format per file", path=spath, line=line
            )
        row = _doc_row(obj, spath, line)
        filt = str(obj.get("filter", "none"))
        filters.setdefault(filt, None)
        if (row.doc_id, filt) in seen:
            other = by_id.get(row.doc_id)
            again = (
                "another document under the same doc_id: samples of several tasks or runs concatenated? "
                "give one task's samples file"
                if other is not None and (other.doc_hash, other.doc) != (row.doc_hash, row.doc)
                else f"duplicate output for doc_id {row.doc_id} under filter {filt!r}"
            )
            raise InputError(
                f"{again} (doc_id {row.doc_id} first on line {seen[(row.doc_id, filt)]})",
                path=spath,
                line=line,
                field="doc_id",
            )
        seen[(row.doc_id, filt)] = line
        first = by_id.get(row.doc_id)
        if first is None:
            by_id[row.doc_id] = row
        else:
            first.metrics.update(row.metrics)
    if not by_id:
        raise InputError("no outputs: the file is empty", path=spath)
    config, results_path = _results_config(p, task)
    docs = tuple(by_id.values())
    output_type = (config or {}).get("output_type") or _infer_output_type(docs[0])
    return SamplesFile(spath, task, config, results_path, str(output_type), tuple(filters), docs)


# ---- task families ------------------------------------------------------------------------------


def verifier_available(name: str) -> bool:
    """Whether the installed distill-doctor has the verifier ``name`` (e.g. ``math``)."""
    from distill_doctor.data import items

    return name in getattr(items, "_PLAIN_VERIFIERS", ())


def render_doc_to_text(config: dict[str, Any] | None, doc: Any) -> str | None:
    """The task's ``doc_to_text`` for ``doc`` (a Jinja template or a column name); None if unknown."""
    template = (config or {}).get("doc_to_text")
    if not isinstance(template, str) or not isinstance(doc, dict):
        return None
    if template in doc and isinstance(doc[template], str):
        return doc[template]
    if "{{" not in template and "{%" not in template:
        return None
    compiled = _compiled(template)
    if compiled is None:
        return None
    try:
        return compiled.render(**doc)
    except Exception:  # a field the template needs is missing, or a filter fails on it
        return None


@functools.lru_cache(maxsize=64)
def _compiled(template: str) -> Any:
    """The Jinja template, compiled once per task (None when it does not compile here, e.g. it
    uses lm-eval's own filters or is a function's source)."""
    try:
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        return env.from_string(template)
    except Exception:
        return None


def _prompt(sf: SamplesFile, d: LmEvalDoc) -> str:
    """What the model was asked about this doc: the rendered ``doc_to_text`` when the context holds it
    (few-shot examples and chat wrapping left out), else the whole context lm-eval sent."""
    context = d.arguments[0][0] if d.arguments else None
    rendered = render_doc_to_text(sf.config, d.doc)
    if rendered and (context is None or normalize_text(rendered) in normalize_text(context)):
        return rendered
    if context is None:
        raise InputError(
            "logs no arguments: the prompt is unknown", path=sf.path, line=d.line, field="arguments"
        )
    return context


def _texts(resps: Any) -> list[str]:
    """The generated texts of the first request (several with ``repeats``)."""
    if isinstance(resps, list) and resps:
        first = resps[0]
        if isinstance(first, str):
            return [first]
        if isinstance(first, list) and first and all(isinstance(s, str) for s in first):
            return list(first)
    return []


def _tags(doc: Any) -> dict[str, str | int | float]:
    tags: dict[str, str | int | float] = {}
    if not isinstance(doc, dict):
        return tags
    level = doc.get("level")
    if isinstance(level, str) and (m := re.fullmatch(r"\s*Level\s+(\d+)\s*", level)):
        tags["difficulty"] = int(m.group(1))
    for key in ("type", "subject"):
        if isinstance(doc.get(key), str) and doc[key]:
            tags[key] = doc[key]
    return tags


def _gold_index(sf: SamplesFile, d: LmEvalDoc, choices: list[str]) -> int:
    target = d.target
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if isinstance(target, str) and target in choices:
        target = choices.index(target)
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < len(choices):
        raise InputError(
            f"a multiple-choice target must be one choice's index (0..{len(choices) - 1}), found {d.target!r}",
            path=sf.path,
            line=d.line,
            field="target",
        )
    return target


def _choices(sf: SamplesFile, d: LmEvalDoc) -> list[str]:
    delimiter = (sf.config or {}).get("target_delimiter", " ")
    delimiter = delimiter if isinstance(delimiter, str) else " "
    choices = []
    for _, continuation in d.arguments:
        if not isinstance(continuation, str):
            raise InputError(
                "a multiple-choice request must continue the context with a choice (arg_1 a string)",
                path=sf.path,
                line=d.line,
                field="arguments",
            )
        choices.append(continuation[len(delimiter) :] if continuation.startswith(delimiter) else continuation)
    return choices


def mc_prediction(logliks: list[float], choices: list[str], rule: str) -> int:
    """lm-eval's multiple-choice prediction: argmax of the loglikelihoods (``acc``) or of the
    loglikelihoods divided by each choice's length in characters (``acc_norm``); first on ties."""
    scores = logliks if rule == "acc" else [ll / max(len(c), 1) for ll, c in zip(logliks, choices)]
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def _check_mc_scoring(sf: SamplesFile, d: LmEvalDoc) -> None:
    """Refuse a multiple-choice task that lm-eval does not score as "the gold choice has the highest
    loglikelihood": a logged ``acc``/``acc_norm`` other than 0 or 1 (truthfulqa_mc2's probability
    mass on several true answers), or the task's own ``process_results`` with no 0/1 score logged to
    check the reading against (``--predict_only``)."""
    task = sf.task or "this task"
    for (name, _), value in d.metrics.items():
        if name in MC_RULES and value not in (0.0, 1.0):
            raise InputError(
                f"{task}: lm-eval logged {name} = {value:.4g}, not 0 or 1: the task scores its choices its "
                "own way (e.g. truthfulqa_mc2's probability mass on several true answers), which reading "
                "one gold choice cannot reproduce; not supported",
                path=sf.path,
                line=d.line,
                field=name,
            )
    # A task's own process_results is logged as its source; --predict_only replaces every task's
    # with the bare name "process_results" (and logs no metric), so the task name is the last clue.
    source = (sf.config or {}).get("process_results")
    custom = (isinstance(source, str) and source.lstrip().startswith("def ")) or bool(
        re.search(r"(?:^|_)mc2(?:$|_)", sf.task or "")
    )
    if custom and not any(name in MC_RULES for name, _ in d.metrics):
        raise InputError(
            f"{task}: the task scores its choices its own way (process_results; truthfulqa_mc2's probability "
            "mass) and this row logs no acc to check a one-gold-choice reading against (--predict_only?); "
            "not supported",
            path=sf.path,
            line=d.line,
            field="acc",
        )


def _mc_logliks(sf: SamplesFile, d: LmEvalDoc) -> tuple[list[str], list[float]]:
    """The choices and their loglikelihoods of one multiple-choice document."""
    _check_mc_scoring(sf, d)
    choices = _choices(sf, d)
    if len(set(choices)) == 1 and len({c for c, _ in d.arguments}) > 1:
        raise InputError(
            f"{sf.task or 'this task'}: a multiple-input task (one continuation after several contexts, "
            "e.g. winogrande) is not "
            "supported yet",
            path=sf.path,
            line=d.line,
            field="arguments",
        )
    if not 2 <= len(choices) <= len(LETTERS) or not isinstance(d.resps, list) or len(d.resps) != len(choices):
        raise InputError(
            f"a multiple-choice document needs one loglikelihood per choice (2..26), found {len(choices)} "
            f"choices and {len(d.resps) if isinstance(d.resps, list) else 0} responses",
            path=sf.path,
            line=d.line,
            field="resps",
        )
    logliks = []
    for i, r in enumerate(d.resps):
        pair = r[0] if isinstance(r, list) and r and isinstance(r[0], list) else r
        ll = _as_float(pair[0]) if isinstance(pair, list) and pair else None
        if ll is None:
            raise InputError(
                "must be [loglikelihood, is_greedy]", path=sf.path, line=d.line, field=f"resps[{i}]"
            )
        logliks.append(ll)
    return choices, logliks


def _read_mc(sf: SamplesFile, d: LmEvalDoc, rule: str) -> Reading:
    choices, logliks = _mc_logliks(sf, d)
    gold = _gold_index(sf, d, choices)
    pick = mc_prediction(logliks, choices, rule)
    return Reading(
        prompt=_prompt(sf, d),
        reference=LETTERS[gold],
        verifier="choice",
        family="multiple_choice",
        output=f"Answer: {LETTERS[pick]}",
        tags=_tags(d.doc),
        choices=tuple(choices),
    )


def read_output(
    sf: SamplesFile, d: LmEvalDoc, *, mc_rule: str = "acc"
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Only the model's side of a document, ``(output, samples, choices)``: what joining to an items
    file needs (the item brings prompt, reference and verifier). Multiple choice: ``"Answer: <letter>"``."""
    if sf.output_type == "multiple_choice":
        choices, logliks = _mc_logliks(sf, d)
        return f"Answer: {LETTERS[mc_prediction(logliks, choices, mc_rule)]}", (), tuple(choices)
    _no_loglikelihood(sf, d)
    texts = _texts(d.resps)
    if not texts:
        raise InputError("holds no generated text", path=sf.path, line=d.line, field="resps")
    texts = [_continued_block(sf, d, t) for t in texts]
    if isinstance(d.doc, dict) and "test_list" in d.doc:  # mbpp: a whole program (see _read_mbpp)
        texts = [_fenced(t) for t in texts]
    return texts[0], tuple(texts) if len(texts) > 1 else (), ()


def _no_loglikelihood(sf: SamplesFile, d: LmEvalDoc) -> None:
    if sf.output_type in ("loglikelihood", "loglikelihood_rolling"):
        raise InputError(
            f"{sf.task or 'this task'}: a {sf.output_type} task has no answer to score (perplexity-style); "
            "log a generate_until "
            "or multiple_choice task",
            path=sf.path,
            line=d.line,
            field="resps",
        )


def _number_or_text(reference: str) -> str:
    return "numeric" if parse_number(reference) is not None else "exact"


def _target_list(target: Any) -> list[Any] | None:
    """The acceptable answers when lm-eval logged several: a JSON list, or the ``str()`` of the
    Python list a task's ``doc_to_target`` rendered (triviaqa's aliases, nq_open's answers)."""
    if isinstance(target, list):
        return target
    if isinstance(target, str) and target.strip().startswith("[") and target.strip().endswith("]"):
        import ast

        try:
            value = ast.literal_eval(target.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
        return value if isinstance(value, list) else None
    return None


def _single_target(sf: SamplesFile, d: LmEvalDoc) -> str:
    """The document's one reference text; a target listing several acceptable answers is refused
    (lm-eval counts a match with any of them; one reference would score the others wrong)."""
    aliases = _target_list(d.target)
    if aliases is None:
        return str(d.target) if d.target is not None else ""
    if len(aliases) == 1:
        return str(aliases[0])
    shown = ", ".join(repr(str(a))[:40] for a in aliases[:3])
    raise InputError(
        f"{sf.task or 'this task'}: the target lists {len(aliases)} acceptable answers ({shown}"
        f"{', ...' if len(aliases) > 3 else ''}); lm-eval counts a match with any of them and distill-doctor "
        "scores one reference: not supported",
        path=sf.path,
        line=d.line,
        field="target",
    )


def _continued_block(sf: SamplesFile, d: LmEvalDoc, text: str) -> str:
    """A code completion that continues a code block lm-eval opened: humaneval_instruct's and
    mbpp_instruct's ``gen_prefix`` end inside a ```python block, so the model writes the code,
    closes the fence and may add prose. Like lm-eval's ``build_predictions_instruct``, the completion
    is the text before that closing fence. Recognised by the logged ``gen_prefix`` (an odd number of
    fences), or, with no config, by a response whose first line is code (indented; for mbpp also a
    ``def``/``import``) and whose fences are odd in number. Other outputs are returned unchanged."""
    doc = d.doc if isinstance(d.doc, dict) else {}
    code = (
        isinstance(doc.get("test"), str) and isinstance(doc.get("entry_point"), str)
    ) or "test_list" in doc
    if not code or "```" not in text:
        return text
    prefix = (sf.config or {}).get("gen_prefix")
    opened = isinstance(prefix, str) and prefix.count("```") % 2 == 1
    if sf.config is None:
        first = next((line for line in text.splitlines() if line.strip()), "")
        indented = first[:1] in (" ", "\t") or (
            "test_list" in doc and first.startswith(("def ", "import ", "from "))
        )
        opened = text.count("```") % 2 == 1 and indented
    return text[: text.index("```")] if opened else text


def _read_generated(sf: SamplesFile, d: LmEvalDoc) -> Reading:
    texts = _texts(d.resps)
    if not texts:
        raise InputError("holds no generated text", path=sf.path, line=d.line, field="resps")
    doc = d.doc if isinstance(d.doc, dict) else {}
    texts = [_continued_block(sf, d, t) for t in texts]
    common: dict[str, Any] = {
        "output": texts[0],
        "samples": tuple(texts) if len(texts) > 1 else (),
        "tags": _tags(doc),
    }
    task = sf.task or ""
    if isinstance(doc.get("test"), str) and isinstance(doc.get("entry_point"), str):
        return Reading(
            prompt=str(doc.get("prompt", _prompt(sf, d))),
            reference=None,
            verifier="code",
            family="code",
            tests=doc["test"],
            entry_point=doc["entry_point"],
            **common,
        )
    if "test_list" in doc:
        return _read_mbpp(sf, d, doc, common)
    target = _single_target(sf, d)
    is_math = task.startswith(("hendrycks_math", "minerva_math")) or "\\boxed" in str(doc.get("solution", ""))
    if is_math:
        reference = target.strip() or None
        if reference is None:
            raise InputError(
                "a math document logs no target answer", path=sf.path, line=d.line, field="target"
            )
        verifier = "math" if verifier_available("math") else _number_or_text(reference)
        return Reading(_prompt(sf, d), reference, verifier, "math", **common)
    hashes = _HASHES.search(target)
    if hashes is not None:
        reference = hashes.group(1).replace(",", "").strip()
        return Reading(_prompt(sf, d), reference, _number_or_text(reference), "gsm8k", **common)
    _no_own_scoring(sf, d)
    reference = target.strip()
    if not reference:
        raise InputError(
            "logs an empty target: nothing to score against", path=sf.path, line=d.line, field="target"
        )
    return Reading(_prompt(sf, d), reference, _number_or_text(reference), "generic", **common)


_OWN_SCORING_TASKS = re.compile(r"(?:^|_)ifeval(?:$|_)")  # scored by rules, not a target; by name


def _no_own_scoring(sf: SamplesFile, d: LmEvalDoc) -> None:
    """Refuse a generated task that lm-eval scores with its own ``process_results`` (IFEval's
    instruction checks, DROP's F1, ...): its target is no answer to compare with (IFEval logs 0),
    so reading it as one would give a confident, meaningless accuracy. ``--predict_only`` replaces
    the function by its bare name, so the best-known such task is also recognised by name."""
    source = (sf.config or {}).get("process_results")
    own = isinstance(source, str) and source.lstrip().startswith("def ")
    if own or _OWN_SCORING_TASKS.search(sf.task or ""):
        names = sorted({name for name, _ in d.metrics}) or ["its own metrics"]
        raise InputError(
            f"{sf.task or 'this task'}: lm-eval scores it with the task's own process_results "
            f"({', '.join(names[:4])}), not against a target answer; distill-doctor has no verifier for it: "
            "not supported",
            path=sf.path,
            line=d.line,
            field="target",
        )


_ASSERT_CALL = re.compile(r"^\s*assert\s+(?:not\s+)?\(*\s*(?:set\(|math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(")


def _fenced(text: str) -> str:
    """``text`` as a fenced Python block, unless it holds one already."""
    return text if last_code_block(text) is not None else f"```python\n{text}\n```"


def _read_mbpp(sf: SamplesFile, d: LmEvalDoc, doc: dict[str, Any], common: dict[str, Any]) -> Reading:
    """An mbpp document: the completion is a whole program (the prompt is prose), checked by the
    doc's ``test_list`` asserts after its ``test_setup_code``. The code verifier prepends the prompt
    unless the output's fenced block defines the function, so the completion is handed over as such
    a block (it is one already when the model fenced it)."""
    tests = doc.get("test_list")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise InputError(
            "must be a non-empty list of assert strings", path=sf.path, line=d.line, field="doc.test_list"
        )
    name = _ASSERT_CALL.match(tests[0])
    if name is None:
        raise InputError(
            f"cannot read the function under test from {tests[0][:80]!r}",
            path=sf.path,
            line=d.line,
            field="doc.test_list",
        )
    setup = doc.get("test_setup_code") if isinstance(doc.get("test_setup_code"), str) else ""
    body = "".join(f"    {t.strip()}\n" for t in tests)
    common = dict(
        common, output=_fenced(common["output"]), samples=tuple(_fenced(t) for t in common["samples"])
    )
    return Reading(
        prompt=_prompt(sf, d),
        reference=None,
        verifier="code",
        family="code",
        tests=f"{setup}\n\ndef check(candidate):\n{body}",
        entry_point=name.group(1),
        **common,
    )


def read_doc(sf: SamplesFile, d: LmEvalDoc, *, mc_rule: str = "acc") -> Reading:
    """The item fields and output of one document, by task family (see the module docstring)."""
    if sf.output_type == "multiple_choice":
        return _read_mc(sf, d, mc_rule)
    _no_loglikelihood(sf, d)
    return _read_generated(sf, d)


def doc_item_id(d: LmEvalDoc, ids_unique: bool) -> str:
    """The item id of a document: the dataset's own id (``id`` / ``task_id``) when unique, else doc_id."""
    if ids_unique and isinstance(d.doc, dict):
        for key in ("id", "task_id"):
            if isinstance(d.doc.get(key), (str, int)) and not isinstance(d.doc.get(key), bool):
                return str(d.doc[key])
    return str(d.doc_id)


def dataset_ids_unique(docs: tuple[LmEvalDoc, ...]) -> bool:
    """Whether every doc carries its own unique ``id`` / ``task_id`` (then those name the items)."""
    ids = []
    for d in docs:
        doc = d.doc if isinstance(d.doc, dict) else {}
        value = doc.get("id", doc.get("task_id"))
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            return False
        ids.append(str(value))
    return len(set(ids)) == len(ids)


def logged_metric_names(sf: SamplesFile, mc_rule: str) -> list[tuple[str, str]]:
    """The (metric, filter) pairs of lm-eval's own per-sample scores that judge the same thing as
    the verifier: for multiple choice, the rule's own metric (``acc`` or ``acc_norm``)."""
    pairs: dict[tuple[str, str], None] = {}
    for d in sf.docs:
        for key in d.metrics:
            pairs.setdefault(key, None)
    if sf.output_type == "multiple_choice":
        return [k for k in pairs if k[0] == mc_rule]
    return list(pairs)

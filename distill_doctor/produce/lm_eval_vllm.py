"""``eval --engine vllm``: the items through lm-evaluation-harness's own ``vllm`` backend, in ``.venv-vllm``.

vLLM's CPU wheel pins an older transformers than distill-doctor, so lm-eval cannot load its
vllm backend in this process. Instead the standalone task (:func:`lm_eval_task.build_task_config`:
the same docs, greedy ``generation_kwargs``, stop strings and ``max_gen_toks`` as the HF path)
is written as YAML into a work folder, and ``lm_eval run --model vllm`` runs in the engine's
environment as a subprocess with ``--include_path`` and ``--log_samples``. Its samples file is
then read with :func:`~distill_doctor.data.lm_eval_logs.read_samples_file` (doc hashes,
duplicate rows) and joined to the items by :func:`lm_eval_runner.join_samples`, exactly as the
in-process HF path joins its records, so ``outputs.jsonl`` has the same format on both engines.

The generation budget is computed here, before the engine starts, from the tokenizer and config
alone, as lm-eval's backends do (``tokenizer.encode(prompt)`` with the tokenizer's own special
tokens; the maximum length from :func:`lm_eval.models.utils.resolve_max_length`), and the engine's
``max_model_len`` is the longest prompt plus that budget. lm-eval would silently left-truncate a
prompt that does not fit; its warning in the log is therefore an error here. The one setting the
vllm task adds is ``skip_special_tokens: true``: lm-eval's vllm backend otherwise keeps generated
special tokens in the text, which its HF backend drops.

Everything the subprocess prints goes to a log file beside the outputs; a failure is one
:class:`~distill_doctor.train.vllm_client.EngineError` line naming what failed and that log.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from distill_doctor.data.records import Item
from distill_doctor.errors import InputError
from distill_doctor.produce.lm_eval_runner import EvalRun, fit_max_gen_toks, join_samples, to_jsonable
from distill_doctor.produce.lm_eval_task import (
    build_task_config,
    set_offline_env,
    task_name_for,
    write_docs,
    write_task_yaml,
)
from distill_doctor.produce.quiet import quiet_output
from distill_doctor.produce.vllm_sampler import engine_dtype as checkpoint_dtype
from distill_doctor.train.vllm_client import EngineError, engine_python, unavailable_reason

# lm-eval's warning when a context plus max_gen_toks does not fit (lm_eval.models.utils.maybe_truncate).
TRUNCATION_WARNING = "exceeds model's max length"
_ERROR_LINE = re.compile(r"^\s*[\w.]*(Error|Exception|Interrupt)\b.*")
# lm-eval's vllm backend decodes with skip_special_tokens=False unless the task says otherwise, while
# its HF backend (the reference) skips them: a generated <bos> or <pad> would be text on one engine
# and nothing on the other (found on a random model; tests/test_eval_vllm.py).
VLLM_DECODING = {"skip_special_tokens": True}
DEFAULT_MAX_LENGTH = 2048  # lm-eval's own default when neither config nor tokenizer names one


@dataclass(frozen=True)
class LmEvalCommand:
    """One ``lm_eval run`` over a task folder: everything that shapes the command line."""

    python: Path  # the interpreter of .venv-vllm
    model_dir: Path
    task: str
    include_path: Path  # the folder with <task>.yaml and its docs
    output_path: Path  # lm-eval writes results_*.json and samples_<task>_*.jsonl below it
    dtype: str  # an explicit dtype: vLLM's "auto" would downcast a float32 checkpoint
    seed: int
    max_model_len: int
    batch_size: int
    enforce_eager: bool  # CPU: no graph compilation at start-up
    backend: str = "vllm"  # lm-eval's model name; "hf" runs the same command on lm-eval's HFLM

    def model_args(self) -> dict[str, Any]:
        """``--model_args`` (JSON on the command line: a path may hold commas)."""
        args: dict[str, Any] = {
            "pretrained": str(self.model_dir.resolve()),
            "dtype": self.dtype,
        }
        if self.backend == "vllm":
            args.update(seed=self.seed, max_model_len=self.max_model_len)
            if self.enforce_eager:
                args["enforce_eager"] = True
        else:
            args["max_length"] = self.max_model_len
        return args

    def argv(self) -> list[str]:
        return [
            str(self.python), "-m", "lm_eval", "run",
            "--model", self.backend,
            "--model_args", json.dumps(self.model_args()),
            "--tasks", self.task,
            "--include_path", str(self.include_path.resolve()),
            "--batch_size", str(self.batch_size),
            "--seed", str(self.seed),
            "--log_samples",
            "--output_path", str(self.output_path.resolve()),
        ]  # fmt: skip


def engine_environment() -> dict[str, str]:
    """The child's environment: offline, no PYTHONPATH (this venv's packages must not leak into the
    engine's), a 1 GiB CPU KV cache and an in-process engine unless the user set otherwise."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    set_offline_env(env)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return env


# Run by the engine's python: the versions lm-eval's vllm backend needs (it reads version("vllm")).
_PROBE = """
import importlib.metadata as m, json
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print(json.dumps({"lm_eval": version("lm_eval"), "vllm": version("vllm")}))
"""


def lm_eval_version_problem(found: dict[str, str | None], wanted: str, python: Path) -> str | None:
    """Why the engine's lm-eval cannot be used (None when it can): missing, not the version this venv
    runs (the task and samples-file code must be the same on both engines), or no ``vllm`` metadata."""
    setup = "run `bash scripts/setup_vllm.sh`"
    lm_eval = found.get("lm_eval")
    if not lm_eval:
        return f"lm-eval is not installed in the engine's environment ({python}): {setup}"
    if lm_eval != wanted:
        return f"lm-eval {lm_eval} in the engine's environment ({python}) but {wanted} here: {setup}"
    if not found.get("vllm"):
        return (
            f"lm-eval's vllm backend finds no 'vllm' distribution in {python} "
            f"(vllm-cpu needs the alias that scripts/setup_vllm.sh writes): {setup}"
        )
    return None


def check_engine(python: Path | None = None) -> Path:
    """The engine's interpreter, once vLLM is set up and holds this venv's lm-eval; else EngineError."""
    reason = unavailable_reason()
    if reason:
        raise EngineError(reason)
    python = python or engine_python()
    try:
        done = subprocess.run(
            [str(python), "-c", _PROBE], capture_output=True, text=True, env=engine_environment(), timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EngineError(f"cannot run the engine's python {python}: {err}") from None
    try:
        found = json.loads(done.stdout) if done.returncode == 0 else {}
    except ValueError:
        found = {}
    problem = lm_eval_version_problem(found, metadata.version("lm_eval"), python)
    if problem:
        raise EngineError(problem)
    return python


class _PromptTokens:
    """What :func:`fit_max_gen_toks` needs (``tok_encode``, ``max_length``) from the tokenizer and
    config alone, computed as lm-eval's HF and vllm backends compute them: no model is loaded here."""

    def __init__(self, model_dir: Path) -> None:
        from lm_eval.models.utils import has_bos_prefix, resolve_max_length
        from transformers import AutoConfig, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            self.config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as err:
            raise InputError(
                f"cannot load the tokenizer or config: {' '.join(str(err).split())}", path=model_dir
            ) from None
        self.max_length = resolve_max_length(self.config, self.tokenizer, default=DEFAULT_MAX_LENGTH)
        bos = self.tokenizer.bos_token_id
        self._bos = self.tokenizer.decode(bos) if bos is not None else None
        self._has_bos = has_bos_prefix

    def tok_encode(self, text: str) -> list[int]:
        """A prompt that already starts with the BOS text gets no second one (lm-eval's rule)."""
        if self._has_bos(text, self._bos):
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return list(self.tokenizer.encode(text))


def engine_dtype(requested: str, config) -> str:
    """``--dtype`` for the engine: ``auto`` becomes the checkpoint's own dtype (float32 when unnamed),
    which is what HF loads; vLLM's ``auto`` would run a float32 checkpoint in half precision."""
    return checkpoint_dtype(config) if requested == "auto" else requested


def log_path_for(out: Path) -> Path:
    """Where the subprocess's output goes: ``<outputs stem>_lm_eval.log`` beside the outputs."""
    return out.with_name(f"{out.stem}_lm_eval.log")


def last_error_line(log: Path) -> str | None:
    """The last ``SomethingError: ...`` line of the log (a traceback's conclusion), trimmed."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            text = " ".join(line.split())
            return text if len(text) <= 300 else text[:297] + "..."
    return None


def run_items_vllm(
    model_dir: Path,
    items: list[Item],
    *,
    items_path: Path,
    log_path: Path,
    max_gen_toks: int,
    until: list[str] | None,
    dtype: str,
    seed: int,
    batch_size: int,
    enforce_eager: bool,
    keep_samples_in: Path | None = None,
    quiet: bool = False,
    backend: str = "vllm",
    python: Path | None = None,
) -> EvalRun:
    """Run ``items`` through ``lm_eval run --model vllm`` in ``.venv-vllm``; outputs joined to the items.

    ``keep_samples_in``: copy lm-eval's own samples and results files there. ``backend="hf"`` runs
    the same subprocess on lm-eval's HFLM (with ``python`` that venv's interpreter): the same task,
    command line and reading, without vLLM. Raises EngineError (the engine or lm-eval failed; the
    message names ``log_path``) or InputError (the items or model cannot be used).
    """
    if not items:
        raise InputError("no items to evaluate", path=items_path)
    if not (model_dir / "config.json").is_file():
        raise InputError("not a model directory (no config.json)", path=model_dir)
    python = python if backend != "vllm" else check_engine(python)
    assert python is not None
    set_offline_env()
    budget = _PromptTokens(model_dir)
    gen_toks = fit_max_gen_toks(budget, items, max_gen_toks)
    longest = max(len(budget.tok_encode(it.prompt)) for it in items)
    name = task_name_for(items_path)
    with tempfile.TemporaryDirectory(prefix="dd-lm-eval-vllm-") as tmp:
        work = Path(tmp)
        task_dir, results_dir = work / "task", work / "results"
        task_dir.mkdir()
        cache = work / "hf_datasets_cache"
        with quiet_output(quiet):  # the datasets loader's progress bars (the round-trip check)
            docs_mode = write_docs(items, task_dir / f"{name}.jsonl", items_path=items_path, cache_dir=cache)
        config = build_task_config(
            task_dir / f"{name}.jsonl", task_name=name, max_gen_toks=gen_toks, until=until
        )
        if backend == "vllm":  # (HF's generate refuses the key as an unused model kwarg)
            config["generation_kwargs"].update(VLLM_DECODING)
        run_config = json.loads(json.dumps(config))
        run_config["dataset_kwargs"]["cache_dir"] = str(cache)  # the datasets cache stays in the work folder
        write_task_yaml(run_config, task_dir / f"{name}.yaml")
        command = LmEvalCommand(
            python=python,
            model_dir=model_dir,
            task=name,
            include_path=task_dir,
            output_path=results_dir,
            dtype=engine_dtype(dtype, budget.config),
            seed=seed,
            max_model_len=longest + gen_toks,
            batch_size=batch_size,
            enforce_eager=enforce_eager,
            backend=backend,
        )
        seconds = _run_logged(command, log_path, cwd=work)
        samples_file, results_file = _written_files(results_dir, name, log_path)
        samples = _read_samples(samples_file, items)
        metrics = _read_metrics(results_file, name)
        if keep_samples_in is not None:
            keep_samples_in.mkdir(parents=True, exist_ok=True)
            for path in (samples_file, results_file):
                if path is not None:
                    shutil.copy2(path, keep_samples_in / path.name)
    outputs = join_samples(samples, items, source=samples_file.name)
    return EvalRun(name, outputs, samples, metrics, gen_toks, seconds, config, docs_mode)


def _run_logged(command: LmEvalCommand, log_path: Path, *, cwd: Path) -> float:
    """Run the command with stdout and stderr into ``log_path``; EngineError naming the log on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(command.argv()) + "\n")  # to rerun by hand in .venv-vllm
        log.flush()
        try:
            code = subprocess.run(
                command.argv(), stdout=log, stderr=subprocess.STDOUT, env=engine_environment(), cwd=cwd
            ).returncode
        except OSError as err:
            raise EngineError(f"cannot start lm-eval with {command.python}: {err}; log: {log_path}") from None
    seconds = time.perf_counter() - start
    if code != 0:
        why = last_error_line(log_path)
        raise EngineError(
            f"lm-eval ({command.backend} backend) exited with code {code} on {command.model_dir}"
            + (f": {why}" if why else "")
            + f"; log: {log_path}"
        )
    if TRUNCATION_WARNING in log_path.read_text(encoding="utf-8", errors="replace"):
        raise EngineError(
            f"lm-eval truncated a prompt to fit the engine's max_model_len {command.max_model_len} "
            f"(the engine's tokenizer counts more tokens than this one); log: {log_path}"
        )
    return seconds


def _written_files(results_dir: Path, task: str, log_path: Path) -> tuple[Path, Path | None]:
    """The samples file lm-eval wrote for ``task`` (exactly one) and the results file of the run."""
    found = sorted(results_dir.rglob(f"samples_{task}_*.jsonl"))
    if len(found) != 1:
        raise EngineError(
            f"lm-eval exited 0 but wrote {len(found)} samples files for task {task}; log: {log_path}"
        )
    stamp = found[0].name.removeprefix(f"samples_{task}_").removesuffix(".jsonl")
    results = found[0].with_name(f"results_{stamp}.json")
    return found[0], results if results.is_file() else None


def _read_samples(path: Path, items: list[Item]) -> list[dict[str, Any]]:
    """The samples file's rows in doc_id order, after the reader's checks (hashes, duplicates), one per item."""
    from distill_doctor.data.jsonl import iter_jsonl
    from distill_doctor.data.lm_eval_logs import read_samples_file

    docs = read_samples_file(path).docs
    if sorted(d.doc_id for d in docs) != list(range(len(items))):
        raise InputError(f"lm-eval logged {len(docs)} documents for {len(items)} items", path=path)
    return sorted((to_jsonable(obj) for _, obj in iter_jsonl(path)), key=lambda s: s["doc_id"])


def _read_metrics(results: Path | None, task: str) -> dict[str, Any]:
    if results is None:
        return {}
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return to_jsonable((data.get("results") or {}).get(task, {}))

"""``distill-doctor eval`` wall time: lm-eval's HF backend (in process) vs its vllm backend (.venv-vllm).

    .venv/bin/python bench/bench_eval_engines.py [--items fixtures/organisms/items.jsonl]
        [--model fixtures/organisms/models/teacher | --random-model] [--max-new-tokens 32]
        [--batch-sizes 8,64] [--repeats 2]

``--random-model``: instead of the organism teacher (0.66 M parameters, where start-up dominates),
a random Llama on the organism's tokenizer sized like the on-policy bench's student (hidden 512,
6 layers, 8 heads of 64: 15.8 M parameters), which never stops early, so every item generates
``--max-new-tokens`` tokens. Each model's results are kept under its own key.

Each run is the whole CLI command as a user runs it (a fresh process: imports, model or engine
start-up, generation, writing outputs.jsonl), greedy, on the same items. The runs are repeated
``--repeats`` times, interleaved (hf, vllm, hf, ...), so a change in the shared machine's load hits
both engines alike; the table gives the median and range. Every run's outputs are compared with the
first HF run's, byte for byte. Results: ``bench/results/eval_engines.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distill_doctor.atomic import atomic_write_text
from distill_doctor.train.vllm_client import OK_MARK, VENV_NAME, repo_root, unavailable_reason

ROOT = Path(__file__).resolve().parents[1]


def run_once(engine: str, batch: int, args: argparse.Namespace, out: Path) -> float:
    """One ``eval`` command; its wall time in seconds."""
    command = [
        sys.executable, "-m", "distill_doctor", "eval",
        "--items", str(args.items),
        "--model", str(args.model),
        "--out", str(out),
        "--engine", engine,
        "--batch-size", str(batch),
        "--max-new-tokens", str(args.max_new_tokens),
        "--overwrite", "--quiet",
        *(["--limit", str(args.limit)] if args.limit else []),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def markdown(result: dict) -> str:
    rows = [
        f"# `distill-doctor eval`, HF backend vs vllm backend (CPU): {result['model']}",
        "",
        f"Model `{result['model']}` ({result['parameters']:,} parameters), {result['items']} items "
        f"(`{result['items_file']}`), greedy, up to {result['max_new_tokens']} new tokens. Wall time of "
        "the whole command (a fresh process: imports, model or engine start-up, generation, writing "
        f"the outputs); {result['repeats']} interleaved repeats, median [range].",
        "",
        f"Machine: {result['machine']['cpus']} CPUs shared with other jobs; load average "
        f"{result['load_before']:.1f} before, {result['load_after']:.1f} after. "
        f"{result['machine']['versions']}.",
        "",
        "| engine | batch size | wall s | vs hf at the same batch size | outputs equal to hf's |",
        "|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        rng = f"[{min(r['seconds']):.1f}-{max(r['seconds']):.1f}]"
        rows.append(
            f"| {r['engine']} | {r['batch_size']} | {statistics.median(r['seconds']):.1f} {rng} | "
            f"{r['vs_hf']:.2f}x | {'yes' if r['equal_to_hf'] else 'NO'} |"
        )
    flags = " --random-model" if result["model"].startswith("random") else ""
    flags += f" --max-new-tokens {result['max_new_tokens']} --repeats {result['repeats']}"
    if "the first" in result["items_file"]:
        flags += f" --limit {result['items']}"
    rows += [
        "",
        f"Rerun: `.venv/bin/python bench/bench_eval_engines.py{flags}` (after `bash scripts/setup_vllm.sh`).",
    ]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=Path, default=ROOT / "fixtures" / "organisms" / "items.jsonl")
    parser.add_argument("--model", type=Path, default=ROOT / "fixtures" / "organisms" / "models" / "teacher")
    parser.add_argument("--random-model", action="store_true", help="a random 15.8 M-parameter Llama")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="only the first N items")
    parser.add_argument("--batch-sizes", default="8,64")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if reason := unavailable_reason():
        print(f"bench_eval_engines: {reason}", file=sys.stderr)
        return 2
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    batches = [int(b) for b in args.batch_sizes.split(",")]
    seconds: dict[tuple[str, int], list[float]] = {}
    equal: dict[tuple[str, int], bool] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dd-bench-eval-") as tmp:
        if args.random_model:
            args.model = random_model(Path(tmp) / "random-15m")
        reference: str | None = None
        for _ in range(args.repeats):
            for batch in batches:
                for engine in ("hf", "vllm"):
                    out = Path(tmp) / f"{engine}-{batch}.jsonl"
                    seconds.setdefault((engine, batch), []).append(run_once(engine, batch, args, out))
                    text = out.read_text(encoding="utf-8")
                    reference = text if reference is None else reference
                    equal[(engine, batch)] = equal.get((engine, batch), True) and text == reference
        model = AutoModelForCausalLM.from_pretrained(str(args.model))
        parameters = sum(p.numel() for p in model.parameters())
    runs = []
    for (engine, batch), values in seconds.items():
        hf = seconds[("hf", batch)]
        ratios = [h / v for h, v in zip(hf, values)]  # > 1: faster than hf in the same repeat
        runs.append(
            {
                "engine": engine,
                "batch_size": batch,
                "seconds": values,
                "vs_hf": statistics.median(ratios),
                "equal_to_hf": equal[(engine, batch)],
            }
        )
    engine_mark = repo_root() / VENV_NAME / OK_MARK
    result = {
        "model": "random Llama (hidden 512, 6 layers)" if args.random_model else _relative(args.model),
        "parameters": parameters,
        "items_file": _relative(args.items) + (f", the first {args.limit}" if args.limit else ""),
        "items": args.limit
        or sum(1 for line in args.items.read_text(encoding="utf-8").splitlines() if line.strip()),
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "versions": f"hf: torch {torch.__version__}, transformers {transformers.__version__}; "
            f"vllm: {' '.join(engine_mark.read_text().split())} in {VENV_NAME}",
        },
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "eval_engines.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[result["model"]] = result
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")
    atomic_write_text(args.out / "eval_engines.md", render(results))
    print(markdown(result))
    return 0


def render(results: dict) -> str:
    """The markdown file: one section per model."""
    return "\n".join(markdown(r) for r in results.values())


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def random_model(out: Path) -> Path:
    """A random Llama on the organism's tokenizer, hidden 512, 6 layers (the on-policy bench's student)."""
    from transformers import PreTrainedTokenizerFast

    from distill_doctor.testing.tiny_model import build_tiny_llama

    tok = PreTrainedTokenizerFast.from_pretrained(str(ROOT / "fixtures" / "organisms" / "models" / "teacher"))
    build_tiny_llama(tok, hidden_size=512, num_layers=6, num_heads=8, seed=0, out_dir=out)
    return out


if __name__ == "__main__":
    raise SystemExit(main())

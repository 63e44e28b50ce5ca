"""On-policy steps per second: HF generate vs vLLM (colocated and server), for gkd and skd, in one run.

    .venv/bin/python bench/bench_onpolicy_engines.py [--steps 5] [--batch-size 8] [--new-tokens 64] [--repeats 2]

Fixed setup: the sort organism's tokenizer and teacher (Llama, hidden 128, 4 layers, head_dim 32),
a random student Llama (hidden 512, 6 layers, 8 heads of 64), the organism's prompts; every step
samples ``--batch-size`` completions of up to ``--new-tokens`` tokens (gkd: lmbda 1, temperature 1;
skd: top_k 5, temperature 1) and trains on them. Same configs for the three engines; the vLLM ones
push the student's weights to the engine after every step (``vllm_sync_every: 1``).

Timed: each step's wall (from the trainer's ``tokens / tokens_per_s``: sampling, teacher, forward,
backward, optimizer) plus the weight push that follows it (``engine_sync_s``), the first step
left out (warm-up); the engine's start-up (model load) is reported apart, since a run pays it once.
The six runs are repeated ``--repeats`` times, interleaved (hf, colocate, server, hf, ...), so a
change in the shared machine's load hits every engine alike; the table gives the median and range.
Results: ``bench/results/onpolicy_engines.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from distill_doctor.atomic import atomic_write_text
from distill_doctor.train.command import run_training
from distill_doctor.train.config import GKDConfig, SKDConfig, TrainConfig
from distill_doctor.train.vllm_client import unavailable_reason

ROOT = Path(__file__).resolve().parents[1]

ORGANISMS = ROOT / "fixtures" / "organisms" / "models"
ENGINES: tuple[tuple[str, dict], ...] = (
    ("hf", {}),
    ("vllm colocate", {"use_vllm": True, "vllm_mode": "colocate"}),
    ("vllm server", {"use_vllm": True, "vllm_mode": "server"}),
)


def build(root: Path, rows: int) -> None:
    from transformers import PreTrainedTokenizerFast

    from distill_doctor.testing.tiny_model import build_tiny_llama

    tok = PreTrainedTokenizerFast.from_pretrained(str(ORGANISMS / "sort_teacher"))
    build_tiny_llama(tok, hidden_size=512, num_layers=6, num_heads=8, seed=0, out_dir=root / "student")
    with (
        gzip.open(ORGANISMS / "sort_teacher_train.jsonl.gz", "rt") as fh,
        open(root / "train.jsonl", "w") as out,
    ):
        for _, line in zip(range(rows), fh):
            row = json.loads(line)
            out.write(
                json.dumps({"id": row["id"], "prompt": row["prompt"], "response": row["response"]}) + "\n"
            )


def one_run(root: Path, method: str, engine: str, extra: dict, args, repeat: int) -> dict:
    out = root / f"{method}-{engine.replace(' ', '-')}-{repeat}"
    cfg = TrainConfig(
        method=method,
        student=str(root / "student"),
        teacher=str(ORGANISMS / "sort_teacher"),
        data=str(root / "train.jsonl"),
        output_dir=str(out),
        steps=args.steps,
        batch_size=args.batch_size,
        max_len=args.new_tokens + 32,
        lr=1e-3,
        quiet=True,
        gkd=GKDConfig(lmbda=1.0, temperature=1.0, max_new_tokens=args.new_tokens),
        skd=SKDConfig(top_k=5, temperature=1.0, max_new_tokens=args.new_tokens),
        **extra,
    )
    start = time.perf_counter()
    run_training(method, cfg)
    wall = time.perf_counter() - start
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    step_s = [m["tokens"] / m["tokens_per_s"] for m in metrics]
    sync_s = [m.get("engine_sync_s", 0.0) for m in metrics[1:]] + [
        0.0
    ]  # a step's push is logged with the next
    if extra:
        sync_s[-1] = statistics.median(sync_s[:-1])  # the last push is not logged: count it as a typical one
    timed = [a + b for a, b in zip(step_s, sync_s)][1:]
    generated = [m["loss_tokens"] for m in metrics][1:]
    row = {
        "method": method,
        "engine": engine,
        "repeat": repeat,
        "steps_timed": len(timed),
        "steps_per_s": len(timed) / sum(timed),
        "step_s_median": statistics.median(timed),
        "sync_s_median": statistics.median(sync_s[1:]) if extra else 0.0,
        "generated_tokens_per_step": statistics.mean(generated),
        "replaced_fraction": statistics.mean(m["replaced_fraction"] for m in metrics)
        if method == "skd"
        else None,
        "run_wall_s": wall,
        "startup_s": max(wall - sum(step_s) - sum(sync_s), 0.0),
    }
    print(
        f"{method:>4} {engine:>14}: {row['steps_per_s']:.3f} steps/s, startup {row['startup_s']:.0f} s",
        file=sys.stderr,
    )
    return row


def summarize(runs: list[dict], method: str, engine: str) -> dict:
    """Median (and range) over the repeats; the ratio to HF is taken repeat by repeat (same load)."""
    mine = [r for r in runs if r["method"] == method and r["engine"] == engine]
    hf = {r["repeat"]: r for r in runs if r["method"] == method and r["engine"] == "hf"}
    ratios = [r["steps_per_s"] / hf[r["repeat"]]["steps_per_s"] for r in mine]
    rate = [r["steps_per_s"] for r in mine]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in mine)

    return {
        "method": method,
        "engine": engine,
        "steps_per_s": statistics.median(rate),
        "steps_per_s_range": [min(rate), max(rate)],
        "step_s_median": med("step_s_median"),
        "sync_s_median": med("sync_s_median"),
        "generated_tokens_per_step": med("generated_tokens_per_step"),
        "replaced_fraction": med("replaced_fraction") if method == "skd" else None,
        "startup_s": med("startup_s"),
        "speedup_vs_hf": statistics.median(ratios),
        "speedup_vs_hf_range": [min(ratios), max(ratios)],
    }


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# On-policy steps per second: HF generate vs vLLM (CPU)",
        "",
        f"Student Llama {result['model']['student_parameters']:,} parameters (hidden 512, 6 layers), teacher the sort "
        f"organism (hidden 128, 4 layers), vocabulary {result['model']['vocab']}; {s['batch_size']} completions of up to "
        f"{s['new_tokens']} tokens per step, temperature 1, weights pushed after every step; {s['steps']} steps, the "
        f"first left out; {s['repeats']} interleaved repeats (median, range in brackets). One run, same machine. "
        f"Trainer: {s['threads']} torch thread; the engine: vLLM's own CPU thread binding.",
        "",
        f"Machine: {result['machine']['cpus']} CPUs shared with other jobs; load average "
        f"{result['machine']['load_before']:.1f} before, {result['machine']['load_after']:.1f} after. "
        f"torch {result['machine']['torch']}, vLLM {result['machine']['vllm']} (CPU wheel, its own environment).",
        "",
        "| method | engine | steps/s | step s (median) | weight push s | tokens/step | vs HF (same repeat) | engine start-up s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['engine']} | {r['steps_per_s']:.3f} [{r['steps_per_s_range'][0]:.3f}-"
            f"{r['steps_per_s_range'][1]:.3f}] | {r['step_s_median']:.2f} | {r['sync_s_median']:.3f} "
            f"| {r['generated_tokens_per_step']:.0f} | {r['speedup_vs_hf']:.2f}x [{r['speedup_vs_hf_range'][0]:.2f}-"
            f"{r['speedup_vs_hf_range'][1]:.2f}] | {r['startup_s']:.0f} |"
        )
    skd = [r for r in result["rows"] if r["method"] == "skd" and r["engine"] != "hf"]
    if skd:
        lines += [
            "",
            f"skd replaced {skd[0]['replaced_fraction']:.0%} of the student's proposals (top_k 5, a random student): "
            "with vLLM every replacement ends a round (one engine call for a draft window, and one teacher "
            "forward over the whole sequence), so the lower the acceptance, the less the engine gains.",
        ]
    lines += [
        "",
        "Rerun: `.venv/bin/python bench/bench_onpolicy_engines.py` (after `bash scripts/setup_vllm.sh`).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the trainer (default 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = parser.parse_args(argv)
    if args.render:
        result = json.loads((args.out / "onpolicy_engines.json").read_text())
        atomic_write_text(args.out / "onpolicy_engines.md", markdown(result))
        return 0
    reason = unavailable_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="dd-bench-engines-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    build(root, rows=max(64, args.batch_size * args.steps))
    runs = [
        one_run(root, method, engine, extra, args, repeat)
        for repeat in range(args.repeats)
        for method in ("gkd", "skd")
        for engine, extra in ENGINES
    ]
    rows = [summarize(runs, method, engine) for method in ("gkd", "skd") for engine, _ in ENGINES]
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(str(root / "student"))
    vllm_version = (ROOT / ".venv-vllm" / ".distill-doctor-ok").read_text().split()[1]
    result = {
        "benchmark": "onpolicy_engines",
        "model": {
            "student_parameters": sum(p.numel() for p in student.parameters()),
            "vocab": student.config.vocab_size,
        },
        "settings": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "new_tokens": args.new_tokens,
            "threads": args.threads,
            "repeats": args.repeats,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "vllm": vllm_version,
        },
        "rows": rows,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "onpolicy_engines.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / "onpolicy_engines.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

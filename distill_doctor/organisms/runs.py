"""Training runs and greedy outputs for the organism build and the research trials.

Each training run is a real ``distill-doctor train`` subprocess on a config written next to its
output (``<out_dir>/../<name>_config.yaml``, paths relative to the run's root), so that every
committed model comes with the exact command that made it; a finished run of the identical
config can be reused. Also: seeded initial models, greedy outputs on items and teacher rows.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from distill_doctor.organisms import build_lib, tasks
from distill_doctor.organisms.generate import generate_texts, load_model
from distill_doctor.testing.tiny_model import build_tiny_llama, count_parameters


def _root(root: Path | None) -> Path:
    """The directory runs start in and config paths are relative to (default: the current one)."""
    return Path.cwd() if root is None else root


def _finished(out_dir: Path, cfg_path: Path, cfg_text: str, steps: int, root: Path) -> bool:
    """Is ``out_dir`` a finished run of exactly this config and initial shape (so ``--reuse`` may skip it)?"""
    import yaml

    metrics = out_dir / "metrics.jsonl"
    if not (out_dir / "model.safetensors").exists() or not metrics.exists() or not cfg_path.exists():
        return False
    lines = metrics.read_text(encoding="utf-8").splitlines()
    if not (
        cfg_path.read_text(encoding="utf-8") == cfg_text and bool(lines) and f'"step": {steps},' in lines[-1]
    ):
        return False
    # the config names the initial model by path only: its shape must match too
    student = root / yaml.safe_load(cfg_text)["student"]
    if not (student / "config.json").exists():  # an intermediate of an earlier build (teacher stage 1)
        return True
    shape = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    old, new = (json.loads((p / "config.json").read_text()) for p in (out_dir, student))
    return all(old.get(k) == new.get(k) for k in shape)


def resolved(cfg: dict, out_dir: Path, root: Path) -> tuple[Path, dict]:
    """Where a run's config is written, and the config as written (paths relative to ``root``)."""
    cfg = {**cfg, "output_dir": str(out_dir), "overwrite": True, "log_every": 1}
    for key in ("student", "teacher", "data", "output_dir"):
        if key in cfg:
            cfg[key] = os.path.relpath(cfg[key], root)
    return out_dir.parent / f"{out_dir.name}_config.yaml", cfg


def reusable(cfg: dict, out_dir: Path, root: Path | None = None) -> bool:
    """Is ``out_dir`` a finished run of exactly ``cfg``?"""
    import yaml

    root = _root(root)
    cfg_path, cfg = resolved(cfg, out_dir, root)
    return _finished(out_dir, cfg_path, yaml.safe_dump(cfg, sort_keys=False), cfg["steps"], root)


def train(
    method: str,
    cfg: dict,
    out_dir: Path,
    *,
    seed: int,
    log: list,
    reuse: bool = False,
    root: Path | None = None,
) -> Path:
    """Run ``distill-doctor train`` on ``cfg`` (written to ``out_dir/../<name>_config.yaml``); return the model dir.

    With ``reuse``, a finished run of the identical config in ``out_dir`` is kept instead of retrained.
    The run's working directory is ``root`` (default: the current one); the config's paths are
    written relative to it.
    """
    import yaml

    root = _root(root)
    cfg_path, cfg = resolved(cfg, out_dir, root)
    rel_cfg = os.path.relpath(cfg_path, root)
    command = [
        sys.executable,
        "-m",
        "distill_doctor",
        "train",
        method,
        "--config",
        rel_cfg,
        "--seed",
        str(seed),
        "--quiet",
    ]
    shown = "distill-doctor train " + " ".join(shlex.quote(a) for a in command[4:])
    if reuse and _finished(out_dir, cfg_path, yaml.safe_dump(cfg, sort_keys=False), cfg["steps"], root):
        log.append(
            {
                "run": str(out_dir.relative_to(out_dir.parents[1])),
                "method": method,
                "reused": True,
                "command": shown,
            }
        )
        print(f"  reused the finished run in {out_dir}", flush=True)
        return out_dir
    build_lib.write_yaml(cfg_path, cfg)
    start = time.perf_counter()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    subprocess.run(command, check=True, cwd=root, env=env)
    seconds = time.perf_counter() - start
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    build_lib.write_text(out_dir.parent / f"{out_dir.name}_command.txt", shown + "\n")
    log.append(
        {
            "run": str(out_dir.relative_to(out_dir.parents[1])),
            "method": method,
            "seconds": round(seconds, 1),
            "command": shown,
        }
    )
    print(f"  trained {out_dir} ({method}) in {seconds:.0f} s", flush=True)
    return out_dir


def two_stage_teacher(
    stage1_cfg: dict,
    stage2_cfg: Callable[[Path], dict],
    out_dir: Path,
    *,
    work: Path,
    seed: int,
    log: list,
    reuse: bool,
    root: Path | None = None,
) -> Path:
    """``sft`` with ``stage1_cfg`` into ``work/<out_dir name>_stage1``, then with ``stage2_cfg(stage1 dir)``
    into ``out_dir``; with ``reuse``, stage 1 (an intermediate) is skipped when stage 2 is kept."""
    stage1 = work / f"{out_dir.name}_stage1"
    if not (reuse and reusable(stage2_cfg(stage1), out_dir, root)):
        train("sft", stage1_cfg, stage1, seed=seed, log=log, reuse=reuse, root=root)
    return train("sft", stage2_cfg(stage1), out_dir, seed=seed, log=log, reuse=reuse, root=root)


def init_model(tokenizer, size: dict, seed: int, out_dir: Path) -> Path:
    model = build_tiny_llama(tokenizer, seed=seed, out_dir=out_dir, **size)
    print(f"  initialised {out_dir.name}: {count_parameters(model):,} parameters", flush=True)
    return out_dir


def outputs_for(model_dir: Path, items: list[dict], max_new_tokens: int = 96) -> list[dict]:
    model, tokenizer = load_model(model_dir)
    texts = generate_texts(model, tokenizer, [it["prompt"] for it in items], max_new_tokens=max_new_tokens)
    return [{"id": it["id"], "output": text} for it, text in zip(items, texts)]


def teacher_rows(model_dir: Path, problems: list, prefix: str, source: str) -> list[dict]:
    """The teacher's greedy responses to ``problems`` as training rows (with the known reference)."""
    model, tokenizer = load_model(model_dir)
    texts = generate_texts(model, tokenizer, [p.prompt for p in problems])
    return [
        {
            "id": f"{prefix}-{i}",
            "prompt": p.prompt,
            "response": text,
            "reference": tasks.solve(p)[1],
            "source": source,
        }
        for i, (p, text) in enumerate(zip(problems, texts))
    ]

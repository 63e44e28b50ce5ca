"""Paired-by-item acceptance differences between trained drafts (bench/results/speculative.md).

Each pair ``NEW:OLD`` names two model folders under ``--workdir``; both are scored along the
arithmetic teacher's outputs on the shared items (as ``diagnose`` does), at temperature 1 and
greedy, and the token-weighted acceptance difference NEW - OLD gets a 95% bootstrap interval over
the common items (the gate's paired test, ``reports/speculative_gate.paired_drop``).

    python bench/speculative_paired.py --workdir /tmp/specwork cap_tv_mix:cap_sft ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from distill_doctor.data import load_items, load_outputs
from distill_doctor.reports.speculative_gate import paired_drop
from distill_doctor.speculative.report import speculative_block

F = Path("fixtures/organisms")


def _columns(per_item: dict, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    n = np.array([per_item[i]["n_tokens"] for i in ids], dtype=float)
    return np.array([per_item[i]["acceptance"] for i in ids]) * n, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/specwork"))
    ap.add_argument("pairs", nargs="+", help="NEW:OLD model folder names under --workdir")
    args = ap.parse_args()
    items = load_items(F / "items.jsonl")
    teacher_out = load_outputs(F / "clean" / "teacher.jsonl", items).outputs
    cache: dict = {}

    def per_item(name: str, temperature: float) -> dict:
        if (name, temperature) not in cache:
            block = speculative_block(
                F / "models" / "teacher",
                args.workdir / name,
                items,
                {},
                teacher_out,
                temperature=temperature,
                draft_cost=0.5,
            )
            cache[(name, temperature)] = block["per_item"]
        return cache[(name, temperature)]

    print("| NEW - OLD | temperature | difference | 95% CI (paired by item) | items |\n|---|---|---|---|---|")
    for pair in args.pairs:
        new, old = pair.split(":")
        for t in (1.0, 0.0):
            a, b = per_item(new, t), per_item(old, t)
            ids = [i for i in a if i in b]
            (ns, nn), (os_, on) = _columns(a, ids), _columns(b, ids)
            diff, upper, _ = paired_drop(ns, nn, os_, on, alpha=0.025)
            lower = -paired_drop(os_, on, ns, nn, alpha=0.025)[1]
            print(
                f"| {new} - {old} | {t:g} | {diff:+.4f} | [{lower:+.4f}, {upper:+.4f}] | {len(ids)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Acceptance of trained drafts under the arithmetic organism teacher, as ``diagnose`` measures it:
along the teacher's outputs on the shared items (fixtures/organisms/clean/teacher.jsonl), at
temperature 1 and greedy, with 95% bootstrap-by-item intervals; and the acceptance observed in
real speculative sampling (temperature 1, gamma 4, ``--sample`` item prompts evenly spread over the items file, bootstrap
by prompt), where the prefixes are the teacher's samples rather than its greedy outputs.

    python bench/speculative_acceptance.py --workdir /tmp/specwork init sft distillspec_tv ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill_doctor.data import load_items, load_outputs
from distill_doctor.speculative.acceptance import load_pair
from distill_doctor.speculative.report import speculative_block
from distill_doctor.speculative.sampler import speculative_sample
from distill_doctor.stats import bootstrap_ci

F = Path("fixtures/organisms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/specwork"))
    ap.add_argument("--sample", type=int, default=128, help="prompts for real speculative sampling")
    ap.add_argument("students", nargs="+", help="model folders under --workdir (or paths with a '/')")
    args = ap.parse_args()
    items = load_items(F / "items.jsonl")
    teacher_out = load_outputs(F / "clean" / "teacher.jsonl", items).outputs
    print(
        "| student | alpha at T=1 [95% CI] | greedy agreement [95% CI] | tokens/call, gamma 4 (i.i.d.) | replay "
        "| observed acceptance in speculative sampling [95% CI] |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.students:
        path = Path(name) if "/" in name else args.workdir / name
        blocks = [
            speculative_block(
                F / "models" / "teacher", path, items, {}, teacher_out, temperature=t, draft_cost=0.5
            )
            for t in (1.0, 0.0)
        ]
        cells = [
            f"{b['acceptance_rate']:.3f} [{b['acceptance_ci'][0]:.3f}, {b['acceptance_ci'][1]:.3f}]"
            for b in blocks
        ]
        b = blocks[0]
        print(
            f"| {name} | {cells[0]} | {cells[1]} | {b['block_efficiency']['4']:.2f} | "
            f"{b['block_efficiency_sequential']['4']:.2f} | {_observed(path, _spread(items, args.sample))} |",
            flush=True,
        )


def _spread(items, n: int):
    """``n`` items evenly spread over the file (it is ordered by difficulty)."""
    return items[:: max(1, len(items) // n)][:n]


def _observed(student_dir: Path, items) -> str:
    teacher, student, tok = load_pair(F / "models" / "teacher", student_dir)
    run = speculative_sample(
        teacher,
        student,
        [tok(it.prompt)["input_ids"] for it in items],
        gamma=4,
        max_new_tokens=64,
        temperature=1.0,
        vocab_size=len(tok),
        eos_id=tok.eos_token_id,
        seed=0,
    )
    lo, hi = bootstrap_ci(lambda a, d: a.sum(-1) / d.sum(-1), run.accepted, run.drafted.astype(float), seed=0)
    return f"{run.acceptance_rate:.3f} [{lo:.3f}, {hi:.3f}]"


if __name__ == "__main__":
    main()

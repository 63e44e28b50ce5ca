"""Predicted vs observed speculative decoding on the organisms (bench/results/speculative.md).

For each organism: run real speculative sampling (``distill_doctor.speculative.sampler``; teacher =
target, the organism's student = draft) on its item prompts, then measure the acceptance along
the sampled outputs the way ``diagnose`` does, and print observed next to predicted: acceptance
rate, tokens per teacher call (Leviathan's i.i.d. formula and the per-position replay), with
95% intervals (bootstrap by prompt / by item).

    python bench/speculative_check.py [--organisms clean capacity_gap] [--n 96] [--gamma 4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from distill_doctor.data import load_items
from distill_doctor.organisms import discover
from distill_doctor.speculative.acceptance import load_pair, token_acceptance
from distill_doctor.speculative.sampler import speculative_sample
from distill_doctor.speculative.theory import block_efficiency, sequential_block_efficiency
from distill_doctor.stats import bootstrap_ci


def _ci(num, den) -> tuple[float, float]:
    return bootstrap_ci(
        lambda a, b: a.sum(-1) / b.sum(-1), np.asarray(num, float), np.asarray(den, float), seed=0
    )


def check(org, n: int, gamma: int, temperature: float, max_new: int) -> str:
    teacher, student, tok = load_pair(org.teacher_model, org.student_model)
    items = load_items(org.items)[:n]
    prompts = [tok(it.prompt)["input_ids"] for it in items]
    t0 = time.perf_counter()
    run = speculative_sample(
        teacher,
        student,
        prompts,
        gamma=gamma,
        max_new_tokens=max_new,
        temperature=temperature,
        vocab_size=len(tok),
        eos_id=tok.eos_token_id,
        seed=0,
    )
    secs = time.perf_counter() - t0
    texts = [tok.decode(t, skip_special_tokens=True) for t in run.tokens]
    measured = token_acceptance(
        teacher, student, tok, [(it.id, it.prompt, x) for it, x in zip(items, texts)], temperature=temperature
    )
    sums = [m.accept.sum() for m in measured]
    counts = [len(m.accept) for m in measured]
    alpha = float(np.sum(sums) / np.sum(counts))
    lo, hi = _ci(sums, counts)
    obs_lo, obs_hi = _ci(run.accepted, run.drafted)
    tpc_lo, tpc_hi = _ci(run.emitted, run.target_calls)
    out_lo, out_hi = _ci([len(t) for t in run.tokens], run.target_calls)
    replay = sequential_block_efficiency([m.accept for m in measured], gamma, n_sim=100)
    z = (run.accepted.sum() - run.expected_accepted.sum()) / np.sqrt(run.accepted_variance.sum())
    return (
        f"| {org.name} | {alpha:.3f} [{lo:.3f}, {hi:.3f}] | {run.acceptance_rate:.3f} [{obs_lo:.3f}, {obs_hi:.3f}] "
        f"| {block_efficiency(alpha, gamma):.2f} [{block_efficiency(lo, gamma):.2f}, {block_efficiency(hi, gamma):.2f}] "
        f"| {run.tokens_per_call:.2f} [{tpc_lo:.2f}, {tpc_hi:.2f}] | {replay:.2f} "
        f"| {run.output_tokens_per_call:.2f} [{out_lo:.2f}, {out_hi:.2f}] | {z:+.2f} | {int(run.drafted.sum())} | {secs:.0f} s |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", type=Path, default=Path("fixtures/organisms"))
    ap.add_argument("--organisms", nargs="*", default=None)
    ap.add_argument("--n", type=int, default=96, help="prompts per organism (the first n items)")
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(
        f"gamma {args.gamma}, temperature {args.temperature}, {args.n} prompts, up to {args.max_new_tokens} tokens\n\n"
        "| organism | predicted alpha (along outputs) | observed acceptance | predicted tokens/call (i.i.d.) "
        "| observed tokens/call | replay | observed output tokens/call | z (accepted - sum a) | drafts | time |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    for org in discover(args.fixtures, args.organisms):
        print(check(org, args.n, args.gamma, args.temperature, args.max_new_tokens), flush=True)


if __name__ == "__main__":
    main()

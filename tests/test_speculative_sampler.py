"""Real speculative sampling with the organism models (teacher = target, a distilled student = draft).

Checks, against the measurement ``diagnose`` reports: the observed acceptance and tokens per
teacher call fall inside the predicted intervals; the accept/reject rule is exact (accepted
drafts match the summed acceptance probabilities, a martingale); the output distribution is
the teacher's (chi-square on the first two tokens of one prompt, with a negative control that
the same test rejects the student's own samples); greedy speculative decoding reproduces the
teacher's greedy text token for token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from distill_doctor.causal_lm import generate_new_tokens
from distill_doctor.data import load_items
from distill_doctor.speculative.acceptance import load_pair, next_token_probs, token_acceptance
from distill_doctor.speculative.sampler import speculative_sample
from distill_doctor.speculative.theory import block_efficiency
from distill_doctor.stats import bootstrap_ci

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "organisms"
GAMMA = 3


@pytest.fixture(scope="module")
def models():
    return load_pair(FIXTURES / "models" / "teacher", FIXTURES / "capacity_gap" / "model")


@pytest.fixture(scope="module")
def items():
    return [it for it in load_items(FIXTURES / "items.jsonl") if it.variant == "original"][:64]


@pytest.fixture(scope="module")
def run(models, items):
    teacher, student, tok = models
    prompts = [tok(it.prompt)["input_ids"] for it in items]
    return speculative_sample(
        teacher,
        student,
        prompts,
        gamma=GAMMA,
        max_new_tokens=48,
        temperature=1.0,
        vocab_size=len(tok),
        eos_id=tok.eos_token_id,
        seed=3,
    )


def _ratio_ci(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    return bootstrap_ci(lambda a, b: a.sum(-1) / b.sum(-1), num, den, n_boot=2000, seed=0)


def test_accept_rule_is_exact(run):
    """Accepted drafts minus the sum of their acceptance probabilities is a martingale."""
    exp, sd = run.expected_accepted.sum(), np.sqrt(run.accepted_variance.sum())
    assert run.drafted.sum() > 500 and sd > 1
    assert abs(run.accepted.sum() - exp) < 4 * sd, (run.accepted.sum(), exp, sd)


def test_observed_acceptance_matches_prediction(models, items, run):
    teacher, student, tok = models
    texts = [tok.decode(t, skip_special_tokens=True) for t in run.tokens]
    measured = token_acceptance(teacher, student, tok, [(it.id, it.prompt, x) for it, x in zip(items, texts)])
    sums = np.array([m.accept.sum() for m in measured])
    counts = np.array([len(m.accept) for m in measured], dtype=float)
    lo, hi = _ratio_ci(sums, counts)  # predicted alpha, bootstrap over items
    obs_lo, obs_hi = _ratio_ci(run.accepted, run.drafted)
    assert obs_lo <= hi and lo <= obs_hi, (run.acceptance_rate, (lo, hi), (obs_lo, obs_hi))
    be_lo, be_hi = block_efficiency(lo, GAMMA), block_efficiency(hi, GAMMA)
    tpc_lo, tpc_hi = _ratio_ci(run.emitted, run.target_calls)
    assert tpc_lo <= be_hi and be_lo <= tpc_hi, (run.tokens_per_call, (be_lo, be_hi), (tpc_lo, tpc_hi))


def _pooled_chisquare(counts: np.ndarray, probs: np.ndarray) -> float:
    """Chi-square p-value with categories of expected count < 5 pooled into one."""
    n = counts.sum()
    big = probs * n >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(probs[big], probs[~big].sum()) * n
    keep = exp > 0
    return float(chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue)


@torch.no_grad()
def test_output_distribution_is_the_teachers(models):
    """First and second sampled tokens vs the teacher's exact marginals (temperature 1.5)."""
    teacher, student, tok = models
    temp, n = 1.5, 3000
    prompt = tok("47+38\n")["input_ids"]
    vocab = len(tok)
    out = speculative_sample(
        teacher, student, [prompt] * n, gamma=2, max_new_tokens=2, temperature=temp, vocab_size=vocab, seed=11
    )
    first = np.array([t[0] for t in out.tokens])
    second = np.array([t[1] for t in out.tokens])
    ids = torch.tensor([prompt])
    p1 = next_token_probs(teacher(input_ids=ids).logits[0, -1, :vocab], temp)  # (V,)
    both = torch.cat([ids.repeat(vocab, 1), torch.arange(vocab)[:, None]], 1)  # every first token
    p2_given = next_token_probs(teacher(input_ids=both).logits[:, -1, :vocab], temp)  # (V, V)
    p2 = (p1[:, None] * p2_given).sum(0)
    assert out.accepted.sum() < out.drafted.sum()  # rejections happened: the residual path is tested
    for tokens, p in ((first, p1), (second, p2)):
        counts = np.bincount(tokens, minlength=vocab)
        assert _pooled_chisquare(counts, p.numpy()) > 1e-3
    # Negative control: the student's own first tokens are detectably not the teacher's.
    q1 = next_token_probs(student(input_ids=ids).logits[0, -1, :vocab], temp)
    draws = torch.multinomial(q1, n, replacement=True, generator=torch.Generator().manual_seed(0))
    assert _pooled_chisquare(np.bincount(draws.numpy(), minlength=vocab), p1.numpy()) < 1e-6


def test_greedy_speculative_equals_teacher_greedy(models, items):
    teacher, student, tok = models
    chunk = items[:16]
    out = speculative_sample(
        teacher,
        student,
        [tok(it.prompt)["input_ids"] for it in chunk],
        gamma=4,
        max_new_tokens=32,
        temperature=0.0,
        vocab_size=len(tok),
        eos_id=tok.eos_token_id,
    )
    for it, got in zip(chunk, out.tokens):
        ids = torch.tensor([tok(it.prompt)["input_ids"]])
        want = generate_new_tokens(
            teacher,
            ids,
            torch.ones_like(ids),
            max_new_tokens=32,
            pad_id=tok.pad_token_id,
            eos_id=tok.eos_token_id,
        )[0].tolist()
        assert got == want[: len(got)] and (len(got) == 32 or got[-1] == tok.eos_token_id)

"""Min-K%++ scores: the z-score formula, the lowest-k% average, the AUC, and a memorised-text check."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from datasets import Dataset

from distill_doctor.probes.contamination import run as contamination_run
from distill_doctor.probes.min_k_plus import auc, min_k_plus_from_z, min_k_plus_scores, token_z_scores
from distill_doctor.testing.tiny_model import build_char_tokenizer, build_tiny_llama, save_model


def test_z_scores_match_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([1, 2])
    z = token_z_scores(logits, targets)
    p = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    lp = np.log(p)
    mu = (p * lp).sum()
    sigma = math.sqrt((p * lp**2).sum() - mu**2)
    assert z[0].item() == pytest.approx((lp[1] - mu) / sigma, rel=1e-9)
    assert z[1].item() == 0.0  # uniform distribution: sigma = 0 -> z defined as 0


def test_lowest_k_percent_average():
    assert min_k_plus_from_z([3.0, 1.0, 2.0, -1.0, 0.0], k=0.4) == pytest.approx(-0.5)
    assert min_k_plus_from_z([5.0], k=0.2) == 5.0  # at least one position
    assert math.isnan(min_k_plus_from_z([], k=0.2))


def test_auc_extremes_and_nan():
    value, (lo, hi) = auc([3, 4, 5], [0, 1, 2])
    assert value == 1.0 and lo == 1.0
    value, _ = auc([1, 1], [1, 1])
    assert value == 0.5
    value, ci = auc([float("nan")], [1.0])
    assert math.isnan(value) and math.isnan(ci[0])


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A tiny Llama trained for a few steps on 8 strings (members); 8 fresh strings are non-members."""
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz"

    def text():
        return " ".join("".join(rng.choice(alphabet) for _ in range(5)) for _ in range(8))

    members, others = [text() for _ in range(8)], [text() for _ in range(8)]
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_tiny_llama(tok, hidden_size=64, num_layers=2, num_heads=2)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    enc = tok(members, return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    model.train()
    for _ in range(80):
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = save_model(model, tok, tmp_path_factory.mktemp("student"))
    return model, tok, members, others, path


def test_members_score_higher_than_non_members(memorised):
    model, tok, members, others, _ = memorised
    s_in = min_k_plus_scores(model, tok, members)
    s_out = min_k_plus_scores(model, tok, others)
    value, _ = auc(s_in, s_out)
    assert value >= 0.9
    assert math.isnan(min_k_plus_scores(model, tok, [""])[0])


def test_contamination_reports_membership_with_a_student_model(memorised):
    from distill_doctor.data.records import Item, Judgement, ModelOutput
    from distill_doctor.probes.base import DiagnosisInputs

    _, _, members, others, path = memorised
    texts = members + others
    items = [Item(id=f"i{k}", prompt=t, reference=0, verifier="numeric") for k, t in enumerate(texts)]
    student = {it.id: ModelOutput(it.id, "0") for it in items}
    sv = {it.id: Judgement(True, "0") for it in items}
    train = Dataset.from_list([{"prompt": t, "response": ""} for t in members])
    inputs = DiagnosisInputs(
        items=items, student=student, student_verdicts=sv, train=train, student_model=path
    )
    f = contamination_run(inputs)
    mk = f.metrics["min_k_plus"]
    assert mk["n_dirty"] == 8 and mk["n_clean"] == 8
    assert mk["auc_dirty_vs_clean"] >= 0.9
    assert f.verdict == "warn"  # 8 dirty items on a 16-item eval set: small sample, at most warn

"""Model-based exposure bias (R_l = L_FR / L_TF) on two tiny, briefly trained Llamas."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from distill_doctor.data.records import Item
from distill_doctor.errors import InputError
from distill_doctor.probes.exposure_models import measure_exposure_bias, measure_with_models, step_kl
from distill_doctor.testing.tiny_model import build_char_tokenizer, build_tiny_llama, save_model


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        out.append(f"What is {a}+{b}? {a}+{b}={a + b}. The answer is {a + b}.")
    return out


def _train(model, tok, steps: int, seed: int):
    """A few AdamW steps of next-character prediction on arithmetic strings (enough to break symmetry)."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    texts = _texts(256, seed)
    model.train()
    for step in range(steps):
        batch = texts[(step * 16) % 256 : (step * 16) % 256 + 16]
        enc = tok(batch, return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    tok = build_char_tokenizer()
    teacher = _train(build_tiny_llama(tok, hidden_size=48, num_layers=2, num_heads=2, seed=0), tok, 60, 0)
    student = _train(build_tiny_llama(tok, hidden_size=32, num_layers=1, num_heads=2, seed=1), tok, 15, 1)
    return tok, teacher, student


def _items(n: int = 24) -> list[Item]:
    rng = random.Random(5)
    items = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        items.append(Item(id=f"q{i}", prompt=f"What is {a}+{b}?", reference=a + b, verifier="numeric"))
    return items


def test_ratios_are_finite_positive_with_cis(pair):
    tok, teacher, student = pair
    res = measure_with_models(
        teacher, student, tok, _items(), lengths=(8, 16, 32), max_prompts=16
    ).as_metrics()
    assert res["n_prompts"] == 16
    assert [r["length"] for r in res["ratios"]] == [8, 16, 32]
    for r in res["ratios"]:
        assert r["L_TF"] > 0 and r["L_FR"] > 0
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0
        lo, hi = r["ci"]
        assert lo <= r["ratio"] <= hi
        assert r["exacc_err_pct"] == pytest.approx((r["ratio"] - 1) * 100, rel=1e-4, abs=1e-3)
    # L_TF and L_FR are cumulative sums over steps: non-decreasing in l.
    assert res["ratios"][0]["L_TF"] <= res["ratios"][-1]["L_TF"]
    inj = res["injection"]
    assert inj["ratio"] > 0 and inj["steps_after"] == 32 - 2 - 1


def test_identical_models_have_zero_divergence(pair):
    tok, teacher, _ = pair
    res = measure_with_models(
        teacher, teacher, tok, _items(6), lengths=(8,), max_prompts=6, verify_answers=False
    ).as_metrics()
    r = res["ratios"][0]
    assert r["L_TF"] == pytest.approx(0.0, abs=1e-6)
    assert r["ratio"] is None  # 0 / 0 is reported as undefined, never as a number


def test_step_kl_matches_unpadded_reference(pair):
    """Left padding and explicit positions give the same per-step KL as one unpadded row at a time."""
    tok, teacher, student = pair
    prompts = ["What is 12+34?", "Hi?"]
    enc = tok(prompts, return_tensors="pt", padding=True)
    cont = torch.tensor([[5, 6, 7], [8, 9, 10]])
    batched = step_kl(teacher, student, enc["input_ids"], enc["attention_mask"], cont, len(tok))
    for r, p in enumerate(prompts):
        ids = tok(p, return_tensors="pt")["input_ids"]
        seq = torch.cat([ids, cont[r : r + 1]], 1)
        with torch.no_grad():
            lt = torch.log_softmax(teacher(seq).logits[0, ids.shape[1] - 1 : -1].double(), -1)
            ls = torch.log_softmax(student(seq).logits[0, ids.shape[1] - 1 : -1].double(), -1)
        ref = (lt.exp() * (lt - ls)).sum(-1)
        np.testing.assert_allclose(batched[r].numpy(), ref.numpy(), rtol=1e-3, atol=1e-5)


def test_sampled_decoding_and_from_disk(pair, tmp_path):
    tok, teacher, student = pair
    save_model(teacher, tok, tmp_path / "t")
    save_model(student, tok, tmp_path / "s")
    res = measure_exposure_bias(
        tmp_path / "t",
        tmp_path / "s",
        _items(8),
        lengths=(8,),
        max_prompts=8,
        do_sample=True,
        verify_answers=False,
    ).as_metrics()
    assert res["decoding"].startswith("sampled")
    assert res["ratios"][0]["ratio"] > 0


def test_different_tokenizers_are_an_input_error(pair, tmp_path):
    tok, teacher, _ = pair
    other_tok = build_char_tokenizer(alphabet="0123456789+= ")
    other = build_tiny_llama(other_tok, hidden_size=16, num_layers=1, num_heads=1)
    save_model(teacher, tok, tmp_path / "t")
    save_model(other, other_tok, tmp_path / "s")
    with pytest.raises(InputError, match="share a tokenizer"):
        measure_exposure_bias(tmp_path / "t", tmp_path / "s", _items(2), lengths=(4,))


def test_probe_adds_model_evidence_without_failing_a_clean_run(pair, tmp_path):
    from distill_doctor.probes.exposure_bias import run
    from distill_doctor.testing.exposure_runs import exposure_run

    tok, teacher, student = pair
    inputs = exposure_run("clean_high", 40, 0)
    inputs.teacher_model = save_model(teacher, tok, tmp_path / "t")
    inputs.student_model = save_model(student, tok, tmp_path / "s")
    f = run(inputs)
    json.dumps(f.to_dict())
    mb = f.metrics["model_based"]
    assert mb["n_prompts"] == 40 and [r["length"] for r in mb["ratios"]] == [16, 32, 64]
    assert all(r["ratio"] > 0 for r in mb["ratios"])
    assert any(t.effect_name == "R_l" for t in f.tests)
    assert f.verdict != "fail"  # model evidence alone is at most a warning


def test_model_evidence_upgrades_conservatively(monkeypatch, tmp_path):
    """Decision rule with a strong model signal (R_64 CI [2.0, 3.0] on 64 prompts), measurements faked."""
    import distill_doctor.probes.exposure_models as em
    from distill_doctor.probes.exposure_bias import run
    from distill_doctor.testing.exposure_runs import exposure_run

    ratio = em.RatioAt(
        64, em.RatioBlock(base=0.1, test=0.25, ratio=2.5, ci=[2.0, 3.0], pct=150.0, pct_ci=[100.0, 200.0])
    )
    fake = em.ModelExposure(n_prompts=64, decoding="greedy", lengths=(64,), inject_at=2, ratios=(ratio,))
    monkeypatch.setattr(em, "measure_exposure_bias", lambda *a, **k: fake)

    def verdict(kind: str, n: int) -> str:
        inputs = exposure_run(kind, n, 0)
        inputs.teacher_model = inputs.student_model = tmp_path
        return run(inputs).verdict

    assert verdict("clean_high", 300) == "warn"  # models alone: at most a warning
    assert verdict("uniform", 300) == "fail"  # significant output-level excess + strong R_l
    assert verdict("planted", 24) in ("pass", "warn")  # a tiny sample is never upgraded

"""The gkd teacher served by a real vLLM engine (``teacher_use_vllm``) against the same teacher in the
trainer cut to its top-k, and a teacher engine that dies mid-run.

A real engine process in ``.venv-vllm`` per test (10-30 s to load on CPU): slow tier.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from vllm_toy import ORGANISMS, build_toy, metrics, spy_on_engine_starts

from distill_doctor.losses.topk import topk_targets
from distill_doctor.train import vllm_client
from distill_doctor.train.command import run_training
from distill_doctor.train.config import GKDConfig, TrainConfig
from distill_doctor.train.vllm_teacher import ScoreRequest, parse_scores

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        vllm_client.unavailable_reason() is not None, reason=str(vllm_client.unavailable_reason())
    ),
]


def assert_same_top_k(got, logits: torch.Tensor, k: int, atol: float) -> None:
    """Served top-k (ids, log-probs, tail) against log_softmax of HF logits (L-1, V), robust to near-ties:
    the k values agree, the HF log-prob at every served id is the served value, and the tail masses agree."""
    logp = logits.float().log_softmax(-1)
    ids, want, tail = topk_targets(logits.float(), k)
    assert torch.allclose(got.logprobs, want, atol=atol)
    assert torch.allclose(logp.gather(-1, got.ids), got.logprobs, atol=atol)
    assert torch.allclose(got.tail.exp(), tail.exp(), atol=atol)


def test_the_served_top_k_is_the_hf_teachers_on_the_qwen_vocabulary(qwen152k):
    """A random 2-layer Qwen2 teacher at 151,936 rows (151,665 tokens): near-flat distributions, so the
    k-th and (k+1)-th often nearly tie and ids are compared through the values. Both sides are float32
    over 151,936 logits; the tolerance 1e-4 is 50x the largest difference seen (1.9e-6)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(qwen152k.teacher), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(qwen152k.teacher))
    texts = [
        "The capital of France is Paris.",
        "def fibonacci(n):\n    return n",
        "<|im_start|>user\nhi<|im_end|>\n",
    ]
    request = ScoreRequest([tok(t)["input_ids"] for t in texts], top_k=8)
    engine = vllm_client.start_colocated(
        vllm_client.EngineSpec(model=str(qwen152k.teacher), max_model_len=128)
    )
    try:
        scored = parse_scores(engine.call("/v1/completions", request.to_json()), request)
    finally:
        engine.close()
    for seq, got in zip(request.sequences, scored):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, :-1]
        assert_same_top_k(got, logits, 8, atol=1e-4)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_toy(tmp_path_factory.mktemp("vllm-teacher"))


def cfg_for(toy, out: Path, **fields) -> TrainConfig:
    base = TrainConfig(
        method="gkd",
        student=str(toy / "student"),
        teacher=str(ORGANISMS / "sort_teacher"),
        data=str(toy / "train.jsonl"),
        output_dir=str(out),
        steps=3,
        batch_size=4,
        grad_accum=2,
        lr=1e-2,
        max_len=64,
        quiet=True,
        teacher_top_k=5,
        gkd=GKDConfig(lmbda=1.0, beta=0.5, temperature=0.0, max_new_tokens=12),
    )
    return dataclasses.replace(base, **fields)


@pytest.mark.parametrize(
    ("mode", "gkd"),
    [
        ("colocate", GKDConfig(lmbda=1.0, beta=0.5, temperature=0.0, max_new_tokens=12)),
        ("external", GKDConfig(lmbda=0.0, seq_kd=True, divergence="forward_kl", temperature=0.0, max_new_tokens=12)),
    ],
    ids=["on-policy-colocate", "seq_kd-external-server"],
)  # fmt: skip
def test_a_served_teacher_trains_like_the_in_process_teacher_cut_to_its_top_k(
    toy, tmp_path, monkeypatch, mode, gkd
):
    """3 gkd steps of 2 micro-batches: the same samples (greedy; on-policy from the student's own vLLM
    engine beside the teacher's, colocated; with seq_kd the teacher's, sampled by a teacher server
    started elsewhere), the same top-k targets up to float32 kernels: the same losses and tail masses."""
    opened = spy_on_engine_starts(monkeypatch, "vllm_teacher")
    run_training("gkd", cfg_for(toy, tmp_path / "hf", gkd=gkd))
    fields: dict = {"teacher_use_vllm": True, "vllm_mode": "colocate", "use_vllm": gkd.lmbda > 0}
    external = None
    if mode == "external":  # a server someone started on the teacher: the trainer connects, leaves it up
        spec = vllm_client.EngineSpec(
            model=str(ORGANISMS / "sort_teacher"), max_model_len=256, max_logprobs=20
        )
        external = vllm_client.start_server(spec)
        fields.update(vllm_mode="server", teacher_vllm_server_port=int(external.base_url.rsplit(":", 1)[1]))
    try:
        run_training("gkd", cfg_for(toy, tmp_path / "vllm", gkd=gkd, **fields))
        if external is not None:
            assert external.call("/health", {})["status"] == "ok"  # not stopped by the trainer
    finally:
        if external is not None:
            external.close()
    hf, vl = metrics(tmp_path / "hf"), metrics(tmp_path / "vllm")
    assert [m["step"] for m in vl] == [1, 2, 3]
    assert [m["loss"] for m in vl] == pytest.approx([m["loss"] for m in hf], rel=1e-4)
    assert [m["loss_tokens"] for m in vl] == [m["loss_tokens"] for m in hf]
    assert [m["teacher_tail_mass"] for m in vl] == pytest.approx(
        [m["teacher_tail_mass"] for m in hf], abs=1e-5
    )
    assert [m["student_tail_mass"] for m in vl] == pytest.approx(
        [m["student_tail_mass"] for m in hf], rel=1e-4
    )
    assert all(m["kl"] is None and m["teacher_score_s"] > 0 for m in vl)
    if external is None:  # the trainer stopped the teacher engine it started
        assert len(opened) == 1 and opened[0].process.poll() is not None
    full = tmp_path / "full"  # the full teacher: a different (larger) loss than its top-k, same samples
    run_training("gkd", cfg_for(toy, full, gkd=gkd, teacher_top_k=None, steps=1))
    assert metrics(full)[0]["loss"] >= metrics(tmp_path / "hf")[0]["loss"] - 1e-6


def test_a_teacher_engine_that_dies_stops_training_with_one_line(toy, tmp_path, monkeypatch, capsys):
    from distill_doctor.cli import main
    from distill_doctor.train.vllm_teacher import ServedTeacher

    opened = spy_on_engine_starts(monkeypatch, "vllm_teacher")
    real_score = ServedTeacher.score
    calls = []

    def die_at_step_3(self, batches):
        calls.append(1)
        if len(calls) == 3:
            opened[0].process.kill()
            opened[0].process.wait()
        return real_score(self, batches)

    monkeypatch.setattr(ServedTeacher, "score", die_at_step_3)
    out = tmp_path / "dies"
    config = tmp_path / "gkd.yaml"
    config.write_text(
        cfg_for(toy, out, steps=4, save_every=1, teacher_use_vllm=True, vllm_mode="server").to_yaml()
    )
    code = main(["train", "gkd", "--config", str(config), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("distill-doctor train: teacher engine failed: ")
    assert "not answering" in err[0] and "at step 3" in err[0] and "step-000002" in err[0]
    assert (out / "checkpoints" / "step-000002").is_dir() and not (out / "model.safetensors").exists()
    assert [m["step"] for m in metrics(out)] == [1, 2]

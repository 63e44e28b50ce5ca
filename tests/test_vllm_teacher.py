"""The gkd teacher served by vLLM (``teacher_use_vllm``), without an engine: config, refusals, the
scoring reply (a real one, recorded by ``scripts/record_teacher_scores.py``), and the top-k loss
against the offline top-k cache path on the same teacher."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from topk_bounds import check_missed_tail

from distill_doctor.errors import InputError
from distill_doctor.losses.table import DIVERGENCES, TOPK_TAIL_ERROR
from distill_doctor.losses.topk import topk_targets
from distill_doctor.train.config import GKDConfig, LossConfig, TrainConfig, load_config
from distill_doctor.train.vllm_teacher import (
    ScoreRequest,
    TeacherEngineError,
    batch_targets,
    parse_scores,
    topk_teacher_loss,
)

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "fixtures" / "vllm" / "sort_teacher_scores.json"
TEACHER = ROOT / "fixtures" / "organisms" / "models" / "sort_teacher"


def gkd_config(**fields) -> TrainConfig:
    return TrainConfig(method="gkd", student="s", teacher="t", data="d.jsonl", output_dir="o", **fields)


# ----------------------------------------------------------------------------- config


def test_a_served_teacher_needs_teacher_top_k():
    with pytest.raises(InputError, match="teacher_top_k.*required by teacher_use_vllm"):
        gkd_config(teacher_use_vllm=True)
    assert gkd_config(teacher_use_vllm=True, teacher_top_k=8).teacher_top_k == 8


@pytest.mark.parametrize("method", ["sft", "logit_kd", "skd"])
def test_a_top_k_teacher_is_for_gkd_only(method):
    with pytest.raises(InputError, match="only used by method gkd"):
        TrainConfig(method=method, student="s", teacher="t", data="d", output_dir="o", teacher_top_k=8)


@pytest.mark.parametrize(
    "gkd",
    [
        GKDConfig(divergence="reverse_kl"),
        GKDConfig(divergence="jsd", beta=1.0),
        GKDConfig(divergence="skew_reverse_kl"),  # with loss.alpha 0 below
    ],
)
def test_reverse_kl_is_refused_against_a_top_k_teacher(gkd):
    with pytest.raises(InputError, match="reverse KL, which a top-k teacher cannot stand in for") as err:
        gkd_config(gkd=gkd, loss=LossConfig(alpha=0.0), teacher_top_k=8)
    assert err.value.field == "gkd.divergence"
    gkd_config(gkd=gkd, loss=LossConfig(alpha=0.0))  # the full teacher takes it


@pytest.mark.parametrize(
    ("divergence", "beta", "alpha"),
    [("forward_kl", 0.5, 0.1), ("jsd", 0.5, 0.1), ("jsd", 0.0, 0.1), ("jsd", 0.9, 0.1), ("tv", 0.5, 0.1),
     ("skew_forward_kl", 0.5, 0.1), ("skew_forward_kl", 0.5, 0.0), ("skew_reverse_kl", 0.5, 0.1)],
)  # fmt: skip
def test_the_other_divergences_train_against_a_served_teacher(divergence, beta, alpha):
    cfg = gkd_config(
        gkd=GKDConfig(divergence=divergence, beta=beta),
        loss=LossConfig(alpha=alpha),
        teacher_use_vllm=True,
        teacher_top_k=8,
    )
    assert cfg.teacher_use_vllm


def test_a_served_teacher_scores_at_temperature_one():
    with pytest.raises(InputError, match="must be 1 with teacher_use_vllm") as err:
        gkd_config(loss=LossConfig(temperature=2.0), teacher_use_vllm=True, teacher_top_k=8)
    assert err.value.field == "loss.temperature"
    gkd_config(loss=LossConfig(temperature=2.0), teacher_top_k=8)  # in-process: the teacher is tempered


def test_a_teacher_port_without_a_served_teacher_is_refused():
    with pytest.raises(InputError, match="only used with teacher_use_vllm"):
        gkd_config(teacher_vllm_server_port=8001)
    with pytest.raises(InputError, match="1..65535"):
        gkd_config(teacher_use_vllm=True, teacher_top_k=8, teacher_vllm_server_port=70000)


def test_a_config_file_names_its_line_and_field(tmp_path):
    path = tmp_path / "gkd.yaml"
    path.write_text(
        "method: gkd\nstudent: s\nteacher: t\ndata: d.jsonl\noutput_dir: o\n"
        "teacher_use_vllm: true\nteacher_top_k: 8\ngkd: {divergence: reverse_kl}\n"
    )
    with pytest.raises(InputError) as err:
        load_config(path)
    assert "gkd.divergence" in str(err.value) and "jsd with beta < 1" in str(err.value)


def test_the_example_config_loads():
    cfg = load_config(ROOT / "configs" / "gkd_vllm.yaml")
    assert cfg.use_vllm and cfg.teacher_use_vllm and cfg.teacher_top_k == 20 and cfg.gkd.beta == 0.5


def test_the_engine_is_started_with_room_for_k_log_probs():
    from distill_doctor.train.vllm_client import EngineSpec

    assert EngineSpec(model="t", max_logprobs=64).arguments()[-2:] == ["--max-logprobs", "64"]
    assert "--max-logprobs" not in EngineSpec(model="t").arguments()  # vLLM's default cap, 20


# ----------------------------------------------------------------------------- what a top-k teacher misses


def test_every_divergence_says_what_a_top_k_teacher_misses():
    assert set(TOPK_TAIL_ERROR) == set(DIVERGENCES)


@pytest.mark.parametrize("seed", range(6))
def test_the_bucketed_divergence_misses_no_more_than_the_documented_tail_error(seed):
    """Full-vocabulary divergence minus the divergence on the teacher's top-k + tail buckets lies in
    [0, bound] with the bounds of ``TOPK_TAIL_ERROR`` (exactly p_R KL(p|R || q|R) for forward KL and
    q_R KL(q|R || p|R) for reverse KL, the refused one), on random teachers of several sharpnesses
    (``topk_bounds.check_missed_tail``; the top-k cache's numbers: tests/test_topk_cache.py)."""
    g = torch.Generator().manual_seed(seed)
    V, k = 64, 6
    t_logits = torch.randn(V, generator=g, dtype=torch.float64) * (1 + seed)
    s_logits = torch.randn(V, generator=g, dtype=torch.float64) * 2
    ids, t_top, t_tail = topk_targets(t_logits, k)
    check_missed_tail(s_logits, t_logits, ids, t_top, t_tail)


# ----------------------------------------------------------------------------- the scoring reply


@pytest.fixture(scope="module")
def recorded():
    record = json.loads(RECORDED.read_text())
    request = ScoreRequest(record["request"]["prompt"], record["request"]["prompt_logprobs"])
    assert request.to_json() == record["request"]  # the request the trainer sends today
    return record, request


@pytest.fixture(scope="module")
def hf_teacher():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(TEACHER)).eval(), AutoTokenizer.from_pretrained(
        str(TEACHER)
    )


def test_a_recorded_vllm_scoring_is_the_hf_teachers_top_k(recorded, hf_teacher):
    """vLLM's prompt log-probs (CPU, float32) against log_softmax of the HF teacher's logits: top-k
    log-probs within 2e-4 (both float32, but different kernels: vLLM's CPU GEMMs and attention vs
    torch's; the recorded reply differs by at most 1.9e-5), the same ids wherever the k-th and
    (k+1)-th are not that close (here: all), and the tail mass within 1e-5 (seen: 2.1e-7)."""
    record, request = recorded
    model, _ = hf_teacher
    scored = parse_scores(record["reply"], request)
    assert len(scored) == len(request.sequences) == 3
    for seq, got in zip(request.sequences, scored):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, :-1].float()  # (L-1, V)
        ids, want, tail = topk_targets(logits, request.top_k)
        assert got.ids.shape == ids.shape == (len(seq) - 1, request.top_k)
        assert torch.allclose(got.logprobs, want, atol=2e-4)
        values = logits.log_softmax(-1).sort(-1, descending=True).values
        clear = (values[:, request.top_k - 1] - values[:, request.top_k]) > 1e-3
        assert clear.float().mean() > 0.9 and torch.equal(got.ids[clear], ids[clear])
        assert torch.allclose(got.tail.exp(), tail.exp(), atol=1e-5)


def test_a_reply_about_other_tokens_is_refused(recorded):
    record, request = recorded
    sequences = copy.deepcopy(request.sequences)
    sequences[1][5] = (sequences[1][5] + 1) % 40
    with pytest.raises(TeacherEngineError, match="position 5 do not score the token sent there"):
        parse_scores(record["reply"], ScoreRequest(sequences, request.top_k))


def test_a_reply_with_fewer_log_probs_than_asked_is_refused(recorded):
    record, request = recorded
    reply = copy.deepcopy(record["reply"])
    for position in reply["choices"][0]["prompt_logprobs"][1:]:
        for token in list(position)[request.top_k - 2 :]:
            del position[token]
    with pytest.raises(TeacherEngineError, match="fewer than teacher_top_k = 5"):
        parse_scores(reply, request)


@pytest.mark.parametrize("cut", ["choices", "prompt_logprobs", "index"])
def test_a_reply_that_is_not_a_scoring_is_refused(recorded, cut):
    record, request = recorded
    reply = copy.deepcopy(record["reply"])
    if cut == "choices":
        reply["choices"] = reply["choices"][:2]
    else:
        del reply["choices"][1][cut]  # an engine that ignores prompt_logprobs sends none
    with pytest.raises(TeacherEngineError, match="answered 2 scorings|prompt_logprobs|valid index"):
        parse_scores(reply, request)


# ----------------------------------------------------------------------------- the loss


def test_the_served_teachers_loss_equals_the_top_k_cache_path(recorded, hf_teacher, tmp_path):
    """The same teacher two ways: a top-k cache built offline from the HF teacher (float32, logit_kd's
    cached path) and the recorded vLLM scoring placed on the same batch (gkd's served path). Same
    student, same rows: the jsd losses, their gradients and the tail masses agree."""
    from distill_doctor.testing.tiny_model import build_tiny_llama
    from distill_doctor.train.data import Example, collate, tokenize_example
    from distill_doctor.train.logit_kd import cached_kd_loss
    from distill_doctor.train.topk_cache import TopKCache, build_topk_cache

    record, request = recorded
    model, tok = hf_teacher
    examples = [Example(id=r["id"], prompt=r["prompt"], response=r["response"]) for r in record["rows"]]
    rows = [tokenize_example(tok, e, record["max_len"]) for e in examples]
    assert [r.input_ids for r in rows if r is not None] == request.sequences
    batch = collate([r for r in rows if r is not None], tok.pad_token_id or 0)
    batch["index"] = [0, 1, 2]
    n = int((batch["labels"][:, 1:] != -100).sum())
    student = build_tiny_llama(tok, hidden_size=32, num_layers=1, num_heads=1, seed=3, out_dir=tmp_path / "s")

    build_topk_cache(model, tok, record["rows"], tmp_path / "cache", k=request.top_k, max_len=record["max_len"],
                     dtype="float32")  # fmt: skip
    cfg = SimpleNamespace(loss=LossConfig(divergence="jsd", beta=0.5))
    run: Any = SimpleNamespace(cfg=cfg, student=student)  # what cached_kd_loss reads of a Run
    offline = cached_kd_loss(run, TopKCache(tmp_path / "cache"), batch,
                             num_tokens=n)  # fmt: skip
    offline.loss.backward()
    want_grad = [torch.zeros(0) if p.grad is None else p.grad.clone() for p in student.parameters()]
    student.zero_grad()

    targets = batch_targets(batch, parse_scores(record["reply"], request), request.top_k)
    served = topk_teacher_loss(student, batch, targets, rows=model.config.vocab_size, divergence="jsd",
                               beta=0.5, alpha=0.1, temperature=1.0, num_tokens=n)  # fmt: skip
    served.loss.backward()
    assert float(served.loss.detach()) == pytest.approx(float(offline.loss.detach()), rel=1e-5)
    for p, want in zip(student.parameters(), want_grad):
        assert p.grad is not None and torch.allclose(p.grad, want, rtol=1e-3, atol=1e-6)
    assert 0 < served.extra["teacher_tail_mass"] < 0.05  # the sort teacher is sure of itself
    assert 0.5 < served.extra["student_tail_mass"] < 1  # a random student is not


# ----------------------------------------------------------------------------- a server started by the user


class _OpenAIServer:
    """A local HTTP server answering ``/health`` and ``/v1/models`` as vLLM's OpenAI server does (an empty
    200; a model list with ``max_model_len``): the readiness and length checks without an engine. The
    real server is exercised in ``test_vllm_teacher_multiprocess.py`` (slow tier)."""

    def __init__(self, max_model_len: int | None) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        models = {"object": "list", "data": [{"id": "/models/teacher", "max_model_len": max_model_len}]}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                if self.path == "/health":
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(models).encode() if max_model_len and self.path == "/v1/models" else b"{}"
                self.send_response(200 if max_model_len and self.path == "/v1/models" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> int:
        return self.port

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_server_whose_health_answers_an_empty_body_is_ready():
    from distill_doctor.train.vllm_client import connect

    with _OpenAIServer(max_model_len=256) as port:
        transport = connect("127.0.0.1", port, timeout=5.0)
        assert transport.call("/health", {}) == {}


@pytest.mark.parametrize(("max_model_len", "refused"), [(64, True), (77, False), (None, False)])
def test_a_user_server_shorter_than_a_step_is_refused_before_training(max_model_len, refused):
    """max_len 64 + 12 new tokens + the one a scoring generates = 77; a server without ``/v1/models``
    (``vllm_server.py``, a 404) is not checked here (each scoring checks its tokens)."""
    from distill_doctor.train.vllm_client import connect
    from distill_doctor.train.vllm_teacher import check_served_model

    with _OpenAIServer(max_model_len=max_model_len) as port:
        transport = connect("127.0.0.1", port, timeout=5.0)
        if not refused:
            check_served_model(transport, 77)
            return
        with pytest.raises(
            TeacherEngineError, match=r"takes 64 tokens .* fewer than the 77 .*--max-model-len"
        ):
            check_served_model(transport, 77)

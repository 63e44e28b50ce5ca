"""vLLM as the on-policy sampler, against HF generate (the reference), with the real engine on CPU.

Each test starts a real engine process in ``.venv-vllm`` (about 20-30 s to load on CPU): slow tier.
Skipped, with the reason, where ``scripts/setup_vllm.sh`` could not install vLLM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill_doctor.train import vllm_client
from distill_doctor.train.generation import sample_completions
from distill_doctor.train.vllm_engine import VLLMSampler

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        vllm_client.unavailable_reason() is not None, reason=str(vllm_client.unavailable_reason())
    ),
]

ORGANISMS = Path(__file__).resolve().parents[1] / "fixtures" / "organisms" / "models"


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(path))


def engine_on(model_dir, mode: str = "colocate", max_model_len: int = 256) -> vllm_client.Transport:
    spec = vllm_client.EngineSpec(model=str(model_dir), max_model_len=max_model_len)
    if mode == "server":
        return vllm_client.start_server(spec)
    return vllm_client.start_colocated(spec)


def hf_greedy(model, tok, prompts, max_new_tokens, stop_ids):
    return sample_completions(
        model,
        prompts,
        pad_id=tok.pad_token_id if tok.pad_token_id is not None else stop_ids[0],
        eos_id=stop_ids,
        vocab_size=len(tok),
        max_new_tokens=max_new_tokens,
        temperature=0.0,
    )


def sort_prompts(tok, n=6):
    import gzip

    with gzip.open(ORGANISMS / "sort_teacher_train.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for _, line in zip(range(n), fh)]
    return [tok(r["prompt"], add_special_tokens=True)["input_ids"] for r in rows]


@pytest.fixture(scope="module")
def organism():
    model, tok = load(ORGANISMS / "sort_teacher")
    assert model.config.head_dim >= 32  # vLLM's CPU attention refuses smaller heads
    transport = engine_on(ORGANISMS / "sort_teacher")
    yield model, tok, transport
    transport.close()


def test_greedy_vllm_equals_hf_generate_on_an_organism(organism):
    model, tok, transport = organism
    prompts = sort_prompts(tok)
    stops = [tok.eos_token_id]
    sampler = VLLMSampler(
        transport, tokenizer_vocab=len(tok), model_vocab=model.config.vocab_size, sync_every=1
    )
    got = sampler.complete(prompts, max_new_tokens=48, temperature=0.0, stop_ids=stops)
    want = hf_greedy(model, tok, prompts, 48, stops)
    assert got == want
    assert sum(len(c) for c in got) > 6 * 10  # real completions, not empty ones


def test_pushed_weights_change_what_vllm_samples(organism):
    model, tok, transport = organism
    prompts = sort_prompts(tok)
    stops = [tok.eos_token_id]
    sampler = VLLMSampler(
        transport, tokenizer_vocab=len(tok), model_vocab=model.config.vocab_size, sync_every=1
    )
    before = sampler.complete(prompts, max_new_tokens=24, temperature=0.0, stop_ids=stops)
    student = load(ORGANISMS / "sort_teacher")[0].train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-2)
    ids = torch.tensor([prompts[0] + [tok.eos_token_id] * 8])
    student(input_ids=ids, labels=ids).loss.backward()  # one step towards "answer EOS at once"
    optimizer.step()
    sampler.push(student, step=1)
    after = sampler.complete(prompts, max_new_tokens=24, temperature=0.0, stop_ids=stops)
    assert after != before
    assert after == hf_greedy(student.eval(), tok, prompts, 24, stops)
    assert sampler.stats.pushes == 1 and sampler.lag(1) == 0
    sampler.push(model, step=2)  # back to the original weights: the first samples again
    assert sampler.complete(prompts, max_new_tokens=24, temperature=0.0, stop_ids=stops) == before


def test_sampling_with_seeds_is_reproducible_and_varied(organism):
    model, tok, transport = organism
    prompts = sort_prompts(tok, n=2) * 2
    sampler = VLLMSampler(
        transport, tokenizer_vocab=len(tok), model_vocab=model.config.vocab_size, sync_every=1
    )
    torch.manual_seed(0)
    first = sampler.complete(prompts, max_new_tokens=24, temperature=1.5, stop_ids=[tok.eos_token_id])
    torch.manual_seed(0)
    again = sampler.complete(prompts, max_new_tokens=24, temperature=1.5, stop_ids=[tok.eos_token_id])
    assert first == again  # seeds come from torch's (checkpointed) RNG
    assert first[0] != first[2] or first[1] != first[3]  # equal prompts still get their own samples


def test_greedy_vllm_equals_hf_generate_on_the_qwen_vocabulary(qwen152k):
    model, tok = load(qwen152k.student)
    assert model.config.vocab_size > len(tok)  # padded rows: the engine must never pick them
    texts = [
        "The capital of France is",
        "def fibonacci(n):",
        "1, 2, 3, 4,",
        "<|im_start|>user\nhi<|im_end|>\n",
    ]
    prompts = [tok(t)["input_ids"] for t in texts]
    stops = [151643, 151645]
    transport = engine_on(qwen152k.student)
    try:
        sampler = VLLMSampler(
            transport, tokenizer_vocab=len(tok), model_vocab=model.config.vocab_size, sync_every=1
        )
        got = sampler.complete(prompts, max_new_tokens=16, temperature=0.0, stop_ids=stops)
    finally:
        transport.close()
    assert got == hf_greedy(model, tok, prompts, 16, stops)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_server_started_by_a_trainer_that_is_killed_exits_too(tmp_path):
    """A killed trainer cannot ask its server to stop: the server watches its parent and exits."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from distill_doctor.train import vllm_client as vc\n"
        "t = vc.start_server(vc.EngineSpec(model=sys.argv[1], max_model_len=256))\n"
        "print(t.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    trainer = subprocess.Popen(
        [sys.executable, "-c", script, str(ORGANISMS / "sort_teacher")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert trainer.stdout is not None
    server = int(trainer.stdout.readline())
    assert _alive(server)
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    deadline = time.monotonic() + 30
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _alive(server):
        os.kill(server, signal.SIGKILL)
        pytest.fail("the server outlived the trainer that started it")

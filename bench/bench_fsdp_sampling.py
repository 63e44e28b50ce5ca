"""Sampling from an FSDP2-sharded student: gather once (what gkd/skd do) vs lockstep, on CPU processes.

    OMP_NUM_THREADS=1 .venv/bin/python -m torch.distributed.run --nproc_per_node 2 \\
        bench/bench_fsdp_sampling.py [--hidden 256] [--layers 8] [--new-tokens 64] [--batch 8]

A random char-level Llama is sharded with torch's ``fully_shard`` (each decoder layer, then the
root; ``reshard_after_forward=True``, as accelerate's FSDP2 plugin does) over gloo. Three ways
to sample the same greedy completions (no EOS, so every process runs the same number of steps,
which lockstep needs):

* ``gather_once``: ``distributed._fsdp2_unsharded`` around the decoding loop (the training code's path);
* ``lockstep``: the decoding loop through the sharded model, every forward all-gathering every unit
  (what ``generate(synced_gpus=True)`` does at each step);
* ``unsharded``: the same model never sharded (compute alone, the floor).

Greedy tokens must agree across the three. Wall time is the median of ``--repeats`` runs on
rank 0; CPU collectives over loopback TCP are far slower than NVLink, so the ratio says how the
communication scales (once vs once per token), not what a GPU would measure.
Results: ``bench/results/fsdp_sampling.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

from distill_doctor.atomic import atomic_write_text
from distill_doctor.testing.tiny_model import build_char_tokenizer, build_tiny_llama, count_parameters
from distill_doctor.train.distributed import _fsdp2_unsharded
from distill_doctor.train.generation import sample_completions

RESULTS = Path(__file__).parent / "results"


def sharded_copy(model):
    from torch.distributed.fsdp import fully_shard

    sharded = copy.deepcopy(model)
    for layer in sharded.model.layers:
        fully_shard(layer, reshard_after_forward=True)
    fully_shard(sharded, reshard_after_forward=True)
    return sharded


def timed(fn, repeats: int) -> tuple[float, list]:
    times, out = [], None
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        out = fn()
        dist.barrier()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the Llama")
    parser.add_argument("--layers", type=int, default=8, help="decoder layers (one FSDP unit each)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens sampled per completion")
    parser.add_argument("--batch", type=int, default=8, help="prompts per process")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per way (median reported)")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    tok = build_char_tokenizer(alphabet="0123456789+= ")
    model = build_tiny_llama(
        tok, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.hidden // 64, seed=0
    ).eval()
    sharded = sharded_copy(model)
    gen = torch.Generator().manual_seed(rank)
    prompts = [torch.randint(3, len(tok), (8,), generator=gen).tolist() for _ in range(args.batch)]

    def sample(m):
        return sample_completions(
            m, prompts, pad_id=tok.pad_token_id, eos_id=None, vocab_size=len(tok),
            max_new_tokens=args.new_tokens, temperature=0.0,
        )  # fmt: skip

    def gather_once():
        with _fsdp2_unsharded(sharded, True):
            return sample(sharded)

    results = {}
    outputs = {}
    for name, fn in (("unsharded", lambda: sample(model)), ("gather_once", gather_once),
                     ("lockstep", lambda: sample(sharded))):  # fmt: skip
        results[name], outputs[name] = timed(fn, args.repeats)
    same = outputs["gather_once"] == outputs["unsharded"] == outputs["lockstep"]
    agree = torch.tensor([int(same)])
    dist.all_reduce(agree, op=dist.ReduceOp.MIN)
    if rank == 0:
        params = count_parameters(model)
        record = {
            "processes": world,
            "parameters": params,
            "hidden": args.hidden,
            "layers": args.layers,
            "new_tokens": args.new_tokens,
            "batch_per_process": args.batch,
            "seconds": results,
            "lockstep_over_gather_once": results["lockstep"] / results["gather_once"],
            "model_all_gathers_per_pass": {
                "gather_once": 1,
                "lockstep": args.new_tokens + 1,
            },  # prefill + steps
            "greedy_tokens_agree": bool(agree.item()),
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s) per process, gloo",
        }
        RESULTS.mkdir(exist_ok=True)
        atomic_write_text(RESULTS / "fsdp_sampling.json", json.dumps(record, indent=2) + "\n")
        rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in results.items())
        atomic_write_text(
            RESULTS / "fsdp_sampling.md",
            f"# Sampling from an FSDP2 student on {world} CPU processes (gloo)\n\n"
            f"Llama with {params:,} parameters ({args.layers} layers, hidden {args.hidden}), greedy, "
            f"{args.batch} prompts x {args.new_tokens} new tokens per process; median of {args.repeats}.\n\n"
            f"| way | seconds |\n|---|---|\n{rows}\n\n"
            f"lockstep / gather once: {record['lockstep_over_gather_once']:.2f}x; "
            f"greedy tokens agree across the three: {record['greedy_tokens_agree']}.\n",
        )
        print(json.dumps(record, indent=2))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

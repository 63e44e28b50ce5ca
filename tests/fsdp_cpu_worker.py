"""Run training jobs under accelerate's FSDP2 or DeepSpeed on CPU processes (gloo), for the tests.

    ACCELERATE_USE_CPU=true accelerate launch --config_file fsdp.yaml tests/fsdp_cpu_worker.py jobs.json

``jobs.json`` is a list of ``{"method": ..., "fields": {...}}`` run one after the other in the
same processes (the imports are paid once); a job with ``"refusal": true`` must be refused with
an ``InputError``, recorded as ``refused.json`` in its output directory.

accelerate 1.16 selects FSDP and DeepSpeed only on accelerator devices: with ``use_cpu`` the same
config silently becomes plain data parallelism (``MULTI_CPU``). torch's FSDP2 and DeepSpeed's
ZeRO-3 (its CPU accelerator falls back to gloo) both run on CPU, so this worker gives the
accelerator state the type accelerate would have given it on GPUs, right after accelerate built
it from the config; everything else (``fully_shard`` or the DeepSpeed engine through
``Accelerator.prepare``, ``no_sync``, gradient clipping, sharded ``save_state``/``load_state``,
the gathered state dict of the final save) is accelerate's own code. Each job writes
``fsdp_check.rank<N>.json`` into its output directory: the sharding seen and the share of the
student's parameters this process holds, so a test can tell sharding from a silent fallback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType


def select_sharding_on_cpu() -> None:
    """Give CPU processes the FSDP or DeepSpeed state that the same config gives GPU processes."""
    original = AcceleratorState.__init__

    @functools.wraps(original)
    def init(self, mixed_precision=None, cpu=False, dynamo_plugin=None, deepspeed_plugin=None, fsdp_plugin=None,
             *args, **kwargs):  # fmt: skip
        original(self, mixed_precision, cpu, dynamo_plugin, deepspeed_plugin, fsdp_plugin, *args, **kwargs)
        if self.distributed_type != DistributedType.MULTI_CPU:
            return
        if fsdp_plugin is not None:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
        elif deepspeed_plugin is not None:  # what accelerate does for GPUs, with DeepSpeed's gloo backend
            from deepspeed import comm

            if not comm.is_initialized():
                comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
            self.distributed_type = DistributedType.DEEPSPEED
            self._mixed_precision = "no"
            deepspeed_plugin.set_mixed_precision("no")
            deepspeed_plugin.select(_from_accelerator_state=True)
            self.deepspeed_plugins = deepspeed_plugin
        else:
            return
        PartialState._shared_state["distributed_type"] = self.distributed_type

    AcceleratorState.__init__ = init


def record_sharding() -> None:
    """After each run's setup, write what the student became (sharding kind, local parameter share)."""
    from distill_doctor.train.distributed import sharding_of
    from distill_doctor.train.engine import Run

    original = Run.start.__func__

    def start(cls, cfg, **kwargs):
        run = original(cls, cfg, **kwargs)
        params = list(run.student.parameters())
        local = sum(_local_numel(p) for p in params)
        full = sum(getattr(p, "ds_numel", p.numel()) for p in params)
        check = {"sharding": sharding_of(run.accelerator).value, "local_share": local / full}
        path = Path(cfg.output_dir) / f"fsdp_check.rank{run.accelerator.process_index}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(check), encoding="utf-8")
        return run

    Run.start = classmethod(start)


def _local_numel(param) -> int:
    """Elements this process holds: an FSDP2 DTensor's local shard, a ZeRO-3 partition, or all."""
    if hasattr(param, "to_local"):
        return param.to_local().numel()
    if hasattr(param, "ds_tensor"):
        return param.ds_tensor.numel()
    return param.numel()


def main(jobs_file: str) -> None:
    from distill_doctor.errors import InputError
    from distill_doctor.train import run_training

    torch.set_num_threads(1)
    select_sharding_on_cpu()
    record_sharding()
    for job in json.loads(Path(jobs_file).read_text(encoding="utf-8")):
        try:
            run_training(job["method"], job["fields"])
        except InputError as err:  # a refusal the test expects: record it where the run would have been
            if not job.get("refusal"):
                raise
            if PartialState().is_main_process:  # a slower process must not find this file there
                out = Path(job["fields"]["output_dir"])
                out.mkdir(parents=True, exist_ok=True)
                (out / "refused.json").write_text(json.dumps({"field": err.field, "message": str(err)}))
    exit_without_teardown()


def exit_without_teardown() -> None:
    """End a worker whose jobs have all finished and written their files: a barrier, then ``os._exit(0)``.

    Tearing gloo down (``destroy_process_group`` or interpreter shutdown) now and then destroyed a
    gloo thread while it was joinable ("terminate called without an active exception", SIGABRT, exit
    -6) after every job had finished: 1 launch in about 10 here, seen with FSDP2 and ZeRO-3. The
    results were complete; the abort only failed the launch. ``os._exit`` runs no destructors."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])

"""Run training jobs under accelerate's FSDP2 on CPU processes (gloo); launched by the FSDP tests.

    ACCELERATE_USE_CPU=true accelerate launch --config_file fsdp_cpu.yaml tests/fsdp_cpu_worker.py jobs.json

``jobs.json`` is a list of ``{"method": ..., "fields": {...}}`` run one after the other in the
same processes (the imports are paid once). accelerate 1.16 selects FSDP only on accelerator
devices: with ``use_cpu`` the same config silently becomes plain data parallelism
(``MULTI_CPU``). torch's FSDP2 itself runs on CPU over gloo, so this worker flips the state to
FSDP after accelerate has built it from the config; everything else (``fully_shard`` through
``Accelerator.prepare``, ``no_sync``, gradient clipping, sharded ``save_state``/``load_state``,
the full state dict of the final save) is accelerate's own FSDP2 code. Each job writes
``fsdp_check.rank<N>.json`` into its output directory: the sharding seen and the share of the
student's parameters this process holds, so a test can tell FSDP from a silent fallback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType


def select_fsdp_on_cpu() -> None:
    original = AcceleratorState.__init__

    @functools.wraps(original)
    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = init


def record_sharding() -> None:
    """After each run's setup, write what the student became (sharding kind, local parameter share)."""
    from distill_doctor.train.distributed import sharding_of
    from distill_doctor.train.engine import Run

    original = Run.start.__func__

    def start(cls, cfg, **kwargs):
        run = original(cls, cfg, **kwargs)
        local = sum(getattr(p, "to_local", lambda p=p: p)().numel() for p in run.student.parameters())
        full = sum(p.numel() for p in run.student.parameters())
        check = {"sharding": sharding_of(run.accelerator).value, "local_share": local / full}
        path = Path(cfg.output_dir) / f"fsdp_check.rank{run.accelerator.process_index}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(check), encoding="utf-8")
        return run

    Run.start = classmethod(start)


def main(jobs_file: str) -> None:
    from distill_doctor.train import run_training

    torch.set_num_threads(1)
    select_fsdp_on_cpu()
    record_sharding()
    for job in json.loads(Path(jobs_file).read_text(encoding="utf-8")):
        run_training(job["method"], job["fields"])


if __name__ == "__main__":
    main(sys.argv[1])

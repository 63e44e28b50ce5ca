"""Sampling from a sharded student (FSDP2): gather its parameters once per optimizer step.

Under FSDP2 (and ZeRO-3) each process holds 1/N of every student parameter; a forward all-gathers a
layer's parameters, uses them and frees them again, so every forward is a collective that all
processes must run together. On-policy sampling runs up to ``max_new_tokens`` forwards and the
processes' completions end at different lengths. There are two ways to sample:

* lockstep (HF ``generate(..., synced_gpus=True)``): a process that is done keeps running dummy
  forwards until all are done, and every decoding step all-gathers every layer: about
  ``max_new_tokens`` x the model's bytes of communication per sampling pass.
* gather once (what :func:`full_student` does): all-gather the full parameters before sampling
  and keep them until sampling is over, so the decoding loop has no collective at all and each
  process stops at its own length; then free them. Communication: one model's bytes per
  optimizer step (what one training forward costs anyway). Memory: the full parameters in the
  compute dtype (2 bytes per parameter in bf16) on every process while sampling: what DDP holds
  all the time, and small next to the sharded training state that FSDP exists to split
  (fp32 weights, gradients and AdamW moments, 16 bytes per parameter).

The gathered parameters are the same values a training forward sees, so sampling gives the same
tokens as on one process. Every process must enter :func:`full_student` together (it is a
collective): the methods enter it once per optimizer step, decided from the config alone.
"""

from __future__ import annotations

import contextlib
import enum

from distill_doctor.errors import InputError


class Sharding(enum.Enum):
    NONE = "none"  # one process, DDP, ZeRO-1/2: every process holds the full parameters
    FSDP1 = "fsdp1"
    FSDP2 = "fsdp2"
    ZERO3 = "zero3"


def sharding_of(accelerator) -> Sharding:
    """How the accelerator shards the student's parameters."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return Sharding.FSDP2 if accelerator.state.fsdp_plugin.fsdp_version == 2 else Sharding.FSDP1
    if kind == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
        return Sharding.ZERO3
    return Sharding.NONE


def check_can_sample(accelerator) -> None:
    """Refuse sharding schemes the student cannot sample under (before the first step, on every process)."""
    kind = sharding_of(accelerator)
    if kind is Sharding.FSDP1:
        raise InputError(
            "gkd and skd sample from the student, which needs FSDP2 under FSDP: set fsdp_version: 2 "
            "in the accelerate config",
            field="fsdp_version",
        )
    if kind is Sharding.ZERO3:
        raise InputError(
            "gkd and skd cannot sample from a ZeRO-3 student yet (see docs/training.md, Multi-GPU): "
            "use FSDP2 (fsdp_version: 2) or ZeRO-2",
            field="zero_stage",
        )


@contextlib.contextmanager
def full_student(accelerator, model):
    """Yield a module with the student's full parameters to sample from; a collective under FSDP2/ZeRO-3."""
    kind = sharding_of(accelerator)
    if kind is Sharding.FSDP2:
        with _fsdp2_unsharded(model, accelerator.state.fsdp_plugin.reshard_after_forward):
            yield model
    else:
        check_can_sample(accelerator)
        yield accelerator.unwrap_model(model)


@contextlib.contextmanager
def _fsdp2_unsharded(model, reshard_after_forward: bool):
    """All-gather every FSDP2 unit of ``model`` and keep it gathered through forwards; reshard after.

    ``set_reshard_after_forward(False)`` is FSDP2's documented switch for evaluation forwards: the
    pre-forward all-gather is then a no-op (already unsharded) and the post-forward frees nothing.
    Afterwards the units get back the plugin's setting, and the root its FSDP2 default (no
    reshard after forward: the training forward's output head is used right after it).
    """
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    handles = [unit.unshard(async_op=True) for unit in units]  # issue all, then wait: overlapped
    for handle in handles:
        if handle is not None:
            handle.wait()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(bool(reshard_after_forward), recurse=False)
        if isinstance(model, FSDPModule):
            model.set_reshard_after_forward(False, recurse=False)

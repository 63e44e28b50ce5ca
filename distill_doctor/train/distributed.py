"""Sampling from a sharded student (FSDP2, DeepSpeed ZeRO-3): gather its parameters once per step.

Under FSDP2 and ZeRO-3 each process holds 1/N of every student parameter; a forward all-gathers a
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


def process_note(accelerator) -> str:
    """How the run is spread over processes, for the start-up line; says so when accelerate dropped sharding.

    accelerate selects FSDP and DeepSpeed only on accelerator devices: on CPU processes
    (``use_cpu: true``) an FSDP or DeepSpeed config silently runs plain data parallelism.
    """
    import os

    from accelerate.utils import DistributedType

    n = accelerator.num_processes
    if n == 1:
        return ""
    kind = sharding_of(accelerator)
    name = {
        Sharding.FSDP1: "FSDP1",
        Sharding.FSDP2: "FSDP2",
        Sharding.ZERO3: "DeepSpeed ZeRO-3",
    }.get(kind, "DeepSpeed" if accelerator.distributed_type == DistributedType.DEEPSPEED else "data parallel")
    note = f", {name} over {n} processes"
    asked = [k for k in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{k}", "").lower() == "true"]
    if asked and accelerator.distributed_type == DistributedType.MULTI_CPU:
        note += (
            f" (the accelerate config asks for {asked[0]}, which accelerate does not apply to CPU processes)"
        )
    return note


def configure_deepspeed(accelerator, batch_size: int) -> None:
    """Fill what DeepSpeed needs and our loop cannot give it through a dataloader (none is prepared).

    accelerate takes the micro-batch size from a prepared dataloader or, failing that, from
    ``train_micro_batch_size_per_gpu`` in the DeepSpeed config (a config without it is refused at
    ``prepare``). Under ZeRO-3 the final save needs the full weights gathered from the partitions
    (``stage3_gather_16bit_weights_on_model_save``; despite the name it gathers the module's dtype).
    """
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = batch_size  # our loop's micro-batch, whatever the file said
    if plugin.zero_stage == 3:
        ds.setdefault("zero_optimization", {})["stage3_gather_16bit_weights_on_model_save"] = True


@contextlib.contextmanager
def replicated_loading(accelerator):
    """Load a model every process keeps whole (the teacher) outside ZeRO-3's ``zero.Init``.

    Under a ZeRO-3 config accelerate registers it with transformers, whose ``from_pretrained``
    then partitions every model it loads (whatever ``zero3_init_flag`` says). The teacher is never
    given to DeepSpeed, so a partitioned teacher would have empty weights: unregister meanwhile.
    """
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3:
        yield
        return
    from transformers.integrations import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if getattr(plugin, "dschf", None) is not None:
            set_hf_deepspeed_config(plugin.dschf)


def check_supported(accelerator, cfg) -> None:
    """Refuse, before any step, what a sharding scheme cannot run (the same on every process).

    * On-policy sampling under FSDP1: its forward cannot run inside ``summon_full_params``;
      FSDP2 is the supported path.
    * ``loss.chunked`` under ZeRO-3: the chunked loss multiplies the output head's weight outside
      the model's forward, where ZeRO-3 has partitioned it away. (Under FSDP2 it works: the root
      unit, which holds the head, stays gathered from its forward to its backward.)
    """
    kind = sharding_of(accelerator)
    samples = cfg.method == "skd" or (cfg.method == "gkd" and cfg.gkd.lmbda > 0)
    if kind is Sharding.FSDP1 and samples:
        raise InputError(
            f"{cfg.method} samples from the student, which under FSDP needs FSDP2: set fsdp_version: 2 "
            "in the accelerate config",
            field="method",
        )
    if kind is Sharding.ZERO3 and cfg.loss.chunked:
        raise InputError(
            "the chunked loss needs the whole output head, which ZeRO-3 partitions: set "
            "loss.chunked: false, or use FSDP2 or ZeRO-2",
            field="loss.chunked",
        )


@contextlib.contextmanager
def full_student(accelerator, model):
    """Yield a module with the student's full parameters to sample from; a collective under FSDP2/ZeRO-3."""
    kind = sharding_of(accelerator)
    if kind is Sharding.FSDP2:
        with _fsdp2_unsharded(model, accelerator.state.fsdp_plugin.reshard_after_forward):
            yield model
    elif kind is Sharding.ZERO3:
        with _zero3_gathered(model):
            yield accelerator.unwrap_model(model)
    elif kind is Sharding.FSDP1:
        raise InputError(
            "sampling from an FSDP1 student is not supported: use fsdp_version: 2", field="method"
        )
    else:
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


@contextlib.contextmanager
def _zero3_gathered(engine):
    """Gather every ZeRO-3 partition for the duration, as TRL's ``unwrap_model_for_generation`` does.

    The engine's per-module fetch/release hooks are removed meanwhile (with them each forward would
    still fetch and release parameters, a collective per layer and step), then registered again;
    ``GatheredParameters`` without a modifier rank repartitions without writing anything back.
    """
    import deepspeed

    offload = engine.optimizer.parameter_offload
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params):
        for param in params:
            param.ds_active_sub_modules.clear()
        for hook in (*offload.forward_hooks, *offload.backward_hooks):
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield
        finally:
            offload._register_deepspeed_module(offload.module)


# ----------------------------------------------------------------------------- agreeing across processes


def from_main_process(value, num_processes: int):
    """``value`` as the main process (rank 0) has it, on every process (a collective; pickled objects).

    Used where only the main process can know something the others need (the port of the engine it
    started, or why it could not start it)."""
    if num_processes == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def first_failure(message: str | None, num_processes: int) -> str | None:
    """Every process says what went wrong on it (None: nothing); all get the lowest-ranked failure.

    A collective every process must enter, failed or not: a process that raised alone would leave
    the others waiting in the next collective until the launcher's timeout. After it, either every
    process goes on or every process raises the same error."""
    if num_processes == 1:
        return message
    import torch.distributed as dist

    messages: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(messages, message)
    return next((m for m in messages if m is not None), None)

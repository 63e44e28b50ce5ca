"""One vLLM engine for all processes of a multi-process run (DDP, FSDP2, ZeRO-3): how the processes agree.

The sampler itself is ``vllm_engine.SharedSampler``; this module holds what keeps the processes in step.

* **Start.** The main process (rank 0) owns the engine: it starts it (``vllm_mode: server``, or
  ``colocate``, which under several processes is also an HTTP server on 127.0.0.1: the pipe of a
  colocated child reaches one process only) or connects to the one at ``vllm_server_port``. The
  others wait in a broadcast that carries its address (or why it could not start) and then speak
  HTTP to it themselves; only the main process ever stops it.
* **Sampling.** Each process sends its own prompts, with seeds ``base + i * processes + rank``
  (:func:`vllm_engine.prompt_seeds`): distinct across processes, reproducible, checkpointed.
  Sampling needs no collective, so processes whose completions end at different lengths never wait
  for each other inside it.
* **Weight push.** After every ``vllm_sync_every`` optimizer steps every process takes part in
  gathering the full state dict (FSDP2 ``get_model_state_dict(full_state_dict, cpu_offload)``, the
  ZeRO-3 16-bit consolidation, both through ``Accelerator.get_state_dict``; under DDP and ZeRO-1/2
  every process already holds it), the main process writes it and has the engine load it, and
  every process then waits for the outcome: nobody samples from stale weights, and the lag stays
  exactly what ``engine_weights_lag`` records.
* **Failures.** Start, push and each step's sampling end in an exchange of what failed
  (:func:`distributed.first_failure`): when the engine dies, every process raises the same
  :class:`EngineError` in the same step (exit 2, the last good checkpoint kept) instead of one
  process raising while the others wait in the next collective until the launcher's timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from distill_doctor.errors import InputError
from distill_doctor.train.distributed import first_failure, from_main_process
from distill_doctor.train.vllm_client import EngineError, HttpTransport

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_reachable(mode: str, host: str, num_processes: int, local_processes: int) -> None:
    """Refuse an engine address that processes on other machines cannot reach (the same on every process)."""
    if local_processes >= num_processes:
        return
    if mode == "colocate":
        raise InputError(
            f"colocate serves the processes of one machine, but this run spans {num_processes} processes "
            f"with {local_processes} per machine: set vllm_mode: server and vllm_server_host to an "
            "address of the main process's machine that every machine reaches",
            field="vllm_mode",
        )
    if host in LOOPBACK:
        raise InputError(
            f"{host} reaches this machine only, but the run spans {num_processes} processes with "
            f"{local_processes} per machine: set it to an address of the engine's machine that every "
            "machine reaches",
            field="vllm_server_host",
        )


def shared_transport(
    start: Callable[[], HttpTransport], *, is_main: bool, num_processes: int
) -> HttpTransport:
    """The main process runs ``start`` (start or connect to the engine, wait until it answers); the
    others learn its address from a broadcast and connect to it. A failure raises on every process."""
    transport: HttpTransport | None = None
    address, error = None, None
    if is_main:
        try:
            transport = start()
            address = transport.base_url
        except EngineError as err:
            error = str(err)
    address, error = from_main_process((address, error), num_processes)
    if error is not None:
        raise EngineError(error)
    if transport is not None:
        return transport
    return HttpTransport(address, timeout=600.0)  # the main process's server; never stopped from here


@contextmanager
def failing_together(num_processes: int) -> Iterator[None]:
    """Run the body on every process, then exchange failures: an :class:`EngineError` on any raises
    the lowest-ranked one's message on all (a collective, entered by every process), as the same kind
    of error (its ``role``: the generation engine's or a served teacher's, named in the one line)."""
    message = None
    try:
        yield
    except EngineError as err:
        message = f"{err.role}{ROLE_END}{err}"
    message = first_failure(message, num_processes)
    if message is not None:
        role, _, text = message.partition(ROLE_END)
        raise error_of_role(role)(text)


ROLE_END = "\x00"  # between an error's role and its message in the exchange


def error_of_role(role: str) -> type[EngineError]:
    """The :class:`EngineError` class (itself or a subclass, e.g. ``vllm_teacher``'s) with this role."""
    classes = [EngineError]
    for cls in classes:  # grows while walked: every subclass, at any depth
        classes.extend(cls.__subclasses__())
    return next((cls for cls in classes if cls.role == role), EngineError)

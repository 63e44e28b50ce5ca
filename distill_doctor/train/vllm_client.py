"""Talking to the vLLM engine process (``vllm_server.py`` in ``.venv-vllm``): requests, transports, errors.

Standard library only. The engine is a separate process because vLLM's CPU wheel and distill-doctor
pin different transformers versions; it is reached either over HTTP (server mode: our own child
on 127.0.0.1 at a free port, or a server someone started at ``vllm_server_host:vllm_server_port``)
or over a stdin/stdout pipe (colocated mode: a child that lives and dies with the trainer). Any
way the engine can fail (refused connection, closed pipe, a process that exited, an error reply)
becomes one :class:`EngineError` with a one-line message.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

SERVER_SCRIPT = Path(__file__).with_name("vllm_server.py")
VENV_NAME = ".venv-vllm"
UNAVAILABLE_MARK = (
    ".distill-doctor-unavailable"  # written by scripts/setup_vllm.sh when pip could not get vLLM
)
OK_MARK = ".distill-doctor-ok"  # written by scripts/setup_vllm.sh once vLLM imports in .venv-vllm
GET_ROUTES = ("/health", "/v1/models")  # read-only routes, asked by GET


class EngineError(RuntimeError):
    """The generation engine cannot answer (it died, refused, or replied with an error)."""

    role = "generation engine"  # what failed, in the one-line message (``vllm_teacher`` has its own)


@dataclass(frozen=True)
class CompletionRequest:
    """One batch of prompts (token ids) to complete, in the engine's sampling terms."""

    prompts: list[list[int]]
    max_tokens: int
    temperature: float
    stop_token_ids: list[int]
    seeds: list[int] | None = None  # one per prompt; None = greedy needs none
    allowed_vocab: int | None = (
        None  # sample only ids < this (the tokenizer's size) when the model has more rows
    )

    def to_json(self) -> dict[str, Any]:
        """The OpenAI completions body (token ids in), plus vLLM's sampling extras.

        ``ignore_eos`` because the stop ids are exactly ``stop_token_ids`` (what HF generate stops at
        here), not whatever EOS the engine found in a generation config."""
        body: dict[str, Any] = {
            "prompt": self.prompts,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stop_token_ids": self.stop_token_ids,
            "ignore_eos": True,
            "return_token_ids": True,  # vLLM's OpenAI server sends ``token_ids`` only when asked
        }
        if self.seeds is not None and self.temperature > 0:
            body["seed"] = self.seeds
        if self.allowed_vocab is not None:
            body["allowed_token_ids"] = list(range(self.allowed_vocab))
        return body


def parse_completions(reply: dict[str, Any], request: CompletionRequest) -> list[list[int]]:
    """The completions' token ids, in prompt order; the stop token kept (as HF sampling keeps EOS)."""
    choices = reply.get("choices")
    if not isinstance(choices, list) or len(choices) != len(request.prompts):
        got = len(choices) if isinstance(choices, list) else "no"
        raise EngineError(f"the engine answered {got} completions for {len(request.prompts)} prompts")
    out: list[list[int]] = [[] for _ in choices]
    stops = set(request.stop_token_ids)
    for choice in choices:
        ids = choice.get("token_ids")
        index = choice.get("index")
        if not isinstance(ids, list) or not isinstance(index, int) or not 0 <= index < len(out):
            raise EngineError("the engine's reply has a choice without token_ids or index")
        ids = [int(t) for t in ids][: request.max_tokens]
        cut = next((i for i, t in enumerate(ids) if t in stops), None)
        out[index] = ids if cut is None else ids[: cut + 1]
    return out


def error_message(status: int, payload: bytes | str) -> str:
    """One line for an error reply: the engine's own message when it sent the OpenAI error shape."""
    text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text.strip().splitlines()[0] if text.strip() else "(empty reply)"
    return f"the vLLM engine answered HTTP {status}: {message}"


class Transport(Protocol):
    def call(self, route: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class HttpTransport:
    """JSON over HTTP to ``base_url`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, base_url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
        self.base_url, self.timeout, self.process = base_url.rstrip("/"), timeout, process

    def call(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON (GET for the read-only routes); an empty 200 reply is ``{}``: vLLM's
        own OpenAI server (``vllm serve``) answers ``/health`` with an empty body."""
        data = json.dumps(body).encode() if route not in GET_ROUTES else None
        request = urllib.request.Request(
            self.base_url + route, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
                return json.loads(payload) if payload.strip() else {}
        except urllib.error.HTTPError as err:
            raise EngineError(error_message(err.code, err.read())) from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise EngineError(
                f"the vLLM server at {self.base_url} is not answering ({reason}){_exit_note(self.process)}"
            ) from None

    def close(self) -> None:
        if self.process is not None:
            try:
                self.call("/shutdown", {})
            except EngineError:
                pass
            _stop(self.process)


class PipeTransport:
    """JSON lines over the stdin/stdout of a child engine (colocated mode)."""

    def __init__(self, process: subprocess.Popen, timeout: float = 600.0) -> None:
        self.process, self.timeout = process, timeout
        assert process.stdin is not None and process.stdout is not None
        self.stdin: IO[str] = process.stdin
        self.stdout: IO[str] = process.stdout

    def read(self, timeout: float | None = None) -> dict[str, Any]:
        """The next reply line (one request is in flight at a time, so nothing sits in the read buffer)."""
        wait = self.timeout if timeout is None else timeout
        if not select.select([self.stdout], [], [], wait)[0]:
            raise EngineError(
                f"the vLLM engine process did not answer within {wait:g} s{_exit_note(self.process)}"
            )
        line = self.stdout.readline()
        if not line:
            raise EngineError(f"the vLLM engine process stopped answering{_exit_note(self.process)}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise EngineError(f"the vLLM engine failed: {reply.get('error')}")
        return reply["result"]

    def call(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            self.stdin.write(json.dumps({"route": route, "body": body}) + "\n")
            self.stdin.flush()
        except (BrokenPipeError, OSError):
            raise EngineError(f"the vLLM engine process is gone{_exit_note(self.process)}") from None
        return self.read()

    def close(self) -> None:
        try:
            self.stdin.write(json.dumps({"route": "/shutdown"}) + "\n")
            self.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        _stop(self.process)


def _exit_note(process: subprocess.Popen | None) -> str:
    if process is None:
        return ""
    code = process.poll()
    return "" if code is None else f"; the engine process exited with code {code}"


def _stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ----------------------------------------------------------------------------- finding and starting


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def engine_python() -> Path:
    """The interpreter with vLLM: ``$DISTILL_DOCTOR_VLLM_PYTHON`` or ``.venv-vllm/bin/python`` of this checkout."""
    override = os.environ.get("DISTILL_DOCTOR_VLLM_PYTHON")
    return Path(override) if override else repo_root() / VENV_NAME / "bin" / "python"


def unavailable_reason() -> str | None:
    """Why the engine cannot start here (None when it can); for errors and test skips.

    ``.venv-vllm`` counts once ``scripts/setup_vllm.sh`` checked that vLLM imports in it (its
    ``.distill-doctor-ok`` mark); ``$DISTILL_DOCTOR_VLLM_PYTHON`` counts when that file exists."""
    venv = repo_root() / VENV_NAME
    override = os.environ.get("DISTILL_DOCTOR_VLLM_PYTHON")
    if Path(override).exists() if override else (venv / OK_MARK).exists() and engine_python().exists():
        return None
    mark = venv / UNAVAILABLE_MARK
    why = mark.read_text().strip() if mark.exists() else "not set up"
    return f"vLLM engine unavailable ({why}): run `bash scripts/setup_vllm.sh` (it builds {VENV_NAME})"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class EngineSpec:
    """How to start an engine on a model directory."""

    model: str
    dtype: str = "float32"
    max_model_len: int = 2048
    seed: int = 0
    gpu_memory_utilization: float = 0.3
    start_timeout: float = 240.0
    max_logprobs: int | None = None  # the largest prompt_logprobs a request may ask for (None: vLLM's 20)

    def arguments(self) -> list[str]:
        extra = [] if self.max_logprobs is None else ["--max-logprobs", str(self.max_logprobs)]
        return [
            str(SERVER_SCRIPT),
            "--model", self.model,
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
            "--seed", str(self.seed),
            "--gpu-memory-utilization", str(self.gpu_memory_utilization),
            *extra,
        ]  # fmt: skip


def _environment() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH"
    }  # the other venv's packages must not leak in
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return env


def _popen(args: list[str], *, log: IO | None, stdio: bool) -> subprocess.Popen:
    reason = unavailable_reason()
    if reason:
        raise EngineError(reason)
    return subprocess.Popen(
        [str(engine_python()), *args],
        stdin=subprocess.PIPE if stdio else subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdio else (log or subprocess.DEVNULL),
        stderr=log or subprocess.DEVNULL,
        text=True,
        env=_environment(),
        cwd=str(repo_root()),
    )


def start_colocated(spec: EngineSpec, log: IO | None = None) -> PipeTransport:
    """A child engine on a pipe; returns once the model is loaded (or raises EngineError)."""
    process = _popen([*spec.arguments(), "--stdio"], log=log, stdio=True)
    transport = PipeTransport(process)
    try:
        transport.read(
            timeout=spec.start_timeout
        )  # the "ready" line, after the model loaded; EOF if it failed
    except EngineError:
        process.kill()
        process.wait()
        raise
    return transport


def start_server(
    spec: EngineSpec, host: str = "127.0.0.1", port: int | None = None, log: IO | None = None
) -> HttpTransport:
    """A child HTTP server on ``host`` (a free port unless given); returns once ``/health`` answers."""
    port = port or free_port(host)
    args = [*spec.arguments(), "--host", host, "--port", str(port), "--parent-pid", str(os.getpid())]
    process = _popen(args, log=log, stdio=False)
    transport = HttpTransport(f"http://{host}:{port}", timeout=600.0, process=process)
    wait_ready(transport, spec.start_timeout)
    return transport


def wait_ready(transport: HttpTransport, timeout: float) -> dict[str, Any]:
    """Poll ``/health`` until it answers; raise EngineError when the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return HttpTransport(transport.base_url, timeout=5.0).call("/health", {})
        except EngineError as err:
            process = transport.process
            if process is not None and process.poll() is not None:
                raise EngineError(f"the vLLM server did not start{_exit_note(process)}") from None
            if time.monotonic() > deadline:
                if process is not None:
                    process.kill()
                raise EngineError(f"the vLLM server did not answer within {timeout:g} s ({err})") from None
            time.sleep(0.5)


def connect(host: str, port: int, timeout: float) -> HttpTransport:
    """A server someone else started (``vllm_server.py --port PORT``); not stopped by the trainer."""
    transport = HttpTransport(f"http://{host}:{port}", timeout=600.0)
    wait_ready(transport, timeout)
    return transport


def log_stream() -> IO:
    return sys.stderr

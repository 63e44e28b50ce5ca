"""The trusted test process: ``python -S -I harness.py WIRE_PY JOB_JSON`` (started by ``sandbox.run_tests``).

It runs the item's own code (the prompt, when it is Python, for helpers such as HumanEval's
``poly``; then ``tests``) and calls ``check(candidate)``, where ``candidate`` is a proxy: each
call is sent as plain data to the candidate's sandboxed process and the answer comes back
as plain data (``wire.py``). No code of the candidate ever runs here, so equality tricks,
trace hooks or a forged result channel in the candidate cannot change what this process
decides. Its verdict goes to the parent on a pipe the candidate never holds, as one JSON
object: ``{"status": "pass"}`` or ``{"status": "fail", "exc": TYPE, "message": TEXT}``.

An exception the candidate raised is re-raised here as the built-in exception of that name
(so tests that expect ``ValueError`` still work), except ``StopIteration`` and
``StopAsyncIteration`` (which would end a test's loop early) and non-built-in names: those
become ``CandidateError``. This file uses the standard library only.
"""

import builtins
import os
import resource
import sys

_NO_MAP = (StopIteration, StopAsyncIteration)
_BUILTIN_ERRORS = {
    name: cls
    for name, cls in vars(builtins).items()
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, _NO_MAP)
}
_RESERVED_KINDS = frozenset({"pass", "timeout"})


class CandidateError(Exception):
    """The candidate failed: its process ended, its answer was not plain data, or a non-built-in raise."""

    def __init__(self, kind: str, message: str):
        super().__init__(message or kind)
        self.kind = kind


def _candidate_exception(kind, message) -> Exception:
    if type(kind) is not str or type(message) is not str:
        return CandidateError("WireError", "a malformed error report from the candidate")
    kind, message = kind[:60], message[:300]
    if not kind.isidentifier() or kind in _RESERVED_KINDS:
        return CandidateError("CandidateError", message)
    cls = _BUILTIN_ERRORS.get(kind)
    if cls is None:
        return CandidateError(kind, message)
    try:
        return cls(f"(raised by the candidate) {message}")
    except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError needs five arguments
        return CandidateError(kind, message)


class Candidate:
    """Stands for the candidate's function: calls go over the pipe, answers are plain data."""

    def __init__(self, wire, entry: str, requests: int, replies: int):
        self._wire, self._requests, self._replies = wire, requests, replies
        self.__name__ = self.__qualname__ = entry
        self._ready = False

    def _read(self):
        try:
            return self._wire.read_frame(self._replies)
        except EOFError:
            raise CandidateError(
                "CandidateExited", "the candidate's process ended without answering"
            ) from None
        except self._wire.WireError as err:
            raise CandidateError("NotPlainData", f"the candidate's answer is not plain data: {err}") from None

    def start(self) -> None:
        """Wait until the candidate's program is defined; raise what defining it raised."""
        if self._ready:
            return
        first = self._read()
        if type(first) is list and first == ["ready"]:
            self._ready = True
            return
        if type(first) is list and len(first) == 3 and first[0] == "E":
            raise _candidate_exception(first[1], first[2])
        raise CandidateError("WireError", "a malformed first message from the candidate")

    def __call__(self, *args, **kwargs):
        self.start()
        try:
            call = ["C", self._wire.encode(list(args)), self._wire.encode(kwargs)]
        except self._wire.NotPlainData as err:
            raise TypeError(f"the tests passed an argument that is not plain data: {err}") from None
        try:
            self._wire.write_frame(self._requests, call)
        except (BrokenPipeError, OSError):
            raise CandidateError("CandidateExited", "the candidate's process ended") from None
        reply = self._read()
        if type(reply) is list and len(reply) == 2 and reply[0] == "R":
            return reply[1]
        if type(reply) is list and len(reply) == 3 and reply[0] == "E":
            raise _candidate_exception(reply[1], reply[2])
        raise CandidateError("WireError", "a malformed answer from the candidate")


def _load_wire(path: str):
    """``wire.py`` as a module, without ``importlib.util`` (start-up time)."""
    module = type(sys)("dd_wire")
    with open(path, encoding="utf-8") as fh:
        exec(compile(fh.read(), path, "exec"), module.__dict__)
    return module


def _print_traceback(err: BaseException) -> None:
    """File and line of each frame, then the error (``traceback`` costs 17 ms to import)."""
    lines = ["Traceback (most recent call last):"]
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        tb = tb.tb_next
    lines.append(f"{type(err).__name__}: {err}")
    print("\n".join(lines), file=sys.stderr)


def _run(job: dict, candidate: Candidate) -> dict:
    entry = job["entry"]
    namespace: dict = {"__name__": "__test__", "__builtins__": builtins}
    try:
        prelude = compile(job["prelude"], "prompt.py", "exec") if job.get("prelude") else None
    except SyntaxError:
        prelude = None  # a prompt in prose: nothing of it to run
    try:
        if prelude is not None:
            exec(prelude, namespace)
        namespace[entry] = candidate
        exec(compile(job["tests"], "tests.py", "exec"), namespace)
        candidate.start()
        namespace["check"](candidate)
    except BaseException as err:  # noqa: BLE001 - any failure of the tests is the candidate's fail
        kind = err.kind if isinstance(err, CandidateError) else type(err).__name__
        try:
            message = " ".join(str(err).split())[:300]
        except Exception:  # noqa: BLE001
            message = ""
        _print_traceback(err)
        return {"status": "fail", "exc": kind, "message": message}
    return {"status": "pass"}


def main() -> None:
    wire = _load_wire(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8", errors="surrogateescape") as fh:
        job = wire.json_loads(fh.read())
    limit = int(job["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    requests, replies, result = job["fds"]
    outcome = _run(job, Candidate(wire, job["entry"], requests, replies))
    os.close(requests)  # the candidate sees end of input and stops
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(result, wire.json_dumps(outcome).encode("ascii"))
    os._exit(0)


if __name__ == "__main__":
    main()

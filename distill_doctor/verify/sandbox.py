"""Run an untrusted Python program in a contained child process and report how it ended.

Containment, outermost first (see ``containment()`` for what is active on this machine):

- a network namespace with no interfaces (``unshare -n``, or ``unshare -rn`` as a normal
  user where user namespaces are allowed), detected once per process; when neither
  works, the network is blocked by the audit hook alone;
- its own session and process group (``start_new_session``): the whole group is killed
  with SIGKILL on the wall-clock timeout, and after every run;
- a fresh temporary folder as working directory, ``HOME`` and ``TMPDIR``, deleted afterwards;
- a scrubbed environment: only ``PATH``, ``LANG``, ``PYTHONHASHSEED``,
  ``PYTHONDONTWRITEBYTECODE``, ``HOME``, ``TMPDIR`` (no tokens or keys of the parent);
- stdout and stderr go to files capped by ``RLIMIT_FSIZE``; only their tails are read back;
- inside the child, ``sandbox_boot.py`` sets rlimits (address space, CPU, file size, no
  core, no processes) and an audit hook that refuses process creation, sockets, ctypes,
  signals, and file writes outside the work folder (see that file).

This stops the mistakes and accidents of model-written code (loops, bombs, stray writes,
network calls, ``sys.exit``) and keeps the host and the caller alive. It is not a
security boundary against code written to escape a Python sandbox: run untrusted
benchmarks in a container or VM as well when that matters.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BOOTSTRAP = Path(__file__).with_name("sandbox_boot.py")
TAIL_BYTES = 4096


@dataclass(frozen=True)
class SandboxResult:
    """How one sandboxed run ended.

    ``passed``: exit status 0 and the bootstrap reached the end of the program.
    ``signature``: short, comparable failure kind: ``"pass"``, an exception type
    (``"AssertionError"``, ``"SyntaxError"``), ``"timeout"``, ``"memory limit"``,
    ``"output limit"``, ``"CPU limit"``, ``"signal SIGSEGV"``, ``"exit 3"``.
    ``reason``: one human-readable sentence (``"timeout after 10 s"``).
    """

    passed: bool
    returncode: int | None
    reason: str
    stdout_tail: str
    stderr_tail: str
    seconds: float
    signature: str = ""


@functools.lru_cache(maxsize=1)
def _network_prefix() -> tuple[str, ...]:
    """The command prefix that gives the child an empty network namespace, or ``()``."""
    unshare = shutil.which("unshare")
    if unshare is None or os.environ.get("DISTILL_DOCTOR_SANDBOX_NETNS", "1") == "0":
        return ()
    for prefix in ((unshare, "-n", "--"), (unshare, "-r", "-n", "--")):
        try:
            done = subprocess.run(
                [*prefix, sys.executable, "-c", "pass"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=20,
                env=_child_env(tempfile.gettempdir()),
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return prefix
    return ()


def containment() -> dict[str, object]:
    """What contains a sandboxed program on this machine (recorded in reports and benches)."""
    prefix = _network_prefix()
    network = "audit hook only (no network namespace available)"
    if prefix:
        network = "empty network namespace (" + " ".join(["unshare", *prefix[1:-1]]) + ") + audit hook"
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    return {
        "network": network,
        "process_group_kill": True,
        "audit_hook": "blocks fork/exec/subprocess, sockets, ctypes, signals, writes outside the work folder",
        "rlimits": [
            "RLIMIT_AS",
            "RLIMIT_CPU",
            "RLIMIT_FSIZE",
            "RLIMIT_CORE",
            "RLIMIT_NOFILE",
            "RLIMIT_NPROC",
        ],
        "rlimit_nproc_enforced": not root,
        "environment": "scrubbed",
    }


def _child_env(home: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "HOME": home,
        "TMPDIR": home,
    }


def _tail(path: Path, limit: int = TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_result(path: Path) -> tuple[str, str, str]:
    """(status, exception type, message) from the bootstrap's result file; ('', '', '') if absent."""
    try:
        text = path.read_text("utf-8", "replace").strip().splitlines()
    except OSError:
        return "", "", ""
    if not text:
        return "", "", ""
    parts = text[-1].split("\t", 2) + ["", ""]
    return parts[0], parts[1], parts[2]


def _fmt_bytes(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000} MB"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000} kB"
    return f"{n} bytes"


def _classify(
    rc: int | None, timed_out: bool, result: tuple[str, str, str], out_size: int, cap: int, timeout_s: float
) -> tuple[bool, str, str]:
    """(passed, signature, reason)."""
    status, exc, message = result
    if timed_out:
        return False, "timeout", f"timeout after {timeout_s:g} s"
    if out_size >= cap:
        return False, "output limit", f"output over {_fmt_bytes(cap)}"
    if rc == 0 and status == "pass":
        return True, "pass", "passed"
    if rc is not None and rc < 0:
        sig = -rc
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGXCPU:
            return False, "CPU limit", "CPU time limit reached"
        if sig == signal.SIGXFSZ:
            return False, "output limit", f"file size over {_fmt_bytes(cap)}"
        return False, f"signal {name}", f"killed by signal {sig} ({name})"
    if exc == "MemoryError":
        return False, "memory limit", "memory limit (MemoryError)"
    if status == "fail" and exc:
        return False, exc, f"{exc}: {message}" if message else exc
    if rc == 0:
        return False, "exited early", "the program ended before the tests finished"
    return False, f"exit {rc}", f"exited with status {rc}"


def run_python(
    program: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_output_bytes: int = 1_000_000,
) -> SandboxResult:
    """Run ``program`` (Python source) in the sandbox; never raises for anything the program does.

    The run passes when the program finishes without an exception and exits 0.
    ``timeout_s`` is wall-clock time for the whole child; CPU time is capped a second above it.
    """
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dd-sandbox-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        work = root / "work"
        work.mkdir()
        (root / "prog.py").write_text(program, encoding="utf-8", errors="surrogatepass")
        cmd = [
            *_network_prefix(),
            sys.executable,
            "-S",  # no site-packages: the standard library only (and a faster start)
            "-s",  # no user site-packages
            "-P",  # do not put the working folder on sys.path
            str(BOOTSTRAP),
            str(root),
            str(int(memory_mb)),
            str(int(math.ceil(timeout_s)) + 1),
            str(int(max_output_bytes)),
        ]
        timed_out = False
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=work,
                env=_child_env(str(work)),
                start_new_session=True,
                close_fds=True,
            )
            try:
                rc: int | None = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                rc = proc.wait()
            finally:
                _kill_group(proc.pid)  # stray descendants, if any got through
        out_size = max((root / "stdout").stat().st_size, (root / "stderr").stat().st_size)
        passed, signature, reason = _classify(
            rc, timed_out, _read_result(root / "result"), out_size, max_output_bytes, timeout_s
        )
        stdout_tail, stderr_tail = _tail(root / "stdout"), _tail(root / "stderr")
    return SandboxResult(
        passed=passed,
        returncode=rc,
        reason=reason,
        stdout_tail=stdout_tail,
        stderr_tail=stderr_tail,
        seconds=time.perf_counter() - start,
        signature=signature,
    )

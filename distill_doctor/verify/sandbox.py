"""Run untrusted Python in a contained child process and report how it ended.

Two entry points:

- ``run_tests(candidate, entry_point, tests, prelude)``: the verdict of a HumanEval-style
  item. The candidate's program runs alone in the sandbox and only answers calls of
  ``entry_point`` with plain data; the item's tests run in a separate trusted process
  (``harness.py``) that decides pass or fail. Nothing the candidate does in its own process
  can change that decision.
- ``run_python(program)``: a whole program in the sandbox (a stdin/stdout program); the
  result is what this side observes (exit status, signal, output, time). The exception
  type it names is the program's own report, used only to describe a failure.

Containment (``isolation.py`` picks the tier; ``containment()`` says what is active):
bubblewrap namespaces and a read-only root where available, else the Python-level guard
with ``unshare`` namespaces where those work; in both, ``sandbox_boot.py``'s rlimits and
audit hook, a scrubbed environment, stdout/stderr in files capped by ``RLIMIT_FSIZE``,
a wall-clock timeout that kills the process group (and the PID namespace), and a
non-recursive cleanup of the work folder. See the README's threat model.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from distill_doctor.verify import isolation as iso

BOOTSTRAP = Path(__file__).with_name("sandbox_boot.py")
HARNESS = Path(__file__).with_name("harness.py")
WIRE = Path(__file__).with_name("wire.py")
TAIL_BYTES = 4096
WORK_TMPFS_BYTES = 256 * 1024 * 1024


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


def containment() -> dict[str, object]:
    """What contains a sandboxed program on this machine (recorded in reports and benches)."""
    tier = iso.isolation()
    network = "audit hook only (no network namespace available)"
    if tier.name == "bubblewrap":
        network = "empty network namespace (bubblewrap) + audit hook"
    elif tier.unshare:
        network = "empty network namespace (" + " ".join(["unshare", *tier.unshare[1:-1]]) + ") + audit hook"
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    return {
        "isolation": tier.name,
        "isolation_detail": tier.detail,
        "network": network,
        "process_group_kill": True,
        "pid_namespace": tier.name == "bubblewrap" or tier.pid_namespace,
        "tests_process": "separate trusted process; the candidate answers calls with plain data only",
        "audit_hook": "blocks fork/exec/subprocess, sockets, ctypes, signals, gc walks, tracing, links, "
        "writes outside the work folder",
        "rlimits": [
            "RLIMIT_AS",
            "RLIMIT_CPU",
            "RLIMIT_FSIZE",
            "RLIMIT_CORE",
            "RLIMIT_NOFILE",
            "RLIMIT_NPROC",
        ],
        "rlimit_nproc_enforced": not root or tier.name == "bubblewrap",
        "environment": "scrubbed",
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


def _parse_status(text: str) -> tuple[str, str, str]:
    """(status, exception type, message) from the bootstrap's result line; ('', '', '') if absent."""
    lines = text.strip().splitlines()
    if not lines:
        return "", "", ""
    parts = lines[-1].split("\t", 2) + ["", ""]
    return parts[0], parts[1], parts[2]


def _read_pipe(fd: int, limit: int = 65536) -> str:
    """What is in the pipe now (never blocks: a stray descendant may still hold the other end)."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    try:
        while sum(map(len, chunks)) < limit:
            chunk = os.read(fd, limit)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def _fmt_bytes(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000} MB"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000} kB"
    return f"{n} bytes"


def _signal_verdict(rc: int, cap: int) -> tuple[bool, str, str]:
    sig = -rc
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
    if sig == signal.SIGXCPU:
        return False, "CPU limit", "CPU time limit reached"
    if sig == signal.SIGXFSZ:
        return False, "output limit", f"file size over {_fmt_bytes(cap)}"
    return False, f"signal {name}", f"killed by signal {sig} ({name})"


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
        return _signal_verdict(rc, cap)
    if exc == "MemoryError":
        return False, "memory limit", "memory limit (MemoryError)"
    if status == "fail" and exc:
        return False, exc, f"{exc}: {message}" if message else exc
    if rc == 0:
        return False, "exited early", "the program ended before the tests finished"
    return False, f"exit {rc}", f"exited with status {rc}"


@dataclass
class _Box:
    """One run's host folder: the program, the output files and (python-guard) the work folder."""

    root: Path
    tier: iso.Isolation
    marker: str

    @property
    def work(self) -> Path:
        return self.root / "work"

    def command(
        self, cfg: dict, timeout_s: float, memory_mb: int, fsize: int
    ) -> tuple[list[str], str, dict, tuple[int, ...]]:
        """(argv, cwd, env, fds to pass and then close) that start the bootstrap with ``cfg`` in this tier."""
        cfg = {
            **cfg,
            "memory_mb": int(memory_mb),
            "cpu_s": int(math.ceil(timeout_s)) + 1,
            "fsize": int(fsize),
        }
        flags = [
            "-S",
            "-s",
            "-P",
        ]  # no site-packages (stdlib only, faster start), no user site or cwd on path
        if self.tier.name == "bubblewrap":
            files = {"prog.py": self.root / "prog.py", "sandbox_boot.py": BOOTSTRAP, "wire.py": WIRE}
            cfg.update(prog=f"{iso.BOX}/prog.py", work=iso.WORK, drop_uid=iso.drop_uid())
            seccomp = self.tier.seccomp_pipe()
            argv = [*iso.bwrap_args(files, WORK_TMPFS_BYTES, seccomp), iso.python_executable(), *flags]
            boot = [f"{iso.BOX}/sandbox_boot.py", f"{iso.BOX}/wire.py", json.dumps(cfg)]
            fds = (seccomp,) if seccomp is not None else ()
            return [*argv, *boot], str(self.root), iso.child_env(iso.WORK), fds
        self.work.mkdir(exist_ok=True)
        cfg.update(prog=str(self.root / "prog.py"), work=str(self.work), drop_uid=None)
        env = {**iso.child_env(str(self.work)), iso.MARKER: self.marker}
        argv = [*self.tier.unshare, sys.executable, *flags, str(BOOTSTRAP), str(WIRE), json.dumps(cfg)]
        return argv, str(self.work), env, ()

    def exit_status(self, rc: int | None) -> int | None:
        """The program's status: bubblewrap reports a child killed by signal N as 128 + N."""
        if self.tier.name == "bubblewrap" and rc is not None and 128 < rc < 128 + 65:
            return -(rc - 128)
        return rc

    def sweep(self, *pgids: int) -> None:
        """Kill the process groups and, without a PID namespace, every marked descendant."""
        for pgid in pgids:
            _kill_group(pgid)
        if self.tier.name != "bubblewrap" and not self.tier.pid_namespace:
            iso.kill_marked(self.marker)


def _new_box(program: str) -> _Box:
    root = Path(tempfile.mkdtemp(prefix="dd-sandbox-"))
    (root / "prog.py").write_text(program, encoding="utf-8", errors="surrogatepass")
    return _Box(root, iso.isolation(), iso.new_marker())


def _exited_within(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Whether ``proc`` ends within ``timeout_s``, woken the moment it does (a pidfd where
    available: ``Popen.wait(timeout)`` polls with sleeps of up to 50 ms, which cost ~40 ms a run)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=max(timeout_s, 0.0))
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(int(timeout_s * 1000), 0)))
    finally:
        os.close(fd)


def _wait(proc: subprocess.Popen, timeout_s: float) -> tuple[int | None, bool]:
    """(exit status, timed out): kills the process group when ``timeout_s`` passes first."""
    if _exited_within(proc, timeout_s):
        return proc.wait(), False
    _kill_group(proc.pid)
    return proc.wait(), True


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
    box = _new_box(program)
    try:
        result_r, result_w = os.pipe()
        argv, cwd, env, fds = box.command(
            {"mode": "run", "result_fd": result_w}, timeout_s, memory_mb, max_output_bytes
        )
        try:
            with open(box.root / "stdout", "wb") as out, open(box.root / "stderr", "wb") as err:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env,
                    start_new_session=True, pass_fds=(result_w, *fds),
                )  # fmt: skip
        finally:
            for fd in (result_w, *fds):
                os.close(fd)
        try:
            rc, timed_out = _wait(proc, timeout_s)
            rc = box.exit_status(rc)
        finally:
            box.sweep(proc.pid)  # stray descendants, if any got through
        status = _parse_status(_read_pipe(result_r))
        out_size = max((box.root / "stdout").stat().st_size, (box.root / "stderr").stat().st_size)
        passed, signature, reason = _classify(rc, timed_out, status, out_size, max_output_bytes, timeout_s)
        stdout_tail, stderr_tail = _tail(box.root / "stdout"), _tail(box.root / "stderr")
    finally:
        iso.remove_tree(box.root)
    return SandboxResult(
        passed=passed,
        returncode=rc,
        reason=reason,
        stdout_tail=stdout_tail,
        stderr_tail=stderr_tail,
        seconds=time.perf_counter() - start,
        signature=signature,
    )


def _split_verdict(
    outcome: dict, trusted_rc: int | None, candidate_rc: int | None, timed_out: bool,
    out_size: int, cap: int, timeout_s: float,
) -> tuple[bool, str, str]:  # fmt: skip
    """(passed, signature, reason) from the trusted process's report and what this side saw."""
    if timed_out:
        return False, "timeout", f"timeout after {timeout_s:g} s"
    if out_size >= cap:
        return False, "output limit", f"output over {_fmt_bytes(cap)}"
    if trusted_rc == 0 and outcome.get("status") == "pass":
        return True, "pass", "passed"
    exc, message = str(outcome.get("exc", "")), str(outcome.get("message", ""))
    if exc == "CandidateExited" and candidate_rc is not None and candidate_rc < 0:
        return _signal_verdict(candidate_rc, cap)
    if exc == "MemoryError":
        return False, "memory limit", "memory limit (MemoryError)"
    if outcome.get("status") == "fail" and exc:
        return False, exc, f"{exc}: {message}" if message else exc
    return False, "harness error", f"the trusted test process ended without a verdict (status {trusted_rc})"


def _start_split(
    root: Path,
    candidate: tuple[list[str], str, dict, tuple[int, ...]],
    *,
    req: tuple[int, int],
    rep: tuple[int, int],
    res_w: int,
) -> list[subprocess.Popen]:
    """Start the sandboxed candidate (``candidate``: ``_Box.command``'s argv, cwd, env, fds; it reads
    calls on ``req`` and answers on ``rep``) and the trusted test process (``root``/job.json, the
    other ends and ``res_w``); closes this side's copies of every pipe end and fd they were handed."""
    argv, cwd, env, fds = candidate
    (req_r, req_w), (rep_r, rep_w) = req, rep
    procs: list[subprocess.Popen] = []
    try:
        with open(root / "stdout", "wb") as out:
            procs.append(subprocess.Popen(
                argv, stdin=req_r, stdout=rep_w, stderr=out, cwd=cwd, env=env, start_new_session=True,
                pass_fds=fds,
            ))  # fmt: skip
        for fd in (req_r, rep_w, *fds):
            os.close(fd)
        with open(root / "stderr", "wb") as err:
            procs.append(subprocess.Popen(
                [sys.executable, "-S", "-I", str(HARNESS), str(WIRE), str(root / "job.json")],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=str(root),
                env=iso.child_env(str(root)), start_new_session=True, pass_fds=(req_w, rep_r, res_w),
            ))  # fmt: skip
    finally:
        for fd in (req_w, rep_r, res_w):
            os.close(fd)
    return procs


def _end_split(
    box: _Box, procs: list[subprocess.Popen], res_r: int, timeout_s: float
) -> tuple[int | None, bool, dict, int | None]:
    """Wait for the trusted process (``procs[1]``), read its outcome from ``res_r``, then end both
    process groups. Returns (trusted exit status, timed out, outcome, candidate exit status)."""
    try:
        trusted_rc, timed_out = _wait(procs[1], timeout_s)
        try:
            outcome = json.loads(_read_pipe(res_r) or "{}")
        except ValueError:
            outcome = {}
        outcome = outcome if isinstance(outcome, dict) else {}
        # how the candidate ended matters only when it ended before answering
        grace = 0.5 if outcome.get("exc") == "CandidateExited" and not timed_out else 0.0
        candidate_rc = box.exit_status(_wait(procs[0], grace)[0] if grace else procs[0].poll())
    finally:
        box.sweep(*(p.pid for p in procs))
        for p in procs:
            p.wait()
    return trusted_rc, timed_out, outcome, candidate_rc


def run_tests(
    candidate: str,
    entry_point: str,
    tests: str,
    *,
    prelude: str = "",
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_output_bytes: int = 1_000_000,
) -> SandboxResult:
    """Judge ``candidate`` (Python source defining ``entry_point``) with ``tests`` (``check(candidate)``).

    ``prelude`` (the item's prompt) runs on the trusted side first when it is Python, for
    helpers the tests use. The candidate runs sandboxed and serves calls; the tests run in
    the trusted process; the verdict is the trusted process's. ``stdout_tail`` is the
    candidate's output, ``stderr_tail`` the trusted side's traceback.
    """
    start = time.perf_counter()
    box = _new_box(candidate)
    try:
        argv, cwd, env, fds = box.command(
            {"mode": "serve", "entry": entry_point}, timeout_s, memory_mb, max_output_bytes
        )
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        res_r, res_w = os.pipe()
        job = {
            "entry": entry_point, "tests": tests, "prelude": prelude,
            "fds": [req_w, rep_r, res_w], "memory_mb": max(int(memory_mb), 512),
        }  # fmt: skip
        (box.root / "job.json").write_text(
            json.dumps(job), encoding="utf-8"
        )  # ensure_ascii: \ud800 stays escaped
        candidate_argv = (argv, cwd, env, fds)
        procs = _start_split(box.root, candidate_argv, req=(req_r, req_w), rep=(rep_r, rep_w), res_w=res_w)
        trusted_rc, timed_out, outcome, candidate_rc = _end_split(box, procs, res_r, timeout_s)
        out_size = (box.root / "stdout").stat().st_size
        passed, signature, reason = _split_verdict(
            outcome, trusted_rc, candidate_rc, timed_out,
            out_size, max_output_bytes, timeout_s,
        )  # fmt: skip
        stdout_tail, stderr_tail = _tail(box.root / "stdout"), _tail(box.root / "stderr")
    finally:
        iso.remove_tree(box.root)
    return SandboxResult(
        passed=passed,
        returncode=trusted_rc,
        reason=reason,
        stdout_tail=stdout_tail,
        stderr_tail=stderr_tail,
        seconds=time.perf_counter() - start,
        signature=signature,
    )

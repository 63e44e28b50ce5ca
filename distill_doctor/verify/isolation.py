"""Which OS-level isolation contains a sandboxed program here, and the command that starts it.

Two tiers, chosen once per process (``DISTILL_DOCTOR_SANDBOX=guard`` forces the second):

- ``bubblewrap`` (default where ``bwrap`` works): new PID, network, IPC, UTS (and, as a
  normal user, user) namespaces; a read-only root made of the system folders and the Python
  installation only (no ``/etc``, ``/home``, ``/root`` or ``/tmp`` of the host); a private
  size-capped tmpfs ``/work``; ``--die-with-parent``; uid 65534. As root, bubblewrap keeps
  only CAP_SETUID/CAP_SETGID and the bootstrap drops to uid 65534 for real (so
  ``RLIMIT_NPROC`` holds: no forks); as a normal user, a user namespace maps it to 65534.
  Killing bubblewrap ends the PID namespace and every process in it.
- ``python-guard`` (fallback): the audit hook and rlimits of ``sandbox_boot.py``, plus
  ``unshare`` namespaces where they work (network; PID, so descendants die with it). Without
  a PID namespace, leftover descendants are found by a per-run marker in their environment.

The Python-level guard runs inside both tiers as a second layer.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
WORK = "/work"  # the work folder's path inside bubblewrap
BOX = "/box"  # read-only folder with the program and the bootstrap, inside bubblewrap
MARKER = "DD_SANDBOX_RUN"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class Isolation:
    """The tier in use: ``name`` is ``bubblewrap`` or ``python-guard``; ``detail`` one sentence."""

    name: str
    detail: str
    unshare: tuple[str, ...] = ()  # python-guard: the unshare prefix, () when none works
    pid_namespace: bool = False
    seccomp: bool = False  # bubblewrap: the seccomp_filter() is applied

    def seccomp_pipe(self) -> int | None:
        """A pipe's read end holding the seccomp program (the caller passes it on and closes it)."""
        program = seccomp_filter() if self.seccomp else None
        if program is None:
            return None
        r, w = os.pipe()
        os.write(w, program)
        os.close(w)
        return r


def python_executable() -> str:
    """The real interpreter (not a venv link): the sandbox runs it with ``-S``, stdlib only."""
    return os.path.realpath(sys.executable)


def child_env(home: str) -> dict[str, str]:
    """The whole environment of a sandboxed process: nothing of the parent's."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "HOME": home,
        "TMPDIR": home,
    }


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def bwrap_args(box_files: dict[str, Path], work_bytes: int, seccomp_fd: int | None = None) -> list[str]:
    """bwrap options up to ``--``; ``box_files`` maps a name in ``/box`` to a host file;
    ``seccomp_fd`` a readable descriptor holding ``seccomp_filter()`` (passed to the child)."""
    args = [shutil.which("bwrap") or "bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    args += ["--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    bound: list[str] = []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
            bound.append(d + "/")
    real_python = python_executable()
    for d in dict.fromkeys([os.path.realpath(sys.base_prefix), os.path.dirname(real_python)]):
        if any((d + "/").startswith(b) for b in bound):
            continue
        for parent in _ancestors(d + "/x"):
            if parent != d and not any((parent + "/").startswith(b) for b in bound):
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", d, d]
        bound.append(d + "/")
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "01777", "--size", str(int(work_bytes)), "--tmpfs", WORK]
    for name, host in box_files.items():
        args += ["--ro-bind", str(host), f"{BOX}/{name}"]
    args += ["--chdir", WORK, "--remount-ro", "/"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    if _is_root():  # the bootstrap drops to NOBODY itself (see module docstring)
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    return [*args, "--"]


# x86_64 system calls a sandboxed program never needs and that widen the kernel surface:
# debugging others, namespaces and mounts, keyrings, BPF, perf, userfaultfd, io_uring,
# modules, kexec, raw I/O ports, clock and swap changes, file handles.
_DENIED_X86_64 = {
    "ptrace": 101, "syslog": 103, "personality": 135, "adjtimex": 159, "pivot_root": 155, "acct": 163,
    "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176, "quotactl": 179,
    "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249,
    "keyctl": 250, "unshare": 272, "perf_event_open": 298, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}  # fmt: skip
_CLONE, _CLONE3 = 56, 435
_NEW_NAMESPACES = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_EPERM, _ENOSYS = 1, 38


def seccomp_filter() -> bytes | None:
    """A classic-BPF seccomp program for ``bwrap --seccomp`` (x86_64 only, else None).

    Denies ``_DENIED_X86_64`` and ``clone`` with namespace flags with EPERM, ``clone3`` with
    ENOSYS (so libc falls back to ``clone``, which is checked), the x32 ABI entirely, and kills
    a process of any other architecture. Everything else is allowed: the namespaces, the
    read-only root, the uid and the rlimits do the rest.
    """
    import platform
    import struct

    if platform.machine() != "x86_64":
        return None
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    deny, nosys = 0x00050000 | _EPERM, 0x00050000 | _ENOSYS
    denied = sorted(_DENIED_X86_64.values())
    # layout: checks, then [allow, deny, nosys, kill] at the end; jumps are relative (u8)
    body: list[tuple[int | str, ...]] = [(ld, 0, 0, 4), (jeq, 1, 0, 0xC000003E)]  # arch == x86_64?
    body += [("KILL",), (ld, 0, 0, 0), (jge, "DENY", 0, 0x40000000)]  # x32 system calls
    body += [(jeq, "DENY", 0, nr) for nr in denied]
    body += [
        (jeq, "NOSYS", 0, _CLONE3),
        (jeq, 0, "ALLOW", _CLONE),
        (ld, 0, 0, 16),
        (jset, "DENY", "ALLOW", _NEW_NAMESPACES),
    ]
    n = len(body)
    targets = {"ALLOW": n, "DENY": n + 1, "NOSYS": n + 2, "KILL": n + 3}
    out = []
    for i, ins in enumerate(body):
        if ins == ("KILL",):
            ins = (0x05, 0, 0, targets["KILL"] - i - 1)  # BPF_JMP | BPF_JA: unconditional
        code, jt, jf, k = ins
        jt = targets[jt] - i - 1 if isinstance(jt, str) else jt
        jf = targets[jf] - i - 1 if isinstance(jf, str) else jf
        out.append(struct.pack("=HBBI", code, jt, jf, k))
    for k in (allow, deny, nosys, kill):
        out.append(struct.pack("=HBBI", ret, 0, 0, k))
    return b"".join(out)


def drop_uid() -> int | None:
    """The uid the bootstrap must drop to under bubblewrap (root only), else None."""
    return NOBODY if _is_root() else None


def _works(cmd: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            env=env,
            cwd="/",
            pass_fds=pass_fds,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return False, str(err)
    last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1]
    return done.returncode == 0 and done.stdout.strip() == b"ok", last


def _probe_bwrap(seccomp: bool) -> tuple[bool, str]:
    if shutil.which("bwrap") is None:
        return False, "bwrap is not installed (Debian: apt-get install bubblewrap)"
    probe = "import os\n"
    if drop_uid() is not None:
        probe += f"os.setgroups([]); os.setresgid({NOBODY}, {NOBODY}, {NOBODY}); os.setresuid({NOBODY}, {NOBODY}, {NOBODY})\n"
    probe += "import json, collections\nopen('/work/x', 'w').write('x')\nprint('ok')\n"
    fd = Isolation("bubblewrap", "", seccomp=True).seccomp_pipe() if seccomp else None
    try:
        cmd = [*bwrap_args({}, 1 << 20, fd), python_executable(), "-S", "-c", probe]
        return _works(cmd, child_env(WORK), (fd,) if fd is not None else ())
    finally:
        if fd is not None:
            os.close(fd)


def _probe_unshare() -> tuple[tuple[str, ...], bool]:
    unshare = shutil.which("unshare")
    if unshare is None or os.environ.get("DISTILL_DOCTOR_SANDBOX_NETNS", "1") == "0":
        return (), False
    pid = ("-p", "-f", "--kill-child", "--mount-proc")
    for flags, has_pid in (
        (("-n", *pid), True),
        (("-r", "-n", *pid), True),
        (("-n",), False),
        (("-r", "-n"), False),
    ):
        prefix = (unshare, *flags, "--")
        if _works([*prefix, python_executable(), "-S", "-c", "print('ok')"], child_env("/"))[0]:
            return prefix, has_pid
    return (), False


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """The tier used on this machine (probed once per process)."""
    forced = os.environ.get("DISTILL_DOCTOR_SANDBOX", "auto")
    why = "forced by DISTILL_DOCTOR_SANDBOX=guard"
    if forced != "guard":
        seccomp = seccomp_filter() is not None
        ok, why = _probe_bwrap(seccomp)
        if not ok and seccomp:
            seccomp = False
            ok, why = _probe_bwrap(False)
        if ok:
            who = "uid 65534 (root dropped)" if _is_root() else "uid 65534 in a user namespace"
            filt = "seccomp filter" if seccomp else "no seccomp filter"
            return Isolation(
                "bubblewrap",
                "bubblewrap: new PID/network/IPC namespaces, read-only system root, private tmpfs "
                f"/work, {who}, die-with-parent, {filt}; Python audit hook and rlimits inside",
                seccomp=seccomp,
            )
    prefix, has_pid = _probe_unshare()
    spaces = ("network + PID namespaces" if has_pid else "network namespace") if prefix else "no namespaces"
    return Isolation(
        "python-guard",
        f"python-guard (bubblewrap unavailable: {why}): audit hook, rlimits, {spaces}, scrubbed environment",
        unshare=prefix,
        pid_namespace=has_pid,
    )


def new_marker() -> str:
    return secrets.token_hex(12)


def kill_marked(marker: str) -> int:
    """SIGKILL every process whose environment carries ``MARKER=marker`` (no-PID-namespace tier)."""
    needle = f"{MARKER}={marker}".encode()
    killed = 0
    for _ in range(3):  # a process may fork while we scan: repeat until a pass finds none
        found = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if needle not in fh.read():
                        continue
                os.kill(int(entry), signal.SIGKILL)
                found += 1
            except OSError:
                continue
        killed += found
        if not found:
            break
    return killed


def remove_tree(root: Path) -> None:
    """Delete ``root`` without recursion (a program may leave folders thousands deep).

    Each pass moves the sub-folders of ``root``'s children up into ``root`` (``rename`` with
    ``dir_fd``, so path length never grows), then deletes the emptied children. Never raises.
    """
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    counter, before = 0, None
    try:
        while True:
            names = sorted(os.listdir(top))
            if not names or names == before:  # empty, or nothing more can be removed
                break
            before = names
            for name in names:
                counter = _flatten_one(top, name, counter)
    except OSError:
        pass
    finally:
        os.close(top)
    try:
        os.rmdir(root)
    except OSError:
        pass


def _flatten_one(top: int, name: str, counter: int) -> int:
    try:
        os.unlink(name, dir_fd=top)
        return counter
    except IsADirectoryError:
        pass
    except OSError:
        return counter
    try:
        os.chmod(name, 0o700, dir_fd=top)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
    except OSError:
        return counter
    try:
        for child in os.listdir(fd):
            try:
                os.unlink(child, dir_fd=fd)
            except IsADirectoryError:
                counter += 1
                os.rename(child, f".dd-up-{counter}", src_dir_fd=fd, dst_dir_fd=top)
            except OSError:
                pass
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=top)
    except OSError:
        pass
    return counter

"""Bootstrap run as ``python -S -s -P sandbox_boot.py ROOT MEMORY_MB CPU_S FSIZE_BYTES`` by ``sandbox.py``.

``-S`` (no site-packages: programs get the standard library only, and start faster),
``-s`` (no user site), ``-P`` (the working folder is not on ``sys.path``).

It runs *before* the untrusted program, in the child process, and:

1. sets resource limits (address space, CPU seconds, file size, no core files, no new
   processes for non-root users, a cap on open files) that the program cannot raise;
2. installs an audit hook (``sys.addaudithook``; it cannot be removed afterwards) that
   refuses with ``PermissionError``: process creation (fork, exec, spawn, system,
   subprocess), sockets and network clients, ctypes, signals to other processes, changing
   resource limits or the working directory, writing / deleting / renaming outside the
   work folder, reading files outside the Python installation and the work folder, and more
   than 256 opened-for-writing files;
3. runs the program with ``__name__ == "__sandbox__"`` (so ``if __name__ == "__main__":``
   demo blocks do not run), turns ``sys.exit``/``os._exit`` into failures, and writes one
   result line to ``ROOT/result``: ``pass`` or ``fail<TAB>ExceptionType<TAB>message``.

The parent counts a run as passed only if the exit status is 0 *and* the result says pass.
This file only uses the standard library and is never imported by distill-doctor itself.
"""

import builtins
import os
import posix
import resource
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_BLOCKED_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.kill",
        "os.killpg",
        "os.chdir",
        "os.fchdir",
        "os.chroot",
        "os.chown",
        "os.lchown",
        "os.setxattr",
        "os.removexattr",
        "subprocess.Popen",
        "pty.spawn",
        "signal.pthread_kill",
        "resource.setrlimit",
        "resource.prlimit",
        "socket.__new__",
        "socket.connect",
        "socket.bind",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.sendto",
        "socket.sendmsg",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.cdata",
        "ctypes.cdata/buffer",
        "ctypes.call_function",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "urllib.Request",
        "http.client.connect",
        "ftplib.connect",
        "smtplib.connect",
        "poplib.connect",
        "imaplib.open",
        "nntplib.connect",
        "telnetlib.Telnet.open",
        "webbrowser.open",
        "sys.remote_exec",
        "cpython.PyInterpreterState_New",  # a subinterpreter would not carry this hook
    }
)
# C modules whose import alone hands out an escape: process spawning, raw sockets, and ctypes
# (in 3.11 calling a ctypes function pointer raises no audit event). numpy imports ctypes,
# so numpy is unavailable inside the sandbox: verified programs are pure Python.
_BLOCKED_IMPORTS = frozenset(
    {"_posixsubprocess", "_socket", "_ctypes", "_xxsubinterpreters", "_testcapi", "_testinternalcapi"}
)
# events whose path arguments are written to (index of each path argument)
_WRITE_PATH_EVENTS = {
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.link": (0, 1),
    "os.symlink": (0, 1),
    "os.chmod": (0,),
    "os.chflags": (0,),
    "os.truncate": (0,),
    "os.utime": (0,),
    "os.mkfifo": (0,),
    "os.mknod": (0,),
    "shutil.rmtree": (0,),
    "shutil.copyfile": (1,),
    "shutil.copymode": (1,),
    "shutil.copystat": (1,),
    "shutil.move": (0, 1),
    "shutil.make_archive": (0,),
    "shutil.unpack_archive": (1,),
}
_READ_PATH_EVENTS = {"os.listdir": (0,), "os.scandir": (0,), "glob.glob": (0,), "os.listxattr": (0,)}
_MAX_WRITE_OPENS = 256


def _set_limits(memory_mb: int, cpu_s: int, fsize: int) -> None:
    limits = [
        (resource.RLIMIT_AS, memory_mb * 1024 * 1024),
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_FSIZE, fsize),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 256),
        (resource.RLIMIT_NPROC, 0),  # not enforced for root; the audit hook blocks forks anyway
    ]
    for which, value in limits:
        try:
            soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def _make_hook(work: str, readable: tuple):
    realpath = os.path.realpath
    fspath = os.fspath
    work_prefix = work.rstrip("/") + "/"
    writes = [0]

    def inside(path, prefixes) -> bool:
        if isinstance(path, int):  # an already-open descriptor
            return True
        try:
            real = realpath(fspath(path) if not isinstance(path, bytes) else os.fsdecode(path))
        except (TypeError, ValueError, OSError):
            return False
        return any(real == p.rstrip("/") or real.startswith(p) for p in prefixes)

    def hook(event, args):
        if event in _BLOCKED_EVENTS:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args and args[0] in _BLOCKED_IMPORTS:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if path is None:
                return
            if writing:
                if not inside(path, (work_prefix,)):
                    raise PermissionError(
                        f"sandbox: writing outside the work folder is not allowed: {path!r}"
                    )
                writes[0] += 1
                if writes[0] > _MAX_WRITE_OPENS:
                    raise PermissionError("sandbox: too many files opened for writing")
            elif not inside(path, readable):
                raise PermissionError(f"sandbox: reading outside the sandbox is not allowed: {path!r}")
            return
        idx = _WRITE_PATH_EVENTS.get(event)
        if idx is not None:
            for i in idx:
                if i < len(args) and args[i] is not None and not inside(args[i], (work_prefix,)):
                    raise PermissionError(f"sandbox: {event} outside the work folder is not allowed")
            return
        idx = _READ_PATH_EVENTS.get(event)
        if idx is not None:
            for i in idx:
                if i < len(args) and args[i] is not None and not inside(args[i], readable):
                    raise PermissionError(f"sandbox: {event} outside the sandbox is not allowed")

    return hook


def _blocked_exit(code=0):
    raise SystemExit(code)


def main() -> None:
    root, memory_mb, cpu_s, fsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    real_exit = posix._exit
    work = os.path.realpath(os.path.join(root, "work"))
    with open(os.path.join(root, "prog.py"), encoding="utf-8", errors="replace") as fh:
        source = fh.read()
    result_fd = os.open(os.path.join(root, "result"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stdlib = os.path.dirname(os.__file__)
    readable = {work + "/", "/dev/null", "/dev/urandom", "/dev/zero", "/usr/share/zoneinfo/"}
    for p in [stdlib, sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]:
        if p and os.path.isdir(p):
            readable.add(os.path.realpath(p).rstrip("/") + "/")
    os.chdir(work)
    _set_limits(memory_mb, cpu_s, fsize)
    sys.addaudithook(_make_hook(work, tuple(sorted(readable))))
    os._exit = posix._exit = _blocked_exit
    builtins.exit = builtins.quit = _blocked_exit  # site (skipped by -S) would have defined them
    sys.argv = ["program.py"]

    status = "pass"
    try:
        code = compile(source, "program.py", "exec")
        del source
        exec(code, {"__name__": "__sandbox__", "__builtins__": __builtins__})
    except SystemExit as err:
        status = f"fail\tSystemExit\tthe program called exit({err.code!r:.40}) before the tests finished"
    except BaseException as err:  # noqa: BLE001 - any exception of the program is its failure
        try:
            message = " ".join(str(err).split())[:300]
        except BaseException:  # noqa: BLE001 - a hostile __str__
            message = ""
        status = f"fail\t{type(err).__name__[:60]}\t{message}"
        try:  # the program's frames only, not this bootstrap's (imported only when needed: startup time)
            import traceback

            traceback.print_exception(
                type(err), err, err.__traceback__.tb_next if err.__traceback__ else None
            )
        except BaseException:  # noqa: BLE001
            pass
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - e.g. output over the file-size limit
            pass
    try:
        os.write(result_fd, (status + "\n").encode("utf-8", "replace"))
    except OSError:
        pass
    real_exit(0 if status == "pass" else 1)  # skip atexit handlers the program may have registered


if __name__ == "__main__":
    main()

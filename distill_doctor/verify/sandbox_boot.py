"""Bootstrap of the candidate's process: ``python -S -s -P sandbox_boot.py WIRE_PY CONFIG_JSON`` (``sandbox.py``).

``-S`` (no site-packages: programs get the standard library only, and start faster),
``-s`` (no user site), ``-P`` (the script's folder is not on ``sys.path``).

It runs *before* the untrusted program, in the child process, and:

1. reads the program, then (``drop_uid``, under bubblewrap as root) drops to an unprivileged
   uid, so ``RLIMIT_NPROC`` is enforced and nothing of root's remains;
2. sets resource limits (address space, CPU seconds, file size, no core files, no new
   processes, a cap on open files) that the program cannot raise;
3. installs an audit hook (``sys.addaudithook``; it cannot be removed afterwards) that
   refuses with ``PermissionError``: process creation, sockets, ctypes, signals to other
   processes, ``gc`` object walks, trace/profile hooks, symlinks and hard links, changing
   resource limits or the working directory, writing outside the work folder, reading outside
   the Python installation and the work folder, opening directories outside the work folder
   (no ``dir_fd`` tricks), relative paths with ``..``, path objects that are not exact
   ``str``/``bytes``, blocked C modules under any dotted name, and extension modules from
   outside the standard library. The hook holds its state in its closure (nothing in this
   module's globals steers it) and touches only immutable values and C functions;
4. ``mode == "run"``: runs the program with ``__name__ == "__sandbox__"``, turns
   ``sys.exit``/``os._exit`` into failures and writes one line to ``result_fd``: ``pass`` or
   ``fail<TAB>ExceptionType<TAB>message``. That line is the program's own report (used only
   to name a failure); no test ever runs in this process.
   ``mode == "serve"``: defines the program, then answers calls of ``entry`` over fds 0 and 1
   with plain data (``wire.py``): the trusted test process sends ``["C", args, kwargs]``,
   this side answers ``["R", value]`` or ``["E", type, message]`` (``["ready"]`` first).
   The program's own prints go to stderr.

This file only uses the standard library and is never imported by distill-doctor itself.
"""

import builtins
import os
import posix
import resource
import sys
from _stat import S_ISDIR, S_ISLNK

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
        "sys.settrace",  # trace and profile functions get frames whose locals they can rewrite
        "sys.setprofile",
        "gc.get_objects",  # object walks reach the hook's closure
        "gc.get_referrers",
        "gc.get_referents",
        "os.symlink",  # links would make relative and dir_fd paths resolve elsewhere
        "os.link",
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


_FUNCTION_ATTRS = frozenset({"__code__"})  # the hook's helpers take every value as an argument


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


def _resolve(path, cwd, lstat, readlink, islnk):
    """Absolute ``path`` with every symlink resolved ('' when it loops).

    Written without builtins or globals (everything comes in as arguments) so that a program
    that patches ``builtins``, ``os`` or ``posixpath`` cannot make it lie.
    """
    if not path.startswith("/"):
        path = cwd + "/" + path
    todo = path.split("/")[::-1]
    out: list[str] = []
    hops = 0
    while todo:
        name = todo.pop()
        if name == "" or name == ".":
            continue
        if name == "..":
            if out:
                out.pop()
            continue
        candidate = "/" + "/".join(out + [name])
        try:
            mode = lstat(candidate).st_mode
        except OSError:
            out.append(name)
            continue
        if islnk(mode):
            hops += 1
            if hops > 40:
                return ""
            target = readlink(candidate)
            if target.startswith("/"):
                out = []
            todo.extend(target.split("/")[::-1])
        else:
            out.append(name)
    return "/" + "/".join(out)


def _inside(real, prefixes):
    """Whether ``real`` is one of ``prefixes`` (a file) or below one ending in ``/`` (a folder)."""
    for prefix in prefixes:
        if real == prefix or real + "/" == prefix or (prefix.endswith("/") and real.startswith(prefix)):
            return True
    return False


def _real_path(path, work, kinds, calls):
    """The resolved path, or '' when it must not be judged (the caller refuses it).

    ``kinds`` = (type, str, bytes), ``calls`` = (resolve, lstat, readlink, S_ISLNK): passed in,
    not looked up, so that nothing the program can patch is consulted.
    """
    kind_of, text, data = kinds
    kind = kind_of(path)
    if kind is data:
        path = path.decode("utf-8", "surrogateescape")
    elif kind is not text:
        return ""  # path-like objects could answer differently when the real call converts them
    if not path.startswith("/") and ".." in path.split("/"):
        return ""  # relative paths may be resolved against any dir_fd: no climbing out
    resolve, lstat, readlink, islnk = calls
    return resolve(path, work, lstat, readlink, islnk)


def _check_import(args, blocked_imports, dynload, basics):
    """``import``: no blocked C module under any dotted name, no extension from outside ``dynload``."""
    kind_of, text, _, refuse = basics
    name = args[0] if args[0:1] and kind_of(args[0]) is text else ""
    if name.rpartition(".")[2] in blocked_imports or name in blocked_imports:
        raise refuse(f"sandbox: importing {name} is not allowed")
    where = args[1] if args[1:2] else ""  # "" is never an extension path
    if kind_of(where) is text and where.endswith(".so") and not where.startswith(dynload):
        raise refuse(f"sandbox: loading the extension {where!r} is not allowed")


def _check_open(args, paths, opens, basics):
    """``open``: writes only in the work folder (at most ``max_writes`` of them), reads only in
    the work folder or ``readable``, and no folder outside the work folder (no ``dir_fd`` tricks)."""
    work, work_prefixes, readable, real_path, inside, kinds, calls = paths
    write_flags, max_writes, writes, stat, isdir = opens
    kind_of, _, number, refuse = basics
    path, mode, flags = (args + (None, None, None))[:3]
    if path is None or kind_of(path) is number:  # an already-open descriptor
        return
    if kind_of(flags) is not number:
        raise refuse("sandbox: open without numeric flags is not allowed")
    real = real_path(path, work, kinds, calls)
    if not real:
        raise refuse("sandbox: only str or bytes paths without '..' are allowed")
    if flags & write_flags:
        if not inside(real, work_prefixes):
            raise refuse(f"sandbox: writing outside the work folder is not allowed: {path!r}")
        writes[0] += 1
        if writes[0] > max_writes:
            raise refuse("sandbox: too many files opened for writing")
        return
    if inside(real, work_prefixes):
        return
    if not inside(real, readable):
        raise refuse(f"sandbox: reading outside the sandbox is not allowed: {path!r}")
    try:
        directory = isdir(stat(real).st_mode)
    except OSError:
        directory = False
    if directory:
        raise refuse(f"sandbox: opening a folder outside the work folder is not allowed: {path!r}")


def _check_paths(event, args, idx, allowed, place, skip_fds, paths, basics):
    """A path event: every path argument (positions ``idx``; numbers too unless ``skip_fds``) must
    resolve inside ``allowed``; otherwise refused as "``event`` outside ``place``"."""
    work, _, _, real_path, inside, kinds, calls = paths
    kind_of, _, number, refuse = basics
    for i in idx:
        if args[i : i + 1] and args[i] is not None and not (skip_fds and kind_of(args[i]) is number):
            real = real_path(args[i], work, kinds, calls)
            if not real or not inside(real, allowed):
                raise refuse(f"sandbox: {event} outside {place} is not allowed")


def _make_hook(work: str, readable: tuple, dynload: str):
    """The audit hook. Its closure holds immutable values and C functions only, and the helpers it
    calls (``_check_*``, ``_real_path``, ``_inside``) get every value they use as an argument."""
    blocked, blocked_imports = _BLOCKED_EVENTS, _BLOCKED_IMPORTS
    write_events, read_events, function_attrs = _WRITE_PATH_EVENTS, _READ_PATH_EVENTS, _FUNCTION_ATTRS
    check_import, check_open, check_paths = _check_import, _check_open, _check_paths
    kind_of, text, refuse = type, str, PermissionError
    basics = (type, str, int, PermissionError)  # kind_of, text, number, refuse
    work_prefixes = (work.rstrip("/") + "/",)
    kinds = (type, str, bytes)
    calls = (_resolve, posix.lstat, posix.readlink, S_ISLNK)
    paths = (work, work_prefixes, readable, _real_path, _inside, kinds, calls)
    opens = (_WRITE_FLAGS, _MAX_WRITE_OPENS, [0], posix.stat, S_ISDIR)  # flags, cap, count, stat, isdir

    def hook(event, args):
        if event in blocked:
            raise refuse(f"sandbox: {event} is not allowed")
        if event == "import":
            check_import(args, blocked_imports, dynload, basics)
            return
        if event == "object.__setattr__":
            name = args[1] if args[1:2] else ""
            if kind_of(name) is not text or name in function_attrs:  # a str subclass could hash anything
                raise refuse("sandbox: setting __code__ (or an attribute named by a non-str) is not allowed")
            return
        if event == "open":
            check_open(args, paths, opens, basics)
            return
        idx = write_events.get(event)
        if idx is not None:
            check_paths(event, args, idx, work_prefixes, "the work folder", False, paths, basics)
            return
        idx = read_events.get(event)
        if idx is not None:
            check_paths(event, args, idx, readable, "the sandbox", True, paths, basics)

    return hook


def _blocked_exit(code=0):
    raise SystemExit(code)


def _drop_privileges(uid: int) -> None:
    """Become ``uid`` for real (used as root under bubblewrap: then RLIMIT_NPROC holds)."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        real_exit = posix._exit
        real_exit(111)


def _load_wire(path: str):
    """``wire.py`` as a module, without ``importlib.util`` (start-up time)."""
    module = type(sys)("dd_wire")
    with open(path, encoding="utf-8") as fh:
        exec(compile(fh.read(), path, "exec"), module.__dict__)
    return module


def _readable(work: str) -> tuple:
    readable = {work + "/", "/dev/null", "/dev/urandom", "/dev/zero", "/usr/share/zoneinfo/"}
    for p in [os.path.dirname(os.__file__), sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]:
        if p and os.path.isdir(p):
            readable.add(os.path.realpath(p).rstrip("/") + "/")
    return tuple(sorted(readable))


def _describe(err: BaseException) -> tuple:
    try:
        message = " ".join(str(err).split())[:300]
    except BaseException:  # noqa: BLE001 - a hostile __str__
        message = ""
    return type(err).__name__[:60], message


def _run(code, result_fd: int) -> str:
    """Run a whole program; its status line (written to ``result_fd``)."""
    status = "pass"
    try:
        exec(code, {"__name__": "__sandbox__", "__builtins__": builtins})
    except SystemExit as err:
        status = f"fail\tSystemExit\tthe program called exit({err.code!r:.40}) before the tests finished"
    except BaseException as err:  # noqa: BLE001 - any exception of the program is its failure
        name, message = _describe(err)
        status = f"fail\t{name}\t{message}"
        try:  # the program's frames only, not this bootstrap's (imported only when needed: startup time)
            import traceback

            traceback.print_exception(
                type(err), err, err.__traceback__.tb_next if err.__traceback__ else None
            )
        except BaseException:  # noqa: BLE001
            pass
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:  # noqa: BLE001 - e.g. output over the file-size limit
            pass
    try:
        os.write(result_fd, (status + "\n").encode("utf-8", "replace"))
    except OSError:
        pass
    return status


def _serve(code, entry: str, wire, requests: int, replies: int) -> None:
    """Define the program, then answer calls of ``entry`` until the trusted side hangs up."""
    namespace: dict = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        exec(code, namespace)
        if namespace.get(entry) is None:
            raise NameError(f"the program does not define {entry}()")
        fn = namespace[entry]
        if not callable(fn):
            raise TypeError(f"{entry} is not a function")
        first = ["ready"]
    except BaseException as err:  # noqa: BLE001
        first = ["E", *_describe(err)]
    wire.write_frame(replies, first)
    if first[0] != "ready":
        return
    while True:
        try:
            call = wire.read_frame(requests)
        except EOFError:
            return
        try:
            reply = ["R", wire.encode(fn(*call[1], **call[2]))]
        except BaseException as err:  # noqa: BLE001 - the candidate's failure, reported by type
            reply = ["E", *_describe(err)]
        try:
            frame = wire.dumps(reply)
        except BaseException as err:  # noqa: BLE001 - e.g. an int too long for JSON
            frame = wire.dumps(["E", *_describe(err)])
        view = memoryview(frame)
        while view:
            view = view[os.write(replies, view) :]


def main() -> None:
    wire = _load_wire(sys.argv[1])
    cfg = wire.json_loads(sys.argv[2])
    real_exit = posix._exit
    with open(cfg["prog"], encoding="utf-8", errors="replace") as fh:
        source = fh.read()
    if cfg.get("drop_uid") is not None:
        _drop_privileges(int(cfg["drop_uid"]))
    work = os.path.realpath(cfg["work"])
    readable = _readable(work)
    dynload = os.path.realpath(os.path.join(os.path.dirname(os.__file__), "lib-dynload")) + "/"
    os.chdir(work)
    if cfg["mode"] == "serve":  # the channel moves off 0/1; prints go to stderr, input() sees EOF
        requests, replies = os.dup(0), os.dup(1)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(2, 1)
        os.close(null)
    _set_limits(int(cfg["memory_mb"]), int(cfg["cpu_s"]), int(cfg["fsize"]))
    sys.addaudithook(_make_hook(work, readable, dynload))
    os._exit = posix._exit = _blocked_exit
    # site (skipped by -S) would have defined them; typeshed types them as site's Quitter
    builtins.exit = builtins.quit = _blocked_exit  # type: ignore[assignment]
    sys.argv = ["program.py"]
    try:
        code = compile(source, "program.py", "exec")
    except BaseException as err:  # noqa: BLE001 - a SyntaxError is the program's failure
        code, compile_error = None, err
    del source
    if cfg["mode"] == "serve":
        if code is None:
            wire.write_frame(replies, ["E", *_describe(compile_error)])
        else:
            _serve(code, cfg["entry"], wire, requests, replies)
        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except BaseException:  # noqa: BLE001 - e.g. output over the file-size limit
                pass
        real_exit(0)
    if code is None:
        name, message = _describe(compile_error)
        os.write(int(cfg["result_fd"]), f"fail\t{name}\t{message}\n".encode("utf-8", "replace"))
        real_exit(1)
    status = _run(code, int(cfg["result_fd"]))
    real_exit(0 if status == "pass" else 1)  # skip atexit handlers the program may have registered


if __name__ == "__main__":
    main()

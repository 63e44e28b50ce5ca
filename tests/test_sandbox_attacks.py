"""Regression tests for issue 18: forged verdicts and sandbox escapes seen in a hostile review.

Item ``add(a, b)`` with the test ``assert candidate(2, 3) == 5``: every cheat must score FAIL.
Every escape must fail to pass and fail to read or write outside, under both isolation tiers.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time

import pytest

from distill_doctor.data.records import Item
from distill_doctor.verify import run_python, verify_code
from distill_doctor.verify import wire as wire_mod
from distill_doctor.verify.sandbox import run_tests

FAST = {"timeout_s": 5.0, "memory_mb": 256}
ADD = Item(
    id="add",
    prompt='def add(a, b):\n    """Return a + b."""\n',
    reference=None,
    verifier="code",
    tags={},
    tests="def check(candidate):\n    assert candidate(2, 3) == 5\n",
    entry_point="add",
)


@pytest.fixture(autouse=True)
def tier(sandbox_tier):
    return sandbox_tier


CHEATS = {
    "eq_always_true": (
        "class Always:\n    def __eq__(self, other):\n        return True\n"
        "def add(a, b):\n    return Always()\n"
    ),
    "int_subclass_eq": "class I(int):\n    def __eq__(self, o):\n        return True\n\ndef add(a, b):\n    return I(0)\n",
    "getframe_result_fd": (
        "import sys, os\n"
        "f = sys._getframe(1)\n"
        "while f is not None:\n"
        "    for k, v in list(f.f_locals.items()):\n"
        "        if type(v) is int and v > 2:\n"
        "            try:\n                os.write(v, b'pass\\n')\n            except OSError:\n                pass\n"
        "    ex = f.f_locals.get('real_exit')\n"
        "    if ex:\n        ex(0)\n"
        "    f = f.f_back\n"
        "def add(a, b):\n    return 0\n"
    ),
    "settrace_replaces_check": (
        "import sys\n"
        "def tracer(frame, event, arg):\n"
        "    if 'check' in frame.f_globals:\n        frame.f_globals['check'] = lambda c: None\n"
        "    return tracer\n"
        "sys.settrace(tracer)\n"
        "def add(a, b):\n    return a - b\n"
    ),
    "reimported_posix_exit": (
        "import sys, os\n"
        "del sys.modules['posix']\n"
        "import posix\n"
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, b'pass\\n')\n    except OSError:\n        pass\n"
        "posix._exit(0)\n"
        "def add(a, b):\n    return 0\n"
    ),
    "stop_iteration_ends_a_loop": "def add(a, b):\n    raise StopIteration\n",
    "huge_answer": "def add(a, b):\n    return [0] * 5_000_000\n",
    "deep_answer": "def add(a, b):\n    x = []\n    for _ in range(5000):\n        x = [x]\n    return x\n",
}


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_cheats_score_fail(name):
    verdict = verify_code(ADD, CHEATS[name], **FAST)
    assert not verdict.passed, (name, verdict)


def test_a_correct_add_passes_and_tests_keep_their_loops():
    assert verify_code(ADD, "def add(a, b):\n    return a + b\n", **FAST).passed
    item = ADD.__class__(
        **{
            **ADD.__dict__,
            "tests": "def check(candidate):\n    for r in map(candidate, [1], [2]):\n        assert r == 99\n",
        }
    )
    assert not verify_code(item, "def add(a, b):\n    raise StopIteration\n", **FAST).passed


def test_exceptions_keep_their_builtin_type_and_plain_data_round_trips():
    tests = (
        "def check(candidate):\n"
        "    try:\n        candidate(-1, 0)\n        assert False\n    except ValueError:\n        pass\n"
        "    assert candidate(1, 2) == {'s': (3, [1.5, None]), 7: True}\n"
    )
    prog = "def add(a, b):\n    if a < 0:\n        raise ValueError('neg')\n    return {'s': (a + b, [1.5, None]), 7: True}\n"
    r = run_tests(prog, "add", tests, **FAST)
    assert r.passed, r.reason + r.stderr_tail


def _marker(tmp_path):
    return tmp_path / "escaped.txt"


def test_main_globals_cannot_switch_the_hook_off(tmp_path):
    target = _marker(tmp_path)
    prog = (
        "import __main__\n__main__._BLOCKED_EVENTS = frozenset()\n__main__._BLOCKED_IMPORTS = frozenset()\n"
        f"import os\nos.system('touch {target}')\n"
    )
    r = run_python(prog, **FAST)
    assert not r.passed and not target.exists()
    assert not verify_code(ADD, prog + "def add(a, b):\n    return a + b\n", **FAST).passed


def test_hook_closure_is_out_of_reach_of_gc(tmp_path):
    target = _marker(tmp_path)
    prog = (
        "import gc\n"
        "for obj in gc.get_objects():\n"
        "    for cell in getattr(obj, '__closure__', None) or ():\n"
        "        try:\n            v = cell.cell_contents\n        except ValueError:\n            continue\n"
        "        if isinstance(v, (str, tuple)):\n            cell.cell_contents = '/' if isinstance(v, str) else ('/',)\n"
        f"open({str(target)!r}, 'w').write('pwned')\n"
    )
    r = run_python(prog, **FAST)
    assert not r.passed and r.signature == "PermissionError" and "gc.get_objects" in r.reason
    assert not target.exists()


@pytest.mark.parametrize(
    "prog",
    [
        "import os\nos.symlink('/etc', 'e')\nfd = os.open('.', os.O_RDONLY)\n"
        "print(os.read(os.open('e/passwd', os.O_RDONLY, dir_fd=fd), 200))\n",
        "import os\nfd = os.open('/', os.O_RDONLY)\nprint(os.read(os.open('etc/passwd', os.O_RDONLY, dir_fd=fd), 200))\n",
        "import os\nfd = os.open('/proc/{ppid}', os.O_RDONLY)\nprint(os.read(os.open('environ', os.O_RDONLY, dir_fd=fd), 9999))\n",
        "import os\nfd = os.open(os.path.dirname(os.__file__), os.O_RDONLY)\n"
        "print(os.read(os.open('../../../../etc/passwd', os.O_RDONLY, dir_fd=fd), 200))\n",
        "import os\nfd = os.open(os.path.dirname(os.__file__), os.O_RDONLY)\n"
        "os.write(os.open('evil.py', os.O_WRONLY | os.O_CREAT, dir_fd=fd), b'x')\n",
        "import os\nprint(open('/proc/{ppid}/environ').read())\n",
    ],
)
def test_dir_fd_and_proc_reads_are_refused(prog, monkeypatch):
    monkeypatch.setenv("DD_ATTACK_SECRET", "s3cr3t-token")
    r = run_python(prog.replace("{ppid}", str(os.getpid())), **FAST)
    assert not r.passed
    assert "root:" not in r.stdout_tail and "s3cr3t-token" not in r.stdout_tail + r.stderr_tail
    assert not os.path.exists(os.path.join(os.path.dirname(os.__file__), "evil.py"))


_FORK_EXEC = (
    "import importlib.util, os\n"
    "d = os.path.join(os.path.dirname(os.__file__), 'lib-dynload')\n"
    "so = [f for f in os.listdir(d) if f.startswith('_posixsubprocess')][0]\n"
    "spec = importlib.util.spec_from_file_location('x._posixsubprocess', os.path.join(d, so))\n"
    "m = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(m)\n"
    "r, w = os.pipe()\n"
    "m.fork_exec(['/bin/sleep', 'SLEEP_ARG'], [b'/bin/sleep'], True, (), None, None, -1, -1, -1, -1, -1, -1,"
    " r, w, False, True, -1, None, None, -1, -1, None)\n"
)


def _sleep_arg() -> str:
    """A sleep length no other test (or xdist worker, or concurrent run) uses: its processes are found
    by this argument in /proc."""
    return f"987.{os.getpid()}{next(_SLEEP_IDS)}"


_SLEEP_IDS = itertools.count()


def _sleepers(arg: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if arg.encode() in fh.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            pass
    return found


def test_blocked_extension_under_another_name_and_new_session_child():
    arg = _sleep_arg()
    r = run_python(_FORK_EXEC.replace("SLEEP_ARG", arg), **FAST)
    assert not r.passed and r.signature == "PermissionError" and "_posixsubprocess" in r.reason, r
    assert not _sleepers(arg)


def test_thousands_of_nested_folders_are_cleaned_up(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    prog = (
        "import os\nfd = os.open('.', os.O_RDONLY)\n"
        "for _ in range(2500):\n"
        "    os.mkdir('d', dir_fd=fd)\n"
        "    nxt = os.open('d', os.O_RDONLY, dir_fd=fd)\n"
        "    os.close(fd)\n"
        "    fd = nxt\n"
        "print('deep')\n"
    )
    r = run_python(prog, timeout_s=20)
    assert r.signature in ("pass", "PermissionError", "OSError"), r
    assert list(tmp_path.iterdir()) == []


def test_the_os_layer_holds_without_the_python_guard(tier):
    """bubblewrap alone (no audit hook): no host files, no writes outside /work, no forks, no network."""
    if tier != "bubblewrap":
        pytest.skip("the OS layer is bubblewrap's")
    from distill_doctor.verify import isolation as iso

    probe = (
        "import os, resource, socket\n"
        + (
            "os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n"
            if iso.drop_uid()
            else ""
        )
        + "resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))\n"
        "out = [os.getuid()]\n"
        "for f in ('/etc/passwd', '/home', '/tmp', os.environ.get('DD_HOST_FILE', '/nonexistent')):\n"
        "    out.append(os.path.exists(f))\n"
        "try:\n    open('/usr/dd-x', 'w'); out.append('wrote')\nexcept OSError:\n    out.append('ro')\n"
        "try:\n    os.fork(); out.append('forked')\nexcept OSError:\n    out.append('nofork')\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1); out.append('net')\nexcept OSError:\n    out.append('nonet')\n"
        "out.append(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "out.append((libc.unshare(0x10000000), ctypes.get_errno()))\n"  # a new user namespace
        "out.append((libc.syscall(250, 0, 0, 0, 0, 0), ctypes.get_errno()))\n"  # keyctl
        "print(out)\n"
    )
    host_file = os.path.abspath(__file__)
    tier_info = iso.isolation()
    fd = tier_info.seccomp_pipe()
    cmd = [*iso.bwrap_args({}, 1 << 20, fd), iso.python_executable(), "-S", "-c", probe]
    env = {**iso.child_env("/work"), "DD_HOST_FILE": host_file}
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=30, env=env, pass_fds=(fd,) if fd else ()
        )
    finally:
        if fd is not None:
            os.close(fd)
    expected = [65534, False, False, False, False, "ro", "nofork", "nonet", ["1", "2"]]
    if tier_info.seccomp:
        expected += [(-1, 1), (-1, 1)]  # EPERM from the seccomp filter
    got = done.stdout.strip()
    assert got.startswith(repr(expected)[:-1]), done
    if tier_info.seccomp:
        assert got == repr(expected), done


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b"1" * 5000,
        b'{"X": 1}',
        b'{"D": [[[1], 2]]}',
        b'{"D": [["a"]]}',
        b"\xff",
    ],
)
def test_hostile_frames_are_wire_errors(body):
    with pytest.raises(wire_mod.WireError):
        wire_mod.loads(body)


def test_oversized_frame_header_is_refused():
    r, w = os.pipe()
    os.write(w, (wire_mod.MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"))
    with pytest.raises(wire_mod.WireError):
        wire_mod.read_frame(r)
    os.close(r)
    os.close(w)


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_descendants_in_a_new_session_die_with_the_run(tier):
    """The tiers' own mechanisms, exercised directly (the guard stops the fork before them)."""
    from distill_doctor.verify import isolation as iso

    arg = _sleep_arg()
    spawn = f"import subprocess\nsubprocess.Popen(['/bin/sleep', '{arg}'], start_new_session=True)\n"
    if tier == "bubblewrap":  # the PID namespace: killing bwrap ends everything inside
        prog = spawn + "import time\ntime.sleep(30)\n"
        cmd = [*iso.bwrap_args({}, 1 << 20), iso.python_executable(), "-S", "-c", prog]
        proc = subprocess.Popen(cmd, env=iso.child_env("/work"), start_new_session=True)
        assert _wait_for(lambda: bool(_sleepers(arg)))
        os.killpg(proc.pid, 9)
        proc.wait()
    else:  # no namespace at all: the per-run environment marker finds the orphan
        marker = iso.new_marker()
        env = {**iso.child_env("/tmp"), iso.MARKER: marker}
        subprocess.run([sys.executable, "-S", "-c", spawn], env=env, timeout=30)
        assert _sleepers(arg) and iso.kill_marked(marker) >= 1
    assert _wait_for(lambda: not _sleepers(arg))

"""The code sandbox under attack, in both tiers: each adversarial program fails with a reason; host survives."""

from __future__ import annotations

import os
import time

import pytest

from distill_doctor.verify import containment, run_python

FAST = {"timeout_s": 3.0, "memory_mb": 256}


@pytest.fixture(autouse=True)
def tier(sandbox_tier):
    """Every test runs under both isolation tiers (``sandbox_tier`` in conftest)."""
    return sandbox_tier


def test_a_plain_program_passes_and_its_output_comes_back():
    r = run_python("print('hello')\nassert 1 + 1 == 2\n", **FAST)
    assert r.passed and r.returncode == 0 and r.signature == "pass"
    assert r.stdout_tail == "hello\n" and r.seconds < 3


def test_exception_gives_its_type_as_signature():
    r = run_python("def f():\n    raise KeyError('k')\nf()\n", **FAST)
    assert not r.passed and r.signature == "KeyError" and "KeyError" in r.reason
    assert "program.py" in r.stderr_tail and "sandbox_boot" not in r.stderr_tail.splitlines()[-1]


def test_syntax_error():
    r = run_python("def f(:\n    pass\n", **FAST)
    assert not r.passed and r.signature == "SyntaxError"


def test_infinite_loop_times_out():
    start = time.perf_counter()
    r = run_python("while True:\n    pass\n", timeout_s=1.0)
    assert not r.passed and r.signature == "timeout" and r.reason == "timeout after 1 s"
    assert time.perf_counter() - start < 4


def test_sleeping_program_times_out():
    r = run_python("import time\ntime.sleep(60)\n", timeout_s=1.0)
    assert not r.passed and r.signature == "timeout"


def test_fork_bomb_is_stopped():
    r = run_python("import os\nwhile True:\n    os.fork()\n", **FAST)
    assert not r.passed and r.signature == "PermissionError" and "os.fork" in r.reason


@pytest.mark.parametrize(
    "program",
    [
        "import subprocess\nsubprocess.run(['echo', 'hi'])\n",
        "import os\nos.system('echo hi')\n",
        "import os\nos.execv('/bin/echo', ['echo'])\n",
        "import multiprocessing as mp\np = mp.Process(target=print)\np.start()\np.join()\n",
        "import pty\npty.fork()\n",
        "import os\nos.posix_spawn('/bin/echo', ['echo'], {})\n",
    ],
)
def test_no_new_processes(program):
    r = run_python(program, **FAST)
    assert not r.passed and r.signature in ("PermissionError", "ImportError", "ModuleNotFoundError"), r.reason


def test_memory_bomb_hits_the_limit():
    r = run_python(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(50_000_000))\n", timeout_s=5, memory_mb=256
    )
    assert not r.passed and r.signature == "memory limit" and "memory" in r.reason


def test_single_huge_allocation():
    r = run_python("x = bytearray(10**11)\n", **FAST)
    assert not r.passed and r.signature == "memory limit"


def test_writing_outside_its_folder_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    program = f"with open({str(target)!r}, 'w') as fh:\n    fh.write('pwned')\n"
    r = run_python(program, **FAST)
    assert not r.passed and r.signature == "PermissionError"
    assert not target.exists()


@pytest.mark.parametrize(
    "program",
    [
        "import os\nos.remove({victim!r})\n",
        "import os\nos.rename({victim!r}, {victim!r} + '.moved')\n",
        "import shutil\nshutil.rmtree({folder!r})\n",
        "import os\nos.open({victim!r}, os.O_WRONLY | os.O_TRUNC)\n",
        "import pathlib\npathlib.Path({victim!r}).write_text('x')\n",
        "import os\nos.chdir('/')\nopen('dd-escape.txt', 'w').write('x')\n",
    ],
)
def test_deleting_or_changing_files_outside_is_refused(tmp_path, program):
    folder = tmp_path / "keep"
    folder.mkdir()
    victim = folder / "precious.txt"
    victim.write_text("keep me")
    r = run_python(program.format(victim=str(victim), folder=str(folder)), **FAST)
    assert not r.passed and r.signature == "PermissionError", r.reason
    assert victim.read_text() == "keep me"
    assert not os.path.exists("/dd-escape.txt")


def test_writing_inside_its_folder_works():
    r = run_python(
        "open('notes.txt', 'w').write('x')\nimport os\nos.mkdir('d')\nos.remove('notes.txt')\n", **FAST
    )
    assert r.passed, r.reason


def test_secrets_in_the_environment_are_not_visible(monkeypatch):
    monkeypatch.setenv("DD_TEST_SECRET_TOKEN", "s3cr3t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    program = (
        "import os\n"
        "print(sorted(os.environ))\n"
        "assert not any('s3cr3t' in v for v in os.environ.values())\n"
        "assert os.environ['HOME'] == os.getcwd()\n"
    )
    r = run_python(program, **FAST)
    assert r.passed, r.reason + r.stderr_tail
    assert "s3cr3t" not in r.stdout_tail and "AWS_SECRET_ACCESS_KEY" not in r.stdout_tail


def test_parent_environment_cannot_be_read_through_proc():
    r = run_python(f"print(open('/proc/{os.getpid()}/environ').read())\n", **FAST)
    assert not r.passed and r.signature == "PermissionError"


def test_reading_host_files_is_refused():
    r = run_python("print(open('/etc/passwd').read())\n", **FAST)
    assert not r.passed and r.signature == "PermissionError"


@pytest.mark.parametrize(
    "program",
    [
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\n",
        "import socket\nsocket.create_connection(('example.com', 80), timeout=1)\n",
        "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)\n",
    ],
)
def test_no_network(program):
    r = run_python(program, **FAST)
    assert not r.passed and r.signature in ("PermissionError", "URLError", "OSError"), r.reason


def test_printing_gigabytes_is_capped():
    start = time.perf_counter()
    r = run_python("while True:\n    print('x' * 1_000_000)\n", timeout_s=5, max_output_bytes=1_000_000)
    assert not r.passed and r.signature == "output limit" and r.reason == "output over 1 MB"
    assert len(r.stdout_tail) <= 4096 and time.perf_counter() - start < 5


def test_cannot_fake_a_pass_by_exiting_early():
    for program in (
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "raise SystemExit\n",
        "exit()\n",
    ):
        r = run_python(program + "assert False\n", **FAST)
        assert not r.passed and r.signature == "SystemExit", (program, r)


def test_cannot_raise_its_own_limits_or_signal_others():
    r = run_python("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n", **FAST)
    assert not r.passed and r.signature == "PermissionError"
    r = run_python(f"import os, signal\nos.kill({os.getpid()}, signal.SIGTERM)\n", **FAST)
    assert not r.passed and r.signature == "PermissionError"


@pytest.mark.parametrize(
    "program",
    [
        "import ctypes\nctypes.CDLL(None).exit(0)\n",
        "import _xxsubinterpreters as s\ns.run_string(s.create(), 'import os; os.system(\\'true\\')')\n",
        "import _testcapi\n_testcapi.run_in_subinterp('import os; os.system(\\'true\\')')\n",
        "import _posixsubprocess\n",
    ],
)
def test_no_escape_hatches(program):
    r = run_python(program, **FAST)
    assert not r.passed and r.signature == "PermissionError" and "importing" in r.reason


def test_main_blocks_do_not_run_and_stdin_is_empty():
    r = run_python("if __name__ == '__main__':\n    input()\n", **FAST)
    assert r.passed
    r = run_python("input()\n", **FAST)
    assert not r.passed and r.signature == "EOFError"


def test_containment_is_reported():
    info = containment()
    assert info["process_group_kill"] and ("audit" in info["network"] or "namespace" in info["network"])
    assert "RLIMIT_AS" in info["rlimits"]
    assert info["isolation"] in ("bubblewrap", "python-guard") and info["isolation_detail"]


def test_network_still_blocked_without_a_namespace(monkeypatch):
    from distill_doctor.verify import isolation

    monkeypatch.setenv("DISTILL_DOCTOR_SANDBOX", "guard")
    monkeypatch.setenv("DISTILL_DOCTOR_SANDBOX_NETNS", "0")
    isolation.isolation.cache_clear()
    try:
        info = containment()
        assert info["network"].startswith("audit hook only") and info["isolation"] == "python-guard"
        assert "no namespaces" in info["isolation_detail"]
        r = run_python("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n", **FAST)
        assert not r.passed and r.signature == "PermissionError"
    finally:
        monkeypatch.undo()
        isolation.isolation.cache_clear()

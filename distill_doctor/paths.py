"""Checks on the paths a command reads and writes, made before any work starts.

Why: a run that spends minutes diagnosing and then finds that ``--out`` is a file, a dangling
symlink, a name that is too long or a read-only folder has wasted the user's time and, worse,
crashed with a traceback. Every check here raises :class:`~distill_doctor.errors.InputError`
(exit 2, one line naming the path) instead.

Inputs must be regular files (or folders where a folder is expected): a FIFO would block
forever, a device would stream without end, and a symlink loop cannot be opened.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import tempfile
from pathlib import Path

from distill_doctor.errors import InputError

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def nonempty_path(text: str) -> Path:
    """An argparse ``type=``: a path that is not the empty string (``Path("")`` would mean ``.``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


def _why(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    if err.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return err.strerror or str(err)


def _stat(path: Path, *, follow: bool = True) -> os.stat_result | None:
    """``os.stat`` (or ``lstat``); ``None`` when nothing is there; other errors are ``InputError``."""
    try:
        return os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise InputError("a part of this path is a file, not a folder", path=path) from None
    except OSError as err:
        raise InputError(f"cannot access: {_why(err)}", path=path) from None


def kind_of(mode: int) -> str | None:
    """``"a FIFO (named pipe)"`` etc. for special files; ``None`` for regular files and folders."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return None


def resolve(path: str | Path) -> Path:
    """``Path.resolve()`` that reports a symlink loop as an ``InputError`` (Python 3.11 raises RuntimeError)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as err:
        why = _why(err) if isinstance(err, OSError) else "symlink loop"
        raise InputError(f"cannot resolve: {why}", path=path) from None


def check_input_file(path: str | Path) -> Path:
    """Refuse anything but an existing regular file (or a symlink to one), naming what it is instead."""
    path = Path(path)
    st = _stat(path)
    if st is None:
        if _stat(path, follow=False) is not None:
            raise InputError("is a symlink to a missing file", path=path)
        raise InputError("file not found", path=path)
    if stat.S_ISDIR(st.st_mode):
        raise InputError("is a folder, expected a file", path=path)
    special = kind_of(st.st_mode)
    if special:
        raise InputError(f"is {special}, not a regular file", path=path)
    return path


def check_input_dir(path: str | Path) -> Path:
    """Refuse anything but an existing folder."""
    path = Path(path)
    st = _stat(path)
    if st is None:
        raise InputError("folder not found", path=path)
    if not stat.S_ISDIR(st.st_mode):
        raise InputError("is not a folder", path=path)
    return path


def _check_name_lengths(path: Path) -> None:
    if len(os.fsencode(str(path))) >= 4096:
        raise InputError("path is too long (over 4,096 bytes)", path=str(path)[:80] + "...")
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise InputError(f"a name in this path is over 255 bytes ({part[:40]}...)", path=str(path)[:80])


def _nearest_existing(path: Path) -> Path:
    """The closest ancestor of ``path`` that exists (``path`` itself excluded)."""
    parent = path.absolute().parent
    while _stat(parent) is None and parent != parent.parent:
        parent = parent.parent
    return parent


def _probe_writable(folder: Path, target: Path) -> None:
    """Create and delete a scratch file in ``folder``: the only check that also holds for root and
    read-only mounts (``os.access`` says yes to root even where the write will fail)."""
    st = _stat(folder)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise InputError(f"cannot create it: {folder} is a file, not a folder", path=target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dd-write-check-", dir=folder)
    except OSError as err:
        raise InputError(f"cannot write in {folder}: {_why(err)}", path=target) from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path: str | Path) -> Path:
    """``path`` can be written atomically: not a folder, not a dangling or looping symlink, not a special
    file, names not too long, and its folder (or the nearest existing ancestor) writable."""
    path = Path(path)
    _check_name_lengths(path)
    link = _stat(path, follow=False)
    if link is not None and stat.S_ISLNK(link.st_mode) and _stat(path) is None:
        raise InputError("is a symlink to a missing file; remove it or give another path", path=path)
    st = _stat(path)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise InputError("is a folder; give a file name", path=path)
        special = kind_of(st.st_mode)
        if special:
            raise InputError(f"is {special}; give a regular file name", path=path)
    parent = path.absolute().parent
    _probe_writable(parent if _stat(parent) is not None else _nearest_existing(path), path)
    return path


def check_output_dir(path: str | Path) -> Path:
    """``path`` is (or can be created as) a writable folder: not a file, not a dangling symlink."""
    path = Path(path)
    _check_name_lengths(path)
    link = _stat(path, follow=False)
    if link is not None and stat.S_ISLNK(link.st_mode) and _stat(path) is None:
        raise InputError("is a symlink to a missing folder; remove it or give another path", path=path)
    st = _stat(path)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise InputError("exists and is not a folder", path=path)
    _probe_writable(path if st is not None else _nearest_existing(path), path)
    return path

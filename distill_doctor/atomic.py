"""Atomic file writes: a reader never sees a half-written file, and a crash leaves the old one.

:func:`atomic_write_set` extends this to several files that belong together (report.json,
report.md, report.html): every new file is written in full before any old one is replaced, and
if a replacement fails the ones already replaced are put back, so the folder holds either the
whole old set or the whole new one, never a mix (on a full disk a rerun used to leave a new
report.json and report.md next to the old report.html).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path


def _default_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the process umask (mkstemp uses 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _unlink_quietly(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _stage(path: Path, data: bytes) -> str:
    """Write ``data`` in full to a temporary file beside ``path`` (fsynced); return its name.

    The file gets the permissions an ordinary write would give it (an existing file keeps its own).
    On any error the temporary file is removed and the error re-raised.
    """
    mode = path.stat().st_mode & 0o777 if path.exists() else _default_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _stage(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_set(folder: str | Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write ``files`` (name -> bytes) into ``folder`` as one set: all new, or (after an error) all old.

    1. every new file is staged in full (a full disk fails here, before anything is replaced);
    2. each existing file gets a hard-link backup;
    3. the staged files are renamed into place; if one rename fails, the files already replaced
       are restored from their backups (or removed, when there was no old file) and the error is
       re-raised.
    Only a kill during the three renames of step 3 (microseconds) can leave a mix.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / name for name in files]
    staged: list[str] = []
    try:
        for target, data in zip(targets, files.values()):
            staged.append(_stage(target, data))
    except BaseException:
        for tmp in staged:
            _unlink_quietly(tmp)
        raise
    backups = _backups(targets)
    done: list[Path] = []
    try:
        for tmp, target in zip(staged, targets):
            os.replace(tmp, target)
            done.append(target)
    except BaseException:
        for target in done:
            old = backups.get(target)
            if old is not None:
                os.replace(old, target)
            else:
                _unlink_quietly(target)
        for tmp in staged:
            _unlink_quietly(tmp)
        for old in backups.values():
            _unlink_quietly(old)
        raise
    for old in backups.values():
        _unlink_quietly(old)
    _fsync_dir(folder)
    return targets


def _backups(targets: list[Path]) -> dict[Path, str]:
    """A hard link to each existing target (else a copy), under a hidden temporary name."""
    out: dict[Path, str] = {}
    try:
        for target in targets:
            if target.is_file():
                name = str(target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
                try:
                    os.link(target, name)
                except OSError:  # a file system without hard links: copy (report files are small)
                    shutil.copy2(target, name)
                out[target] = name
    except BaseException:
        for name in out.values():
            _unlink_quietly(name)
        raise
    return out

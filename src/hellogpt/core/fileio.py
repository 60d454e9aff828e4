"""Atomic writes: a file or a folder is either there whole or not at all.

Write under a temporary name in the same folder, fsync, then rename to the final
name (a rename within one file system is atomic). A crash, a Ctrl-C or an error
halfway leaves no half-written file behind, only, at worst, nothing. A folder is
renamed into place the same way, and a rename never replaces a folder that has
files in it, so a folder that is there is never overwritten either.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


def temporary_name(beside: Path) -> Path:
    """A hidden name next to `beside` that carries this process's id: .<name>.<pid>-<random>.tmp. The id
    lets a later run tell a leftover of a killed process (remove_stale_temporaries) from work in progress."""
    beside = Path(beside)
    return beside.with_name(f".{beside.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")


def remove_stale_temporaries(beside: Path, any_name: bool = False) -> None:
    """Remove the temporaries of `beside` (files or folders named by temporary_name; with any_name, those of
    every name in its folder) whose process has ended: what a process killed mid-write (kill -9, a power cut)
    left behind."""
    beside = Path(beside)
    if not beside.parent.is_dir():
        return
    for path in beside.parent.glob(".*.*.tmp" if any_name else f".{glob.escape(beside.name)}.*.tmp"):
        pid = path.name[:-len(".tmp")].rsplit(".", 1)[-1].split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it becomes `path`.

        with atomic_path(out) as tmp:
            tmp.write_bytes(data)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def temporary_folder(beside: Path) -> Iterator[Path]:
    """An empty hidden folder next to `beside` (same file system), removed on leaving unless
    publish_folder has given it its final name."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(beside)
    tmp = temporary_name(beside)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_folder(tmp: Path, targets: Iterable[Path]) -> Path | None:
    """Make the files in `tmp` durable and readable as any file the user creates (some libraries write
    theirs private: safetensors' 0600), then rename `tmp` to the first of `targets` that is free
    (absent, or an empty folder). Returns that target, or None if every one was taken."""
    mode = 0o666 & ~_umask()
    for path in tmp.iterdir():
        os.chmod(path, mode)
        fsync_file(path)
    fsync_dir(tmp)
    for target in targets:
        try:
            os.rename(tmp, target)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                continue  # taken, perhaps by another process a moment ago
            raise
        fsync_dir(target.parent)
        return target
    return None

"""Atomic writes: a file or a folder is either there whole or not at all.

Write under a temporary name in the same folder, fsync, then rename to the final
name (a rename within one file system is atomic). A crash, a Ctrl-C or an error
halfway leaves no half-written file behind, only, at worst, nothing. A folder is
renamed into place the same way, and a rename never replaces a folder that has
files in it, so a folder that is there is never overwritten either.
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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
    tmp = beside.with_name(f".{beside.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
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

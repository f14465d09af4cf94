"""Writing the index volume's small shared files: whole or not at all, and one read-modify-write at a time.

Several processes write the same files of a shared index volume (two
indexers, the monitor, ``dreamstream rollout``), often in containers where
every process is PID 1: a temp file named after the PID is shared by them,
so one writer's rename publishes another's half-written bytes (measured on
main: 215 of 600 concurrent writes of ``SERVING``/``MONITOR.json`` torn or
lost). Here the temp file is ``mkstemp``'s (a unique name made with
``O_EXCL`` in the target's own folder, so the rename never crosses a file
system), and read-modify-writes (``SERVING``, ``HISTORY.json``) hold an
``flock`` on a lock file beside the target for the whole read, change and
write, so no update is lost between a read and the write after it.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator


def fsync_dir(path: Path) -> None:
    """fsync a directory so the names created in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` so a reader sees the old bytes or the new ones, never half (unique temp file, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; readers may run as other users of the volume
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``.<name>.lock`` beside ``path`` for a read-modify-write of ``path``.

    Why a separate lock file: ``path`` itself is replaced by a rename, so a
    lock on it would be on an inode that no longer has the name. The lock is
    released when the process dies, so a crashed writer never wedges the others.
    """
    path = Path(path)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock

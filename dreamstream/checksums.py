"""sha256 of files and bytes: how bundles and index versions prove they are whole.

One implementation for both, so the model bundle check and the index shard
check can never disagree on what a checksum is.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 4 MiB blocks (shards and models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` for a file name read from a manifest or pointer; ``ValueError`` when it would leave ``folder``.

    A manifest (a bundle's, an index version's) or ``CURRENT`` is data, and
    data may be hostile: ``../../etc/passwd`` or an absolute path must not
    make a process read (or checksum) a file outside the folder it serves.
    """
    if not isinstance(name, str) or not name or "\x00" in name or Path(name).is_absolute():
        raise ValueError(f"file name {name!r:.100} is empty or absolute")
    folder = Path(folder)
    path = folder / name
    if ".." in Path(name).parts or not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"file name {name!r:.100} points outside {folder}")
    return path


def folder_fingerprint(folder: Path) -> tuple:
    """What a folder's files look like on disk without reading them: (name, size, mtime, inode) of each, sorted.

    Why: a bundle or an index version that failed its checks is not
    re-read and re-hashed on every poll (gigabytes, twice a second); it is
    retried when this changes, i.e. when someone copies it again or repairs
    it in place. ``()`` for a folder that is not there.
    """
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return ()
    except OSError as err:
        return (("!", str(err)),)
    out = []
    for entry in entries:
        try:
            st = entry.stat()
        except OSError:
            out.append((entry.name, -1, -1, -1))
            continue
        out.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(sorted(out))


def file_fingerprint(path: Path) -> tuple:
    """(size, mtime, inode) of one file, ``()`` when it is not there: a pointer file changed or not."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_size, st.st_mtime_ns, st.st_ino)

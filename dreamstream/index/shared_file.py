"""Reading the small files processes share on the index volume, where any failure is the file's corruption.

``CURRENT``, ``SERVING``, ``HISTORY.json``, ``MONITOR.json`` and the
manifests (an index version's, a bundle's) are written by other processes
and by people. A reader must survive every shape of them: not UTF-8, not
JSON, JSON of the wrong shape (``[]`` where a map belongs, a list where a
string belongs), a folder where a file belongs, a file it may not read, a
file too large to be one of them. Each file has one parser (next to its
writer) built on these helpers, and every way such a file can be wrong
raises the one error its readers already handle (:class:`IndexCorruptError`
for the index volume, ``BundleError`` for a bundle), never a ``TypeError``
or ``UnicodeDecodeError`` that would kill a monitor or wedge a client.
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

MAX_BYTES = 16 << 20  # the largest shared file read (a manifest of a thousand shards is ~300 KB)


class IndexCorruptError(RuntimeError):
    """A file of the index volume that cannot be what it claims to be (missing, wrong checksum, wrong shape)."""


def read_bytes(path: Path, error: type[Exception] = IndexCorruptError, max_bytes: int = MAX_BYTES) -> bytes | None:
    """The bytes of a shared file, None when there is none; ``error`` when it cannot be read as one.

    A folder, a device, a file this process may not read or one over
    ``max_bytes`` are corruption of the shared file, said with its path.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: a FIFO in a file's place must not hang us
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a file; remove it (its writer recreates it)") from None
    except OSError as err:
        raise error(f"{path} cannot be read ({err.strerror or err})") from None
    try:
        info = os.fstat(fd)
        mode = info.st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise error(f"{path} is {kind}, not a file; remove it (its writer recreates it)")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(min(info.st_size, max_bytes) + 1)  # a size, not max_bytes: read() allocates what it is asked
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a file; remove it (its writer recreates it)") from None
    except OSError as err:
        raise error(f"{path} cannot be read ({err.strerror or err})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{path} is over {max_bytes} bytes, larger than any file of its kind; it is not one")
    return data


def read_text(path: Path, error: type[Exception] = IndexCorruptError) -> str | None:
    """A shared file as UTF-8 text (None when there is none)."""
    data = read_bytes(path, error)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_json(path: Path, error: type[Exception] = IndexCorruptError) -> Any:
    """A shared file's JSON value (None when there is no file: JSON's own null is refused as not a value)."""
    text = read_text(path, error)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        raise error(f"{path} is not valid JSON ({err})") from None
    except RecursionError:
        raise error(f"{path} nests too deeply to be what it claims") from None
    if value is None:
        raise error(f"{path} holds JSON null")
    return value


def want(value: Any, kind: type | tuple[type, ...], where: str, error: type[Exception] = IndexCorruptError) -> Any:
    """``value`` when it is of ``kind`` (a bool is not a number here; numbers are finite), else ``error``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    numeric = any(k in (int, float) for k in kinds)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise error(f"{where} must be {names}, got {type(value).__name__} {value!r:.60}")
    if numeric and isinstance(value, float) and not math.isfinite(value):
        raise error(f"{where} must be a finite number, got {value!r}")
    return value


def field_of(data: dict, name: str, kind: type | tuple[type, ...], where: str, default: Any = ...,
             error: type[Exception] = IndexCorruptError) -> Any:
    """``data[name]`` checked by :func:`want`; ``default`` when it is absent (no default: required)."""
    if name not in data:
        if default is ...:
            raise error(f"{where} has no '{name}'")
        return default
    return want(data[name], kind, f"{where} '{name}'", error)

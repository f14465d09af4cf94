"""Which namespaces' CURRENT a reader refused, and whether anything changed on disk since.

A reader (the client's follower thread, the monitor) polls each namespace's
``CURRENT`` every half second. Before this memory a version that failed its
checks was re-read and re-hashed at every poll when the failure was not a
checksum one (a non-UTF-8 ``CURRENT``, a manifest of the wrong shape), and
a version refused by name stayed refused even after it was copied again.
Now a refusal remembers the namespace's on-disk state (``CURRENT``'s and the
version folder's fingerprints, :func:`dreamstream.checksums.folder_fingerprint`:
stat calls only) and the namespace is retried exactly when that changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from dreamstream.checksums import file_fingerprint, folder_fingerprint
from dreamstream.index.layout import CURRENT, is_version_name
from dreamstream.index.shared_file import read_bytes


def disk_state(folder: Path) -> tuple:
    """The fingerprint of a namespace folder's ``CURRENT`` and of the version folder it names (stat calls, ~one read)."""
    pointer = file_fingerprint(Path(folder) / CURRENT)
    try:
        raw = read_bytes(Path(folder) / CURRENT, max_bytes=256)
        name = raw.decode("utf-8").strip() if raw else ""
    except Exception:  # any unreadable pointer: its own fingerprint says when it changes
        return (pointer,)
    return (pointer, folder_fingerprint(Path(folder) / name) if is_version_name(name) else ())


class Refusals:
    """Namespace -> the disk state it was refused in; retried once that state changes."""

    def __init__(self) -> None:
        self._at: dict[str, tuple] = {}

    def unchanged(self, space: str, state: tuple) -> bool:
        """Was ``space`` refused in exactly this disk state (so loading it again would fail again)?"""
        return self._at.get(space) == state

    def refuse(self, space: str, state: tuple) -> None:
        self._at[space] = state

    def clear(self, space: str) -> None:
        self._at.pop(space, None)

    def __contains__(self, space: str) -> bool:
        return space in self._at


T = TypeVar("T")


def load_unless_refused(refusals: Refusals | None, space: str, state: tuple, load: Callable[[], T],
                        refused: type[Exception]) -> T | None:
    """``load()`` unless ``space`` was refused in this same ``state``; a ``refused`` error marks it, a load clears it.

    One mechanism for every backend: the Faiss reader's state is the folder on
    disk, Milvus's the collection its alias names.
    """
    if refusals is not None and refusals.unchanged(space, state):
        return None
    try:
        loaded = load()
    except refused:
        if refusals is not None:
            refusals.refuse(space, state)
        raise
    if refusals is not None:
        refusals.clear(space)
    return loaded

"""Making a built version current, atomically, and pruning old ones after a grace period.

Readers only ever follow ``CURRENT``; it names a folder that is complete and
fsynced before the rename that makes it current (write temp, fsync, rename,
fsync the folder), so a reader sees the old version or the new one, never a
mix. Old versions stay on disk for ``grace_s`` after they stop being current
because a reader may still be loading them. When each version was published
is kept in ``HISTORY.json`` so a retired version's age is known exactly.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dreamstream.index.atomic_file import fsync_dir, locked, replace_atomically  # noqa: F401  (replace_atomically re-exported)
from dreamstream.index.layout import BUILDING_PREFIX, CURRENT, HISTORY, is_version_name
from dreamstream.index.shared_file import IndexCorruptError, field_of, read_json, read_text, want

if TYPE_CHECKING:  # builder imports faiss: readers of CURRENT and SERVING (replay, rollout) must not load it
    from dreamstream.index.builder import BuiltVersion

log = logging.getLogger(__name__)

__all__ = ["CURRENT", "HISTORY", "read_current", "read_history", "replace_atomically", "install", "discard", "prune"]


def read_current(index_dir: Path) -> str | None:
    """The current version's folder name, or None when nothing is published yet; ``IndexCorruptError`` otherwise.

    The parser of ``CURRENT``: one line naming a version folder right under
    ``index_dir`` (``v20260101T000000.000001Z``); anything else (not UTF-8,
    a folder, a path, another name) is a corrupt pointer.
    """
    path = Path(index_dir) / CURRENT
    text = read_text(path)
    if text is None:
        return None
    name = text.strip()
    if name and not is_version_name(name):  # a version is a folder right under index_dir, named by the builder
        raise IndexCorruptError(f"{path} names {name!r:.100}, which is not a version folder of {index_dir}; "
                                "republish the index")
    return name or None


def read_history(index_dir: Path) -> list[dict]:
    """``[{version, published_at}]`` oldest first (``[]`` when there is none); ``IndexCorruptError`` for any other shape."""
    path = Path(index_dir) / HISTORY
    data = read_json(path)
    if data is None:
        return []
    where = str(path)
    for n, entry in enumerate(want(data, list, where)):
        want(entry, dict, f"{where} entry {n}")
        field_of(entry, "version", str, f"{where} entry {n}")
        field_of(entry, "published_at", (int, float), f"{where} entry {n}")
    return data


def _history_or_empty(index_dir: Path) -> list[dict] | None:
    """The history, or None (said in the log) when it is unreadable: then no version's retirement time is known."""
    try:
        return read_history(index_dir)
    except IndexCorruptError as err:
        log.error("%s; no version is pruned until the next publish rewrites it", err)
        return None


def install(built: "BuiltVersion", index_dir: Path) -> Path:
    """Move a built version into place and make it CURRENT. Returns its folder.

    ``HISTORY.json`` is extended under its lock (:func:`record_published`);
    an unreadable history is replaced by one that starts here (the versions
    it named are then never pruned: not deleting what cannot be dated is the
    safe side).
    """
    index_dir = Path(index_dir)
    final = index_dir / built.manifest.version
    built.folder.rename(final)
    fsync_dir(index_dir)
    record_published(index_dir, built.manifest.version)
    replace_atomically(index_dir / CURRENT, (built.manifest.version + "\n").encode("utf-8"))
    return final


def _stale_temp_files(index_dir: Path, before: float) -> list[str]:
    """Remove the temp files of writers killed mid-write (``.<name>.<random>.tmp``, atomic_file) older than ``before``."""
    removed = []
    for path in index_dir.glob(".*.tmp"):
        try:
            if path.is_file() and path.stat().st_mtime < before:
                path.unlink()
                removed.append(path.name)
        except OSError:
            continue
    return removed


def record_published(index_dir: Path, version: str) -> None:
    """Append ``version`` to ``HISTORY.json``: read, extend and write under its lock, so no publisher's entry is lost."""
    with locked(Path(index_dir) / HISTORY):
        history = _history_or_empty(index_dir) or []
        history.append({"version": version, "published_at": time.time()})
        replace_atomically(Path(index_dir) / HISTORY, json.dumps(history).encode("utf-8"))


def discard(built: "BuiltVersion") -> None:
    """Delete a version that will not be published (e.g. its recall is under the floor)."""
    shutil.rmtree(built.folder, ignore_errors=True)


def prune(index_dir: Path, grace_s: float, now: float | None = None) -> list[str]:
    """Delete versions that stopped being current more than ``grace_s`` ago. Returns the names removed.

    A version stops being current when the next one is published. Leftover
    ``.building-*`` folders (a build that crashed) and temp files of a
    writer killed mid-write go once older than the grace. An unreadable ``CURRENT`` or ``HISTORY.json`` prunes nothing: what
    serves, or since when a version stopped, is then unknown.
    """
    index_dir = Path(index_dir)
    now = time.time() if now is None else now
    try:
        current = read_current(index_dir)
    except IndexCorruptError as err:
        log.error("not pruning: %s", err)
        return []
    removed: list[str] = []
    with locked(index_dir / HISTORY):
        history = _history_or_empty(index_dir)
        if history is None:
            return []
        retired_at = {h["version"]: nxt["published_at"] for h, nxt in zip(history, history[1:])}
        for folder in sorted(p for p in index_dir.iterdir() if p.is_dir() and not p.is_symlink()):
            name = folder.name
            if name == current:
                continue
            if name.startswith(BUILDING_PREFIX):
                since = folder.stat().st_mtime
            elif name in retired_at and is_version_name(name):
                since = retired_at[name]
            else:
                continue  # not ours: never delete what we did not publish
            if now - since >= grace_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(name)
        if removed:
            kept = [h for h in history if h["version"] not in removed]
            replace_atomically(index_dir / HISTORY, json.dumps(kept).encode("utf-8"))
    removed += _stale_temp_files(index_dir, now - grace_s)
    if removed:
        log.info("pruned versions=%s", removed)
    return removed

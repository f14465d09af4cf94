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
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dreamstream.index.manifest import IndexCorruptError, fsync_dir, write_bytes_synced

if TYPE_CHECKING:  # builder imports faiss: readers of CURRENT and SERVING (replay, rollout) must not load it
    from dreamstream.index.builder import BuiltVersion

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
HISTORY = "HISTORY.json"


def read_current(index_dir: Path) -> str | None:
    """The current version's folder name, or None when nothing is published yet."""
    try:
        name = (Path(index_dir) / CURRENT).read_text("utf-8").strip()
    except FileNotFoundError:
        return None
    if name and (name != Path(name).name or name in (".", "..")):  # a version is a folder right under index_dir
        raise IndexCorruptError(f"{Path(index_dir) / CURRENT} names {name!r:.100}, which is not a version folder of "
                                f"{index_dir}; republish the index")
    return name or None


def replace_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` so a reader sees the old bytes or the new ones, never half (a temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write_bytes_synced(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_history(index_dir: Path) -> list[dict]:
    """``[{version, published_at}]`` oldest first."""
    try:
        return json.loads((Path(index_dir) / HISTORY).read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return []


def install(built: BuiltVersion, index_dir: Path) -> Path:
    """Move a built version into place and make it CURRENT. Returns its folder."""
    index_dir = Path(index_dir)
    final = index_dir / built.manifest.version
    os.rename(built.folder, final)
    fsync_dir(index_dir)
    history = read_history(index_dir) + [{"version": built.manifest.version, "published_at": time.time()}]
    replace_atomically(index_dir / HISTORY, json.dumps(history).encode("utf-8"))
    replace_atomically(index_dir / CURRENT, (built.manifest.version + "\n").encode("utf-8"))
    return final


def discard(built: BuiltVersion) -> None:
    """Delete a version that will not be published (e.g. its recall is under the floor)."""
    shutil.rmtree(built.folder, ignore_errors=True)


def prune(index_dir: Path, grace_s: float, now: float | None = None) -> list[str]:
    """Delete versions that stopped being current more than ``grace_s`` ago. Returns their names.

    A version stops being current when the next one is published. Leftover
    ``.building-*`` folders (a build that crashed) go once older than the grace.
    """
    index_dir = Path(index_dir)
    now = time.time() if now is None else now
    current = read_current(index_dir)
    history = read_history(index_dir)
    retired_at = {h["version"]: nxt["published_at"] for h, nxt in zip(history, history[1:])}
    removed: list[str] = []
    for folder in sorted(p for p in index_dir.iterdir() if p.is_dir()):
        name = folder.name
        if name == current:
            continue
        if name.startswith(".building-"):
            since = folder.stat().st_mtime
        elif name in retired_at:
            since = retired_at[name]
        else:
            continue  # not ours: never delete what we did not publish
        if now - since >= grace_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(name)
    if removed:
        kept = [h for h in history if h["version"] not in removed]
        replace_atomically(index_dir / HISTORY, json.dumps(kept).encode("utf-8"))
        log.info("pruned versions=%s", removed)
    return removed

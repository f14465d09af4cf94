"""The index backend seam: where a namespace's versions live and how a reader loads its current one.

Two backends with one contract (``DREAMSTREAM_INDEX_BACKEND``):

- ``faiss`` (the default, and the embedded path of ``make demo``): version
  folders under the index dir, ``CURRENT`` names one, every reader loads
  the whole version into its own memory (:mod:`dreamstream.client`).
- ``milvus``: a collection per version in a Milvus cluster, the namespace's
  alias is its ``CURRENT`` (:mod:`~dreamstream.index.milvus_publish`,
  :mod:`~dreamstream.index.milvus_version`); readers hold nothing but a
  connection.

Either way the ``SERVING`` pointer and ``MONITOR.json`` stay small files in
the index dir (:mod:`dreamstream.serving`), so rollouts, rollback and the
live gate are the same commands. A backend answers three questions:
``current(space)`` (the version name, or None), ``load(space, have,
refusals)`` (the newer version, or None when unchanged or refused and
unchanged) and ``where(space)`` (for messages); ``rollout retire`` removes
a namespace's versions (:func:`dreamstream.rollout.retire`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from dreamstream.index.publish import read_current
from dreamstream.index.refusals import Refusals
from dreamstream.serving import namespace_dir


class IndexBackend(Protocol):
    name: str

    def current(self, space: str) -> str | None: ...

    def load(self, space: str, have: Any = None, refusals: Refusals | None = None) -> Any: ...

    def where(self, space: str) -> str: ...



class FaissBackend:
    """Faiss versions in folders of the index dir (the layout of :mod:`dreamstream.index.publish`)."""

    name = "faiss"

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = Path(index_dir)

    def current(self, space: str) -> str | None:
        return read_current(namespace_dir(self.index_dir, space))

    def where(self, space: str) -> str:
        return str(namespace_dir(self.index_dir, space))

    def load(self, space: str, have: Any = None, refusals: Refusals | None = None) -> Any:
        from dreamstream.client import load_space

        return load_space(self.index_dir, space, have, refusals)



def index_backend(settings: Any, index_dir: Path | None = None) -> IndexBackend:
    """The backend the settings choose (``index_dir`` overrides the settings' for Faiss)."""
    if settings.index_backend == "milvus":
        from dreamstream.index.milvus_connection import MilvusNames, connect_settings
        from dreamstream.index.milvus_version import MilvusBackend

        return MilvusBackend(connect_settings(settings), MilvusNames(settings.topic_prefix), settings.milvus_uri)
    return FaissBackend(Path(index_dir) if index_dir is not None else Path(settings.index_dir))

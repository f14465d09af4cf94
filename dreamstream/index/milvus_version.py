"""Reading index versions from Milvus: the namespace's alias resolved to a collection, searched like a loaded Faiss version.

:class:`MilvusVersion` has the surface :func:`dreamstream.client.rank` uses
(``name``, ``manifest``, ``dim``, ``size``, ``search_lists``, ``places_of``,
``vectors_at``, ``ids_at``), so the blend, the exclusion of watched items and
the pairing of a record with its own namespace's version are the client's
code for both backends. A version is pinned to the collection the alias
named when it was loaded: a search never follows the alias mid-way, and a
reader moves to a new version only in :meth:`MilvusBackend.load`, like
``CURRENT``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Hashable, Iterable

import numpy as np

from dreamstream.index.manifest import IndexCorruptError, Manifest
from dreamstream.index.milvus_connection import MANIFEST_PROPERTY, MilvusNames
from dreamstream.index.milvus_publish import ID_FIELD, VECTOR_FIELD, current_collection, drop_namespace, search_collection
from dreamstream.index.refusals import load_unless_refused


@dataclass(frozen=True)
class MilvusVersion:
    """One published version: a collection in Milvus, with its manifest. Shared by concurrent searches."""

    name: str
    manifest: Manifest
    collection: str
    client: Any

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def items(self) -> int:
        return self.manifest.items

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of the collection: (ids [Q,k] object, scores [Q,k]); missing slots are None / -inf."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries are {queries.shape[1]}-d but index version {self.name} is {self.dim}-d")
        if self.items == 0:
            return np.full((len(queries), 0), None, dtype=object), np.zeros((len(queries), 0), dtype=np.float32)
        return search_collection(self.client, self.collection, queries, min(k, self.items), self.manifest.shards[0].nprobe)

    @property
    def size(self) -> int:
        """Items in the version (what :func:`dreamstream.client.rank` may fetch at most)."""
        return self.manifest.items

    def search_lists(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`search` (a hit's place is its id; None where missing) and a bound [Q] on what it did not return: the
        ``k``-th score (-inf when fewer came)."""
        ids, scores = self.search(queries, k)
        bound = scores[:, -1] if scores.shape[1] and self.items > k else np.full(len(scores), -np.inf, np.float32)
        return ids, scores, bound

    def places_of(self, items: Iterable[Hashable]) -> np.ndarray:
        """The places of ``items``: their ids (an id the collection lacks simply never matches a hit)."""
        return np.asarray([str(item) for item in items], dtype=object)

    def vectors_at(self, places: np.ndarray) -> np.ndarray:
        """The stored vectors of the places :meth:`search_lists` returned."""
        return self.vectors([str(place) for place in np.asarray(places, dtype=object).reshape(-1)])

    def ids_at(self, places: np.ndarray) -> np.ndarray:
        """The ids of places: the places themselves."""
        return np.asarray(places, dtype=object)

    def vectors(self, ids: list[str]) -> np.ndarray:
        """The stored vectors [len(ids), D] of items of this version (every id must be in it)."""
        rows = self.client.get(self.collection, ids=list(ids), output_fields=[ID_FIELD, VECTOR_FIELD])
        by_id = {str(row[ID_FIELD]): row[VECTOR_FIELD] for row in rows}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise IndexCorruptError(f"collection {self.collection} lacks {len(missing)} ids it returned, e.g. {missing[0]!r:.80}")
        return np.asarray([by_id[i] for i in ids], dtype=np.float32).reshape(len(ids), self.dim)


def read_collection_manifest(client: Any, collection: str) -> Manifest:
    """The manifest a published collection carries; a collection without a valid one is refused."""
    properties = client.describe_collection(collection).get("properties", {})
    raw = properties.get(MANIFEST_PROPERTY)
    if not raw:
        raise IndexCorruptError(f"Milvus collection {collection} has no {MANIFEST_PROPERTY} property: it was not published "
                                "by `dreamstream indexer`")
    try:
        return Manifest.from_json(json.loads(raw))
    except (ValueError, TypeError, KeyError) as err:
        raise IndexCorruptError(f"Milvus collection {collection}: {MANIFEST_PROPERTY} is not a valid manifest ({err})") from None


class MilvusBackend:
    """Index versions in Milvus: a namespace's alias is its CURRENT (see :mod:`dreamstream.index.backend`)."""

    name = "milvus"

    def __init__(self, client: Any, names: MilvusNames, uri: str = "") -> None:
        self.client, self.names, self.uri = client, names, uri

    def current(self, space: str) -> str | None:
        """The version the namespace's alias points at (None: nothing published)."""
        collection = current_collection(self.client, self.names.alias(space))
        return None if collection is None else self.names.version_of(space, collection) or collection

    def where(self, space: str) -> str:
        return f"Milvus alias {self.names.alias(space)} at {self.uri or 'the configured URI'}"

    def load(self, space: str, have: Any = None, refusals: Any = None) -> MilvusVersion | None:
        """The namespace's current version when it is not ``have`` (None: no alias yet, unchanged, or refused and unchanged).

        Raises ``RefusedVersion`` for a collection without a valid manifest or
        built for another namespace, and :class:`IndexCorruptError` for one
        dropped while loading (the next check sees the newer alias). With
        ``refusals`` (:mod:`dreamstream.index.refusals`) a refused namespace is
        not read again until its alias points elsewhere.
        """
        from dreamstream.client import RefusedVersion

        collection = current_collection(self.client, self.names.alias(space))
        if collection is None:
            return None
        return load_unless_refused(refusals, space, ("milvus", collection), lambda: self._load(space, collection, have),
                                   RefusedVersion)

    def _load(self, space: str, collection: str, have: Any) -> MilvusVersion | None:
        from dreamstream.client import RefusedVersion

        version = self.names.version_of(space, collection) or collection
        if have is not None and have.name == version:
            return None
        if not self.client.has_collection(collection):
            raise IndexCorruptError(f"Milvus collection {collection} vanished while loading")
        try:
            manifest = read_collection_manifest(self.client, collection)
        except IndexCorruptError as err:
            raise RefusedVersion(version, str(err)) from None
        if manifest.space != space or manifest.version != version:
            raise RefusedVersion(version, f"Milvus collection {collection} holds version {manifest.version} of namespace "
                                          f"{manifest.space!r}, not {version} of {space!r}")
        self.client.load_collection(collection)  # a no-op when loaded; after a cluster restart it loads it again
        return MilvusVersion(version, manifest, collection, self.client)

    def retire(self, space: str) -> str:
        """Drop the namespace's alias and collections (``rollout retire``); says what went."""
        dropped = drop_namespace(self.client, self.names, space)
        return f"{len(dropped)} Milvus collections of alias {self.names.alias(space)}"

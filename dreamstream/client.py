"""Retrieval for ranking services: search the current index version with a user's vectors.

``Retriever(index_dir)`` loads the version ``CURRENT`` names, verifying every
shard's sha256, and follows ``CURRENT`` as the indexer publishes new ones. A
background thread checks at most every ``check_interval_ms`` and loads the
new version off to the side; searches keep using the version they started
with, and the swap is a single reference assignment, so a search never sees
half a version. A version that fails verification is refused (the error
names the file) and the previous one keeps serving; it is not read again
until ``CURRENT`` or one of its files changes on disk
(:mod:`dreamstream.index.refusals`). A record is ranked only if it holds at
most the version's bundle K interests (:func:`max_interests`).

``search(user_record, k)`` searches every shard with the user vector and each
interest vector and merges them with :mod:`dreamstream.merge`, exactly as
the offline evaluation ranks.

Memory: ids are packed (:mod:`dreamstream.index.item_ids`); a compressed
version (``DREAMSTREAM_INDEX_KIND=ivf-pq``) keeps ~37 B per item in the
heap and memory-maps its float32 vectors file to re-rank each shard's short
list exactly (:mod:`dreamstream.index.rerank`), so the scores, the blend and
the exclusions are computed on exact vectors whatever the kind.

Serving note (measured by ``dreamstream bench-index`` on 2 busy cores): one
user search (user + 4 interests, k=50, 1M items) takes ~5 ms at p50 with
``faiss.omp_set_num_threads(1)`` and several times longer with more OpenMP
threads, which spin against each other for five-query batches; a ranking
service should set one Faiss thread and scale with request threads. BLAS
(the exact blend's matrix product) spins the same way: a Retriever puts the
process's BLAS on one thread (``blas_threads``,
:mod:`dreamstream.index.ranking_process`).
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping

import faiss
import numpy as np

from dreamstream.checksums import inside
from dreamstream.codec import bin_to_vec
from dreamstream.index.backend import FaissBackend, IndexBackend
from dreamstream.index.item_ids import ItemIds
from dreamstream.index.manifest import IndexCorruptError, Manifest, read_manifest, read_verified
from dreamstream.index.publish import read_current
from dreamstream.index import ranking_process
from dreamstream.index.rerank import search_reranked
from dreamstream.index.shard_vectors import open_vectors
from dreamstream.index.sharding import shard_of
from dreamstream.index.refusals import Refusals, disk_state, load_unless_refused
from dreamstream.kafka.security import kafka_python_options
from dreamstream.blend import INTEREST_WEIGHT, blend_scores
from dreamstream.merge import query_weights
from dreamstream.serving import Serving, namespace_dir, read_serving

log = logging.getLogger(__name__)

__all__ = ["Retriever", "LoadedVersion", "IndexCorruptError", "IndexNotReadyError", "load_version"]


MAX_INTERESTS = 64  # interests a record may have when the version does not say its bundle's K (older manifests)


class IndexNotReadyError(RuntimeError):
    """No index version is published yet (no CURRENT file)."""


@dataclass(frozen=True)
class LoadedVersion:
    """One index version in memory: immutable once built, shared by concurrent searches.

    Compressed shards (``exact[shard]`` not None) hold only codes in RAM;
    their short lists are re-ranked against the version's memory-mapped
    float32 vectors (:mod:`dreamstream.index.rerank`), which are also what
    :meth:`vectors` returns, so the blend is computed on exact vectors.

    What :func:`rank` needs of a version, and all another backend has to
    provide beside the Faiss one: ``dim``, ``size``, ``search_lists``
    (each hit's place, an opaque key of the backend, its score, and a bound
    on what was not returned), ``places_of`` (the places of given ids),
    ``vectors_at`` (the exact vectors of places) and ``ids_at`` (the ids of
    places). A Faiss place is
    one int64, ``shard << PLACE_BITS | row``, so ranking dedupes and excludes
    with numpy and decodes an id string only for the ``k`` it returns: at
    10M items decoding every hit of every list was a quarter of a ranking's
    CPU (docs/measurements.md).
    """

    name: str
    manifest: Manifest
    indexes: tuple[faiss.Index, ...]
    ids: tuple[ItemIds, ...]  # row i = Faiss id i, packed (no str per item in memory)
    exact: tuple[np.ndarray | None, ...] = ()  # per shard: memory-mapped float32 vectors of a compressed shard, else None

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def size(self) -> int:
        """Items in the version (what :func:`rank` may fetch at most)."""
        return sum(index.ntotal for index in self.indexes)

    def locate(self, item: str) -> tuple[int, int]:
        """(shard, row) of an item of this version (``KeyError`` when it is not in it): a binary search, no dict."""
        shard = shard_of(item, len(self.ids))
        row = self.ids[shard].find(item)
        if row < 0:
            raise KeyError(item)
        return shard, row

    def place(self, item: str) -> int:
        """The place of an item of this version, ``shard << PLACE_BITS | row`` (``KeyError`` when it is not in it)."""
        shard, row = self.locate(item)
        return shard << PLACE_BITS | row

    def places_of(self, items: Iterable[Hashable]) -> np.ndarray:
        """The places [n] int64 of those ``items`` that are in this version (the others are left out)."""
        places = []
        for item in items:
            try:
                places.append(self.place(str(item)))
            except KeyError:
                continue
        return np.asarray(places, dtype=np.int64)

    def vectors(self, ids: list[str]) -> np.ndarray:
        """The stored vectors [len(ids), D] of items of this version (every id must be in it)."""
        return self.vectors_at(np.asarray([self.place(str(item)) for item in ids], np.int64))

    def vectors_at(self, places: np.ndarray) -> np.ndarray:
        """The stored vectors of places: the exact file of a compressed shard, the index's own vectors otherwise."""
        places = np.asarray(places, dtype=np.int64).reshape(-1)
        out = np.empty((len(places), self.dim), np.float32)
        shards, rows = places >> PLACE_BITS, places & ROW_MASK
        for shard in np.unique(shards).tolist():
            mine = np.flatnonzero(shards == shard)
            exact = self.exact[shard] if self.exact else None
            if exact is not None:
                out[mine] = exact.view(np.ndarray)[rows[mine]]
            else:
                out[mine] = self.indexes[shard].reconstruct_batch(rows[mine])
        return out

    def ids_at(self, places: np.ndarray) -> np.ndarray:
        """The ids (object array of str, None where a place is -1) of places, in their shape; only these strings are made."""
        places = np.asarray(places, dtype=np.int64)
        found = np.full(places.shape, None, dtype=object)
        shards, rows = places >> PLACE_BITS, places & ROW_MASK
        for shard in np.unique(shards[places >= 0]).tolist():
            mine = (shards == shard) & (places >= 0)
            found[mine] = self.ids[shard].take(rows[mine])
        return found

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` over every shard: (ids [Q,k] object, scores [Q,k]); missing slots are None / -inf."""
        places, scores, _ = self.search_lists(queries, k)  # every shard's top k, best first: the merged top k leads
        return self.ids_at(places[:, :k]), scores[:, :k]

    def search_lists(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every shard's top ``k`` (places and scores [Q, <= shards x k], best first) and a bound [Q] on the rest.

        Why not the merged top ``k`` with its last score as the bound: an item
        no shard returned scores at most its own shard's ``k``-th score, so the
        bound is the highest of the shards' ``k``-th scores (-inf for a shard
        that returned all it holds), and every returned item is a candidate.
        With items hashed over S shards that bound sits near the global
        (S x k)-th score: the same searches give :func:`rank` lists S times
        as long, so it asks for fewer rounds (docs/measurements.md).
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries are {queries.shape[1]}-d but index version {self.name} is {self.dim}-d")
        all_places, all_scores = [], []
        bound = np.full(len(queries), -np.inf, np.float32)
        for shard, index in enumerate(self.indexes):
            if index.ntotal == 0:
                continue
            exact = self.exact[shard] if self.exact else None
            short_list = self.manifest.shards[shard].short_list if exact is not None else 0
            scores, rows = search_reranked(index, exact, queries, min(k, index.ntotal), short_list)
            scores = np.where(rows >= 0, scores, -np.inf)
            if k < index.ntotal:  # the shard holds more: what it did not return scores at most its k-th
                bound = np.maximum(bound, scores[:, -1])
            all_places.append(np.where(rows >= 0, (shard << PLACE_BITS) | rows, -1))
            all_scores.append(scores)
        if not all_places:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32), bound
        places_cat, scores_cat = np.hstack(all_places), np.hstack(all_scores)
        order = np.argsort(-scores_cat, axis=1, kind="stable")
        return np.take_along_axis(places_cat, order, 1), np.take_along_axis(scores_cat, order, 1), bound


PLACE_BITS = 40  # a Faiss place is shard << 40 | row: rows up to 10^12 per shard, shards up to 2^23
ROW_MASK = (1 << PLACE_BITS) - 1


def load_version(index_dir: Path, name: str) -> LoadedVersion:
    """Load and verify one version; raises :class:`IndexCorruptError` naming the bad file.

    Every shape a version's files can take (a manifest of the wrong shape,
    shard bytes that are not a Faiss index, an id list that is not a list of
    strings, counts or widths that disagree) is the version's corruption,
    never another exception type.
    """
    folder = Path(index_dir) / name
    manifest = read_manifest(folder)
    if manifest.version != name:
        raise IndexCorruptError(f"{folder}/manifest.json describes version {manifest.version!r:.80}, not {name}")
    indexes, ids, exact = [], [], []
    for entry in manifest.shards:
        try:
            shard_file, ids_file = inside(folder, entry.file), inside(folder, entry.ids)
            vectors_file = inside(folder, entry.vectors) if entry.vectors else None
        except ValueError as err:
            raise IndexCorruptError(f"{folder}/manifest.json: {err}; refusing index version {name}") from None
        index = _faiss_index(shard_file, read_verified(shard_file, entry.sha256), manifest.dim)
        id_list = _read_ids(ids_file, entry.ids_sha256)
        if index.ntotal != entry.count or len(id_list) != entry.count:
            raise IndexCorruptError(f"{folder / entry.file} holds {index.ntotal} vectors and {len(id_list)} ids, manifest says {entry.count}")
        if vectors_file is not None:
            exact.append(open_vectors(vectors_file, entry.count, manifest.dim, entry.vectors_sha256))
        else:
            exact.append(None)
            if isinstance(index, faiss.IndexIVF):
                index.make_direct_map()  # what reconstruct needs on an IVF-Flat shard
        indexes.append(index)
        ids.append(id_list)
    return LoadedVersion(name, manifest, tuple(indexes), tuple(ids), tuple(exact))


def _read_ids(path: Path, sha256: str) -> ItemIds:
    """A shard's ids, packed (``.ids.bin``) or as the JSON list of versions built before it."""
    data = read_verified(path, sha256)
    if path.suffix == ".json":
        return ItemIds.from_list(_id_list(path, data))
    try:
        return ItemIds.from_bytes(data)
    except ValueError as err:
        raise IndexCorruptError(f"{path} is not a valid id list ({err})") from None


def _faiss_index(path: Path, data: bytes, dim: int) -> faiss.Index:
    """A shard's Faiss index from its verified bytes; bytes that are not one, or of another width, are corruption."""
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except Exception as err:  # Faiss raises RuntimeError (and others) on bytes that are not an index
        said = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise IndexCorruptError(f"{path} is not a Faiss index ({said})") from None
    if index.d != dim:
        raise IndexCorruptError(f"{path} is a {index.d}-d index but the manifest says {dim}-d")
    return index


def _id_list(path: Path, data: bytes) -> list[str]:
    """A shard's id list (a JSON array of strings, row i = Faiss id i); any other shape is corruption."""
    try:
        ids = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise IndexCorruptError(f"{path} is not a JSON id list ({str(err)[:120]})") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise IndexCorruptError(f"{path} must be a JSON array of id strings")
    return ids


def load_space(index_dir: Path, space: str, have: LoadedVersion | None = None,
               refusals: Refusals | None = None) -> LoadedVersion | None:
    """A namespace's CURRENT version when it is not ``have`` (None: no CURRENT yet, unchanged, or refused and unchanged).

    Raises :class:`RefusedVersion` (naming it) for a version that fails
    verification or was built for another namespace, or a ``CURRENT`` that
    cannot be read. With ``refusals``, a refused namespace is not read again
    until its ``CURRENT`` or the version folder changes on disk
    (:mod:`dreamstream.index.refusals`): no re-hashing of shards at every poll.
    """
    folder = namespace_dir(index_dir, space)
    state = disk_state(folder) if refusals is not None else ()
    return load_unless_refused(refusals, space, state, lambda: _load_current(folder, space, have), RefusedVersion)


def _load_current(folder: Path, space: str, have: LoadedVersion | None) -> LoadedVersion | None:
    try:
        name = read_current(folder)
    except IndexCorruptError as err:
        raise RefusedVersion("CURRENT", str(err)) from None
    if name is None or (have is not None and have.name == name):
        return None
    try:
        loaded = load_version(folder, name)
    except IndexCorruptError as err:
        raise RefusedVersion(name, str(err)) from None
    if loaded.manifest.space != space:
        raise RefusedVersion(name, f"{folder / name} was built for namespace {loaded.manifest.space!r}, not {space!r}")
    return loaded


class RefusedVersion(IndexCorruptError):
    """An index version (or a ``CURRENT``) that fails its checks: not retried until it changes on disk."""

    def __init__(self, version: str, message: str) -> None:
        super().__init__(message)
        self.version = version


class ModelMismatch(ValueError):
    """A user record whose model namespace (item space) has no index loaded: searching it would mix two spaces."""


class Retriever:
    """Candidates for users from the current index version of their model, following SERVING and CURRENT as they move.

    The index dir's ``SERVING`` pointer (:mod:`dreamstream.serving`) names the
    model namespace readers use, and the previous one through a rollout;
    each namespace's ``CURRENT`` names its index version. A record is
    searched only with the index of its own namespace (the record's
    ``space``): never a user vector of one model against the items of another.
    """

    def __init__(
        self,
        index_dir: str | Path,
        check_interval_ms: float = 500.0,
        follow: bool = True,
        interest_weight: float = INTEREST_WEIGHT,
        wait_s: float = 0.0,
        backend: IndexBackend | None = None,
        freeze_heap: bool = True,
        blas_threads: int | None = 1,
    ) -> None:
        """Load the serving namespace's CURRENT now (waiting up to ``wait_s``); follow both pointers in a thread.

        ``interest_weight``: how much OPAL's best interest re-ranks the user
        vector's scores (:mod:`dreamstream.blend`, where the value was chosen).
        ``backend``: where the versions live (:mod:`dreamstream.index.backend`;
        default Faiss folders under ``index_dir``). ``SERVING`` is read from
        ``index_dir`` with either backend. ``freeze_heap``: after each load,
        ``gc.freeze()`` the process's heap
        (:func:`dreamstream.index.ranking_process.freeze_heap`); pass False
        if the ranking service manages its collector itself. ``blas_threads``:
        the BLAS threads of the whole process, set once here
        (:func:`dreamstream.index.ranking_process.pin_blas_threads`: the exact
        blend's matrix product is faster and steadier on one); None leaves
        them as they are.
        """
        self.index_dir = Path(index_dir)
        self.freeze_heap = freeze_heap
        if blas_threads is not None:
            ranking_process.pin_blas_threads(blas_threads)
        self.backend: IndexBackend = backend or FaissBackend(self.index_dir)
        self.check_interval_s = check_interval_ms / 1000.0
        self.interest_weight = interest_weight
        self.last_error: Exception | None = None
        self._refusals = Refusals()  # namespaces refused, retried when their files change on disk
        self.serving = Serving()
        self._versions: dict[str, Any] = {}  # namespace -> LoadedVersion or MilvusVersion (serving, and previous)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one loader at a time; searches never take it
        deadline = time.monotonic() + wait_s
        while not self.refresh() and time.monotonic() < deadline:
            time.sleep(min(0.1, self.check_interval_s))
        if self.serving.namespace not in self._versions:
            where = self.backend.where(self.serving.namespace)
            missing = "no CURRENT file" if self.backend.name == "faiss" else "no such alias yet"
            raise IndexNotReadyError(f"no index version under {where} ({missing}); is `dreamstream indexer` running"
                                     + (f" for namespace {self.serving.namespace}?" if self.serving.namespace else "?"))
        self._thread: threading.Thread | None = None
        if follow:
            self._thread = threading.Thread(target=self._follow, name="retriever-follow", daemon=True)
            self._thread.start()

    @property
    def version(self) -> LoadedVersion:
        """The serving namespace's version, the one searches of its records use right now."""
        return self._versions[self.serving.namespace]

    def version_for(self, space: str) -> LoadedVersion:
        """The loaded version of a namespace; :class:`ModelMismatch` when that namespace is not loaded."""
        found = self._versions.get(space)
        if found is None:
            loaded = ", ".join(repr(s) for s in self._versions) or "none"
            raise ModelMismatch(f"the record is in model namespace {space!r}, but {self.index_dir} serves "
                                f"{self.serving.namespace!r} (loaded: {loaded}); read the user's record from the serving "
                                f"namespace's user-embeddings topic (dreamstream.serving)")
        return found

    def refresh(self) -> bool:
        """Follow SERVING, then load each kept namespace's CURRENT if it moved. True when the serving one is loaded.

        Raises :class:`IndexCorruptError` when a new version fails
        verification; the previous version stays in service.
        """
        with self._lock:
            serving = read_serving(self.index_dir)
            error: IndexCorruptError | None = None
            for space in serving.spaces():
                try:
                    self._load(space)
                except IndexCorruptError as err:
                    error = err
            self.serving = serving
            for space in [s for s in self._versions if s not in serving.spaces()]:
                del self._versions[space]  # retired from the pointer: unload
            if error is not None:
                raise error
            return serving.namespace in self._versions

    def _load(self, space: str) -> None:
        try:
            loaded = self.backend.load(space, self._versions.get(space), self._refusals)
        except RefusedVersion as err:
            self.last_error = err
            raise
        if space not in self._refusals:
            self.last_error = None  # the namespace reads cleanly again
        if loaded is not None:
            self._versions[space] = loaded  # the atomic swap: one reference assignment
            if self.freeze_heap:
                ranking_process.freeze_heap()  # the module's function; self.freeze_heap is the switch
            log.info("index version=%s namespace=%r items=%d loaded", loaded.name, space, loaded.manifest.items)

    def _follow(self) -> None:
        said = ""  # the last failure logged: the same one is not logged again at every check
        while not self._stop.wait(self.check_interval_s):
            try:
                self.refresh()  # a refused version is skipped with stat calls until its files change
                said = ""
            except Exception as err:  # keep serving the previous version, say why (once per distinct failure)
                if str(err) != said:
                    log.error("index reload failed, previous version keeps serving: %s", err)
                said = str(err)

    def close(self) -> None:
        """Stop following the pointers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Retriever":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def search_vectors(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Raw search: the top ``k`` (id, score) of every shard merged, per query row."""
        ids, scores = self.version.search(queries, k)
        return [[(i, float(s)) for i, s in zip(row_ids, row_scores) if i is not None] for row_ids, row_scores in zip(ids, scores)]

    def search(self, user_record: Mapping[str, Any], k: int, exclude: Iterable[Hashable] = ()) -> list[tuple[str, float]]:
        """Top ``k`` items for a decoded ``user-embeddings`` value, without ``exclude`` (e.g. recent videos).

        The user vector and each interest fetch their top ``k`` (plus the
        exclusions); the union is ranked by :func:`rank` (the user vector's
        score re-ranked by the best interest, :mod:`dreamstream.blend`).
        """
        version = self.version_for(str(user_record.get("space") or ""))  # never a record against another model's index
        return rank(version, user_record, k, self.interest_weight, exclude)


def rank(version: LoadedVersion, user_record: Mapping[str, Any], k: int, interest_weight: float = INTEREST_WEIGHT,
         exclude: Iterable[Hashable] = ()) -> list[tuple[str, float]]:
    """The served ranking of one record in one loaded index version (the caller pairs them: see Retriever.search).

    The user vector and each interest fetch their top lists; the union is
    scored by :func:`dreamstream.blend.blend_scores` on the stored vectors.
    An item outside every list scores at most the user list's bound plus
    ``interest_weight`` times the best of the interest lists' bounds (a
    list's bound: the highest of its shards' ``k``-th scores,
    :meth:`LoadedVersion.search_lists`); while the ``k``-th candidate is
    below that bound the lists that hold the bound up are fetched twice as
    long (:func:`_lengthen`), so the result is the whole catalogue's top ``k``
    (exact on flat shards; IVF shards are as exact as their searches; compressed
    shards return exactly re-ranked scores, and the blend is computed on
    the exact vectors whatever the shard kind).
    """
    queries, _ = user_queries(user_record, version.dim, 1.0, max_interests(version))
    blocked = np.unique(version.places_of(exclude))
    total = version.size
    fetch = np.full(len(queries), min(total, FIRST_FETCH * k + len(blocked)))
    lists: dict[int, tuple] = {}
    while True:
        places, bounds = _fetch_lists(version, queries, fetch, blocked, lists)
        if not len(places):
            return []
        exact = queries @ version.vectors_at(places).T  # [1 + K, C]: user vector, then interests
        blended = blend_scores(exact[0], exact[1:] if len(exact) > 1 else None, interest_weight)
        order = np.argsort(-blended, kind="stable")[:k]
        bound = blend_scores(bounds[:1], bounds[1:, None] if len(bounds) > 1 else None, interest_weight)[0]
        if fetch[0] >= total or (len(order) == k and blended[order[-1]] >= bound):  # the user list holding every item: all scored
            return list(zip(version.ids_at(places[order]).tolist(), blended[order].tolist()))
        _lengthen(fetch, bounds, total)


FIRST_FETCH = 4  # lists start at 4k: 1.1 rounds per user instead of 2.9 (bench-index, 1M ivf-pq, docs/measurements.md)


def _fetch_lists(version: LoadedVersion, queries: np.ndarray, fetch: np.ndarray, blocked: np.ndarray,
                 lists: dict[int, tuple]) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' places (every list's hits, first seen first, once each, none ``blocked``) and each list's bound.

    ``lists`` keeps every query's list (length, places, scores, bound) across
    rounds, so a round searches only the lists :func:`_lengthen` doubled.
    Lists are read shortest first, each query's best hits first: the order
    a tie in the blend is broken by.
    """
    stale = np.asarray([q for q in range(len(queries)) if q not in lists or lists[q][0] != fetch[q]], dtype=np.int64)
    for length in np.unique(fetch[stale]):  # one search per distinct list length (a backend search takes one k)
        rows = stale[fetch[stale] == length]
        places, scores, list_bounds = version.search_lists(queries[rows], int(length))
        for j, q in enumerate(rows.tolist()):
            lists[q] = (length, places[j], scores[j], list_bounds[j])
    bounds = np.full(len(queries), -np.inf, np.float32)
    seen = []
    for q in np.argsort(fetch, kind="stable").tolist():
        _, places, scores, bounds[q] = lists[q]
        seen.append(places[np.isfinite(scores)])
    places = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    _, first = np.unique(places, return_index=True)
    places = places[np.sort(first)]
    return places[~np.isin(places, blocked)] if len(blocked) else places, bounds


def _lengthen(fetch: np.ndarray, bounds: np.ndarray, total: int) -> None:
    """Double the lists that hold the bound up: the user vector's and the interest whose bound is the highest.

    The bound is the user list's bound plus the weight times the best of
    the interests' bounds, so only those two lists can lower it; the other
    interests' lists are long enough already (measured at 1M ivf-pq: p99 CPU
    23 -> 14 ms against doubling every list).
    """
    fetch[0] = min(total, 2 * fetch[0])
    if len(fetch) > 1:
        best = 1 + int(np.argmax(bounds[1:]))
        fetch[best] = min(total, 2 * fetch[best])


def max_interests(version: LoadedVersion) -> int:
    """The most interests a record searched in ``version`` may have: its bundle's K, else :data:`MAX_INTERESTS`."""
    return version.manifest.interests or MAX_INTERESTS


def user_queries(user_record: Mapping[str, Any], dim: int, user_share: float,
                 most_interests: int = MAX_INTERESTS) -> tuple[np.ndarray, np.ndarray]:
    """The query matrix [1+K, D] (user vector, then interests) and its weights from a user record.

    A record with more than ``most_interests`` interests is refused before
    it is decoded: the worker writes the bundle's K, and every extra
    interest is a search (a 1 MB record took 70x a normal one to rank).
    """
    user = _as_matrix(user_record.get("vector"), dim, "vector", 1)
    if user.shape[0] != 1:
        raise ValueError(f"user record's vector must be one {dim}-d vector, got {user.shape[0]} rows")
    interests = _as_matrix(user_record.get("interests"), dim, "interests", most_interests)
    if len(interests) == 0:
        return user, np.ones(1)
    weights = user_record.get("interest_weights") or [1.0] * len(interests)
    if not isinstance(weights, (list, tuple)) or len(weights) != len(interests):
        raise ValueError(f"user record has {len(interests)} interests but interest_weights is {weights!r:.80}")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(f"user record's interest_weights must be finite non-negative numbers, got {weights!r:.200}")
    return np.vstack([user, interests]), query_weights(weights, user_share)


def _as_matrix(value: Any, dim: int, field: str, most_rows: int) -> np.ndarray:
    """A record's vector field as float32 [n <= most_rows, dim]; ``ValueError`` (never silently wrong results) when it is not one."""
    if value is None:
        return np.zeros((0, dim), dtype=np.float32)
    binary = isinstance(value, (bytes, bytearray, memoryview))
    if binary and len(value) % (4 * dim):
        raise ValueError(f"user record's {field} has {len(value)} bytes, not a multiple of {dim} float32s "
                         f"(is the index from another model?)")
    if isinstance(value, (bytes, bytearray, memoryview, list, tuple)) and len(value) > most_rows * dim * (4 if binary else 1):
        # checked before decoding: a huge record costs nothing to refuse
        raise ValueError(f"user record's {field} holds more than {most_rows} {dim}-d vectors (the bundle's limit)")
    if binary:
        matrix = bin_to_vec(bytes(value), dim)
    else:
        try:
            matrix = np.asarray(value, dtype=np.float32).reshape(-1, dim)
        except (TypeError, ValueError):
            raise ValueError(f"user record's {field} is not {dim}-d float32 vectors") from None
    if len(matrix) > most_rows:
        raise ValueError(f"user record's {field} holds {len(matrix)} vectors, more than {most_rows} (the bundle's limit)")
    if not np.isfinite(matrix).all():
        raise ValueError(f"user record's {field} has NaN or infinite values")
    return matrix


def user_partition(user: Any, partitions: int) -> int:
    """The partition of a user's key, as Kafka's default partitioner (murmur2) places it."""
    from dreamstream.codec import key_bytes
    from dreamstream.kafka.partitioner import kafka_partition

    return kafka_partition(key_bytes(user), partitions)


def latest_user_record(settings: Any, user: Any, timeout_s: float = 10.0, whole_topic: bool = False) -> dict[str, Any] | None:
    """The newest ``user-embeddings`` value of ``user`` (decoded), or None when it has none.

    Reads only the user's partition (murmur2 of the key), from the start to
    the end offset seen on entry; ``whole_topic`` reads every partition, for
    producers that did not partition by key.
    """
    from kafka import KafkaConsumer, TopicPartition

    from dreamstream.codec import key_bytes, unpack
    from dreamstream.topics import USER_EMBEDDINGS

    from dreamstream.errors import TopicMissing, broker_bootstrap

    topic = settings.topic(USER_EMBEDDINGS)
    with broker_bootstrap(settings.broker):  # no broker: BrokerUnreachable naming it, not the client's timeout
        consumer = KafkaConsumer(**kafka_python_options(settings), enable_auto_commit=False, group_id=None,
                                 client_id="dreamstream-retrieve", max_poll_records=10_000)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicMissing(f"topic {topic} does not exist on {settings.broker}; is the worker running with this "
                               "--topic-prefix? (`dreamstream topics` creates it)")
        chosen = sorted(partitions) if whole_topic else [user_partition(user, len(partitions))]
        tps = [TopicPartition(topic, p) for p in chosen]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        key = key_bytes(user)
        best: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for rec in records:
                    if rec.key == key:
                        best = unpack(rec.value) if rec.value is not None else None
        return best
    finally:
        consumer.close()

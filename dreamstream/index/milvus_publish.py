"""Index versions as Milvus collections, made current by one alias switch, pruned after a grace period.

The Milvus half of :mod:`dreamstream.index.builder` plus
:mod:`dreamstream.index.publish`. A version is a new collection
``<alias>_<version>`` holding the store's snapshot (the whole catalogue:
Milvus keeps its own segments, there are no per-shard files to share). It
becomes current only once it is complete: inserted, flushed, indexed,
loaded, its recall measured against exact search, and its
:class:`~dreamstream.index.manifest.Manifest` written into the collection's
properties. Then one ``alter_alias`` moves the namespace's alias to it;
Milvus applies an alias change atomically, so a reader resolving the alias
sees the old collection or the new one, never a mix (the same contract as
``CURRENT``). Readers search the collection they resolved, not the alias,
so a search never spans two versions; a retired collection is dropped only
``grace_s`` after the alias left it, by which time every reader has moved on.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreamstream.index.builder import METRIC, RECALL_K, BuildParams
from dreamstream.index.manifest import Manifest, ShardEntry
from dreamstream.index.milvus_connection import MANIFEST_PROPERTY, PUBLISHED_PROPERTY, MilvusNames, new_version_name, version_time
from dreamstream.index.recall import exact_neighbours, recall_at_k, sample_queries
from dreamstream.index.store import ItemStore

log = logging.getLogger(__name__)

ID_FIELD, VECTOR_FIELD = "id", "vector"
ID_MAX_LENGTH = 512  # bytes of a video id; longer ids are refused by Milvus at insert, and by nothing else here
INSERT_BATCH = 20_000  # rows per insert request: 5 MB at D=64, well under gRPC's 64 MB message cap
MAX_TOPK = 16_384  # Milvus refuses a larger limit per search


@dataclass(frozen=True)
class MilvusBuilt:
    """A complete, loaded collection that no alias points at yet."""

    collection: str
    manifest: Manifest


def current_collection(client: Any, alias: str) -> str | None:
    """The collection an alias points at, or None when the alias does not exist (nothing published yet)."""
    if alias not in client.list_aliases().get("aliases", []):
        return None
    return str(client.describe_alias(alias)["collection_name"])


def namespace_versions(client: Any, names: MilvusNames, space: str) -> list[str]:
    """The version names of ``space``'s collections in this Milvus, oldest first."""
    found = (names.version_of(space, c) for c in client.list_collections())
    return sorted(v for v in found if v is not None)


def build_collection(client: Any, names: MilvusNames, store: ItemStore, params: BuildParams, space: str = "",
                     timings: dict[str, float] | None = None, interests: int = 0) -> MilvusBuilt:
    """Write the store's items into a new version collection, index and load it, and measure its recall@10.

    ``timings`` (optional) receives the seconds of each phase: insert (and
    flush), index (and load), recall (the nprobe tuning searches).
    """
    timings = {} if timings is None else timings
    from pymilvus import DataType

    started = time.perf_counter()
    version = new_version_name(set(namespace_versions(client, names, space)))
    collection = names.collection(space, version)
    dim = int(store.dim or 0)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=max(1, dim))
    client.create_collection(collection, schema=schema)
    ids, vectors = _snapshot(store)
    for start in range(0, len(ids), INSERT_BATCH):
        stop = min(len(ids), start + INSERT_BATCH)
        client.insert(collection, [{ID_FIELD: ids[i], VECTOR_FIELD: vectors[i]} for i in range(start, stop)])
    client.flush(collection)
    timings["insert_s"] = time.perf_counter() - started
    kind, nlist = ("flat", 0) if len(ids) <= params.exact_max else ("ivf", params.nlist or max(16, int(round(2 * math.sqrt(len(ids))))))
    index = client.prepare_index_params()
    index.add_index(VECTOR_FIELD, index_type="FLAT" if kind == "flat" else "IVF_FLAT", metric_type="IP",
                    params={} if kind == "flat" else {"nlist": nlist})
    client.create_index(collection, index)
    client.load_collection(collection)
    timings["index_s"] = time.perf_counter() - started - timings["insert_s"]
    recall, nprobe = (1.0, 0) if kind == "flat" else _tune_nprobe(client, collection, ids, vectors, nlist, params)
    timings["recall_s"] = time.perf_counter() - started - timings["insert_s"] - timings["index_s"]
    # kind: FLAT / IVF_FLAT are the algorithms of the Faiss kinds; `file` names the collection
    entry = ShardEntry(file=collection, ids="", count=len(ids), sha256="", ids_sha256="", kind=kind,
                       recall=round(recall, 5), nprobe=nprobe)
    manifest = Manifest(version=version, space=space, dim=dim, metric=METRIC, shards=[entry], items=len(ids),
                        recall=entry.recall, built_at=time.time(), build_s=round(time.perf_counter() - started, 3),
                        rebuilt=list(range(store.shards)), interests=interests)
    log.info("built milvus version=%s collection=%s items=%d kind=%s recall=%.4f build_s=%.2f", version, collection,
             len(ids), kind, recall, manifest.build_s)
    return MilvusBuilt(collection, manifest)


def _snapshot(store: ItemStore) -> tuple[list[str], np.ndarray]:
    """Every live item of the store: ids and unit vectors [n, D]."""
    ids: list[str] = []
    parts = []
    for shard in range(store.shards):
        shard_ids, shard_vectors = store.shard(shard)
        ids.extend(shard_ids)
        parts.append(shard_vectors)
    return ids, (np.vstack(parts) if parts else np.zeros((0, store.dim or 0), np.float32)).astype(np.float32, copy=False)


def _tune_nprobe(client: Any, collection: str, ids: list[str], vectors: np.ndarray, nlist: int,
                 params: BuildParams) -> tuple[float, int]:
    """The smallest nprobe (doubling; at most nlist / 4) whose recall@10 through Milvus clears the floor, and that recall.

    Measured through the collection itself, in one batched search per
    candidate: what readers will get, not what a local model predicts.
    """
    queries = sample_queries(vectors, params.recall_queries, seed=len(vectors))
    truth = exact_neighbours(vectors, queries, RECALL_K)
    row_of = {ids[r]: int(r) for r in np.unique(truth)}  # only the true neighbours can count as hits
    max_nprobe = max(1, nlist // 4)
    nprobe = params.nprobe or max(1, nlist // 64)
    while True:
        found = search_collection(client, collection, queries, RECALL_K, nprobe)[0]
        rows = np.array([[row_of.get(i, -1) if i is not None else -1 for i in row] for row in found], dtype=np.int64)
        recall = recall_at_k(rows, truth)
        if params.nprobe or recall >= params.recall_floor or nprobe >= max_nprobe:
            return recall, nprobe
        nprobe = min(max_nprobe, 2 * nprobe)


def search_collection(client: Any, collection: str, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of one collection: (ids [Q,k] object, scores [Q,k]); missing slots are None / -inf."""
    limit = max(1, min(k, MAX_TOPK))
    params: dict[str, Any] = {"metric_type": "IP"}
    if nprobe:
        params["params"] = {"nprobe": nprobe}
    hits = client.search(collection, data=np.ascontiguousarray(queries, dtype=np.float32), limit=limit,
                         search_params=params, anns_field=VECTOR_FIELD)
    ids = np.full((len(queries), limit), None, dtype=object)
    scores = np.full((len(queries), limit), -np.inf, dtype=np.float32)
    for q, row in enumerate(hits):
        for n, hit in enumerate(row[:limit]):
            ids[q, n] = str(hit["id"])
            scores[q, n] = float(hit["distance"])
    return ids, scores


def publish_collection(client: Any, names: MilvusNames, built: MilvusBuilt, recall_floor: float) -> tuple[bool, str]:
    """Point the namespace's alias at a built collection unless its recall is under the floor (then drop it and say why)."""
    manifest = built.manifest
    alias = names.alias(manifest.space)
    serving = current_collection(client, alias)
    serving_dim = _manifest_dim(client, serving) if serving is not None else None
    reason = ""
    if serving_dim is not None and serving_dim != manifest.dim:  # as the Faiss path: a new width is a new namespace
        reason = (f"its items are {manifest.dim}-d but the serving collection {serving} is {serving_dim}-d; a new width "
                  "needs a new namespace (`dreamstream rollout start`), not a new version")
    elif manifest.recall < recall_floor:
        reason = (f"recall@10 {manifest.recall:.4f} is under the floor {recall_floor:.4f} (nprobe "
                  f"{manifest.shards[0].nprobe}); raise --index-nprobe or --index-nlist, raise --index-exact-max "
                  "(an exact collection), or lower --index-recall-floor")
    if reason:
        client.drop_collection(built.collection)
        log.warning("milvus version=%s not published: %s", manifest.version, reason)
        return False, reason
    published_at = time.time()
    client.alter_collection_properties(built.collection, properties={
        MANIFEST_PROPERTY: json.dumps(manifest.to_json(), separators=(",", ":")),
        PUBLISHED_PROPERTY: repr(published_at)})
    if serving is None:
        client.create_alias(built.collection, alias)
    else:
        client.alter_alias(built.collection, alias)  # the atomic switch: readers resolve the old or the new collection
    log.info("published milvus version=%s alias=%s -> %s items=%d", manifest.version, alias, built.collection, manifest.items)
    return True, ""


def prune_collections(client: Any, names: MilvusNames, space: str, grace_s: float, now: float | None = None) -> list[str]:
    """Drop ``space``'s version collections that stopped being current more than ``grace_s`` ago. Returns their versions.

    A version stops being current when the next one is published (its
    ``published_at`` property). A collection that never got a manifest (a
    build that crashed, or one refused) goes once its name's time is older
    than the grace. The alias's collection is never dropped.
    """
    now = time.time() if now is None else now
    current = current_collection(client, names.alias(space))
    versions = namespace_versions(client, names, space)
    published = {v: _published_at(client, names.collection(space, v)) for v in versions}
    removed = []
    for n, version in enumerate(versions):
        collection = names.collection(space, version)
        if collection == current:
            continue
        later = [published[v] for v in versions[n + 1:] if published[v] is not None]
        since = min(later) if published[version] is not None and later else (None if published[version] is not None else version_time(version))
        if since is not None and now - since >= grace_s:
            client.drop_collection(collection)
            removed.append(version)
    if removed:
        log.info("pruned milvus versions=%s namespace=%r", removed, space)
    return removed


def _manifest_dim(client: Any, collection: str) -> int | None:
    """The width the serving collection's manifest records (None: no readable manifest, nothing to keep)."""
    raw = client.describe_collection(collection).get("properties", {}).get(MANIFEST_PROPERTY)
    try:
        return int(json.loads(raw)["dim"]) if raw else None
    except (ValueError, TypeError, KeyError):
        return None


def _published_at(client: Any, collection: str) -> float | None:
    value = client.describe_collection(collection).get("properties", {}).get(PUBLISHED_PROPERTY)
    return float(value) if value else None


def drop_namespace(client: Any, names: MilvusNames, space: str) -> list[str]:
    """Remove a retired namespace: its alias, then every version collection. Returns the collections dropped."""
    alias = names.alias(space)
    if current_collection(client, alias) is not None:
        client.drop_alias(alias)
    dropped = [names.collection(space, v) for v in namespace_versions(client, names, space)]
    for collection in dropped:
        client.drop_collection(collection)
    return dropped


class MilvusPublisher:
    """The indexer's Milvus side (``--index-backend milvus``): build a version collection, switch the alias, prune.

    An error from Milvus propagates: the indexer exits and its restart
    rebuilds the store from the compacted topic; a half-written collection
    has no manifest, is never aliased, and is pruned once past the grace.
    """

    def __init__(self, client: Any, names: MilvusNames, uri: str) -> None:
        self.client, self.names, self.uri = client, names, uri

    @classmethod
    def of(cls, settings: Any) -> "MilvusPublisher":
        from dreamstream.index.milvus_connection import connect_settings

        return cls(connect_settings(settings), MilvusNames(settings.topic_prefix), settings.milvus_uri)

    def publish(self, store: ItemStore, params: BuildParams, space: str, interests: int = 0) -> tuple[MilvusBuilt, bool, str]:
        """Build a version of the store and alias it when its recall clears the floor: (built, published, reason).

        ``interests``: the bundle's K, recorded in the manifest as the Faiss path does (client.max_interests).
        """
        built = build_collection(self.client, self.names, store, params, space, interests=interests)
        published, reason = publish_collection(self.client, self.names, built, params.recall_floor)
        return built, published, reason

    def prune(self, space: str, grace_s: float) -> list[str]:
        return prune_collections(self.client, self.names, space, grace_s)

    def where(self, manifest: Manifest) -> str:
        """What ``index-versions`` announces as the version's path: the collection at the URI."""
        return f"{self.uri.rstrip('/')}/{manifest.shards[0].file}"

"""The client on both index backends: the same exact ranking, version switches, rollback of a version, pruning."""
from __future__ import annotations

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.blend import blend_scores
from dreamstream.client import Retriever, rank
from dreamstream.index.builder import BuildParams


def user(vectors: np.ndarray, rng: np.random.Generator, interests: int = 4) -> dict:
    """A record whose vectors are mixes of a few items, with interest weights."""
    picks = vectors[rng.integers(0, len(vectors), (interests, 3))].sum(axis=1)
    picks /= np.linalg.norm(picks, axis=1, keepdims=True)
    u = picks.mean(axis=0)
    return {"space": "", "vector": codec.vec_to_bin(u / np.linalg.norm(u)), "interests": codec.vec_to_bin(picks),
            "interest_weights": rng.dirichlet(np.ones(interests)).tolist()}


def brute_force(ids: list[str], vectors: np.ndarray, record: dict, k: int, exclude: set[str]) -> list[str]:
    """The whole catalogue scored by the blend, the exclusions left out: what `rank` must return."""
    dim = vectors.shape[1]
    q = np.vstack([codec.bin_to_vec(record["vector"], dim), codec.bin_to_vec(record["interests"], dim)])
    exact = q @ vectors.T
    scores = blend_scores(exact[0], exact[1:])
    order = [i for i in np.argsort(-scores, kind="stable") if ids[i] not in exclude]
    return [ids[i] for i in order[:k]]


def test_rank_is_the_exact_blend_with_exclusions_on_either_backend(spaces, vectors_factory) -> None:
    x = vectors_factory(3000, dim=16, clusters=40)
    ids = [f"v{i}" for i in range(len(x))]
    spaces.publish("", ids, x)
    rng = np.random.default_rng(3)
    with Retriever(spaces.index_dir, follow=False, backend=spaces.backend()) as r:
        for _ in range(8):
            record = user(x, rng)
            watched = set(brute_force(ids, x, record, 10, set())[::2])  # half of the true top-10 was watched
            got = r.search(record, 20, exclude=watched)
            assert [i for i, _ in got] == brute_force(ids, x, record, 20, watched)
            assert not watched & {i for i, _ in got}


def test_a_reader_moves_to_a_new_version_only_on_refresh_and_the_old_one_is_pruned_after_the_grace(spaces, vectors_factory) -> None:
    x, y = vectors_factory(400, dim=8), vectors_factory(400, dim=8, seed=5)
    spaces.publish("", [f"a{i}" for i in range(400)], x)
    backend = spaces.backend()
    with Retriever(spaces.index_dir, follow=False, backend=backend) as r:
        first = r.version
        spaces.publish("", [f"b{i}" for i in range(400)], y)
        assert backend.current("") != first.name
        assert r.version is first and r.search({"vector": codec.vec_to_bin(x[0])}, 1)[0][0] == "a0"  # pinned
        assert r.refresh() and r.version.name == backend.current("")
        assert r.search({"vector": codec.vec_to_bin(y[7])}, 1)[0][0] == "b7"
        assert first.search(x[:1], 1)[0][0, 0] == "a0", "the retired version still answers within the grace"
    if spaces.kind == "milvus":
        from dreamstream.index.milvus_publish import namespace_versions, prune_collections

        assert prune_collections(spaces.client, spaces.names, "", grace_s=3600) == []
        assert prune_collections(spaces.client, spaces.names, "", grace_s=0) == [first.name]
        assert namespace_versions(spaces.client, spaces.names, "") == [backend.current("")]


def test_milvus_ivf_versions_reach_the_floor_and_a_low_floor_miss_is_refused(milvus_uri, milvus_names, vectors_factory) -> None:
    from dreamstream.index.milvus_connection import connect
    from dreamstream.index.milvus_publish import build_collection, namespace_versions, publish_collection
    from dreamstream.index.milvus_version import MilvusBackend
    from dreamstream.index.store import ItemStore

    client = connect(milvus_uri)
    x = vectors_factory(2500, dim=16, clusters=60, noise=1.5)
    store = ItemStore(shards=2)
    store.put_many([f"v{i}" for i in range(len(x))], x)
    built = build_collection(client, milvus_names, store, BuildParams(exact_max=1000, recall_floor=0.95, recall_queries=150))
    assert built.manifest.shards[0].kind == "ivf" and built.manifest.recall >= 0.95
    assert publish_collection(client, milvus_names, built, 0.95) == (True, "")
    forced = build_collection(client, milvus_names, store, BuildParams(exact_max=1000, nprobe=1, recall_queries=150))
    published, reason = publish_collection(client, milvus_names, forced, 0.999)
    assert not published and "under the floor" in reason
    assert namespace_versions(client, milvus_names, "") == [built.manifest.version]  # the refused one is dropped
    assert MilvusBackend(client, milvus_names).current("") == built.manifest.version


def test_milvus_names_keep_deployments_and_namespaces_apart_and_settings_say_what_is_missing(tmp_path) -> None:
    import time

    from dreamstream.index.milvus_connection import MilvusNames, MilvusUnavailable, connect, new_version_name, version_time

    a, b = MilvusNames("prod."), MilvusNames("prod_")
    assert a.alias("v1.2") != b.alias("v1.2") and a.alias("v1.2") != a.alias("v1_2")  # same slug, other pair
    assert all(c.isalnum() or c == "_" for c in a.alias("weird-ns.2026/x"))
    version = new_version_name(set())
    assert abs(version_time(version) - time.time()) < 5
    collection = a.collection("v1.2", version)
    assert a.version_of("v1.2", collection) == version and a.version_of("v1.20", collection) is None
    assert b.version_of("v1.2", collection) is None, "another deployment's collections are never ours"
    with pytest.raises(MilvusUnavailable, match="--milvus-uri"):
        connect("")
    with pytest.raises(MilvusUnavailable, match="credentials file"):
        connect("http://127.0.0.1:1", tmp_path / "no-such-token")


def test_rollout_retire_drops_a_milvus_namespace_and_nothing_else(milvus_uri, milvus_names, tmp_path, vectors_factory) -> None:
    from click.testing import CliRunner

    from backends_support import SpacePublisher
    from dreamstream.cli import main
    from dreamstream.index.milvus_publish import namespace_versions

    spaces = SpacePublisher("milvus", tmp_path / "index", milvus_uri, milvus_names)
    x = vectors_factory(100, dim=8)
    for namespace in ("", "v3", "v3"):
        spaces.publish(namespace, [f"x{i}" for i in range(len(x))], x)
    backend = spaces.backend()
    kept = backend.current("")
    flags = ["--index-dir", str(tmp_path / "index"), "--state-dir", str(tmp_path / "state"), "--topic-prefix",
             milvus_names.topic_prefix, "--index-backend", "milvus", "--milvus-uri", milvus_uri]
    refused = CliRunner().invoke(main, ["rollout", "retire", "", *flags])
    assert refused.exit_code == 1 and "cannot be retired" in refused.output
    done = CliRunner().invoke(main, ["rollout", "retire", "v3", *flags])
    assert done.exit_code == 0 and "2 Milvus collections" in done.output, done.output
    assert backend.current("v3") is None and namespace_versions(spaces.client, milvus_names, "v3") == []
    assert backend.current("") == kept and namespace_versions(spaces.client, milvus_names, "") == [kept]


def test_a_milvus_version_of_another_width_is_refused_and_the_serving_one_stays(milvus_uri, milvus_names, vectors_factory) -> None:
    from dreamstream.index.milvus_connection import connect
    from dreamstream.index.milvus_publish import build_collection, namespace_versions, publish_collection
    from dreamstream.index.store import ItemStore

    client = connect(milvus_uri)
    versions = []
    for dim in (8, 16):
        store = ItemStore(shards=1)
        store.put_many([f"v{i}" for i in range(50)], vectors_factory(50, dim=dim))
        built = build_collection(client, milvus_names, store, BuildParams())
        versions.append((built, publish_collection(client, milvus_names, built, 0.95)))
    assert versions[0][1] == (True, "")
    published, reason = versions[1][1]
    assert not published and "16-d but the serving collection" in reason and "new namespace" in reason
    assert namespace_versions(client, milvus_names, "") == [versions[0][0].manifest.version]


def test_search_lists_bound_holds_for_every_item_not_returned(spaces, vectors_factory) -> None:
    """rank's stopping test rests on it: nothing outside the lists scores above the bound (flat shards: exact)."""
    x = vectors_factory(3000, dim=16, clusters=40)
    ids = [f"v{i}" for i in range(len(x))]
    spaces.publish("", ids, x)
    rng = np.random.default_rng(5)
    queries = x[rng.integers(0, len(x), 6)] + 0.1 * rng.standard_normal((6, 16)).astype(np.float32)
    with Retriever(spaces.index_dir, follow=False, backend=spaces.backend()) as r:
        version = r.version
        places, scores, bound = version.search_lists(queries, 25)
        merged_last = version.search(queries, 25)[1][:, -1]
        for q in range(len(queries)):
            returned = set(version.ids_at(places[q][np.isfinite(scores[q])]).tolist())
            rest = np.array([i not in returned for i in ids])
            assert (queries[q] @ x[rest].T).max() <= bound[q] + 1e-5
            assert bound[q] <= merged_last[q] + 1e-6  # never looser than the merged top k's last score
            assert len(returned) >= 25

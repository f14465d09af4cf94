"""What a Retriever sets for its process: BLAS on the threads it is given (one by default), or left alone."""
from __future__ import annotations

from threadpoolctl import threadpool_info, threadpool_limits

from dreamstream.client import Retriever
from dreamstream.index.store import ItemStore


def _blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def _index(tmp_path, publish, vectors_factory):
    store = ItemStore(shards=2)
    x = vectors_factory(300, dim=16, clusters=8)
    store.put_many([f"v{i}" for i in range(len(x))], x)
    publish(store, tmp_path)
    return tmp_path


def test_a_retriever_runs_blas_on_one_thread_unless_told_otherwise(tmp_path, publish, vectors_factory) -> None:
    index_dir = _index(tmp_path, publish, vectors_factory)
    with threadpool_limits(limits=2, user_api="blas"):  # restores the process's setting afterwards
        assert _blas_threads() == {2}
        with Retriever(index_dir, follow=False, blas_threads=None, freeze_heap=False):
            assert _blas_threads() == {2}, "blas_threads=None must leave the process's BLAS alone"
        with Retriever(index_dir, follow=False, freeze_heap=False):
            assert _blas_threads() == {1}, "the exact blend's product must not spin across cores (ranking_process)"

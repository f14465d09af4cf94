"""A worker's release (revocation or shutdown) always lets go, and never makes half a batch durable.

In-process on an app that is not started: the release must not need the
broker to refuse a flush, and whatever goes wrong inside it must stay inside
(an error escaping into Faust's stop left its consumer thread running and
the process hung after "Closing event loop").
"""
from __future__ import annotations

import asyncio
import logging
import shutil

import pytest

from streams.domain.state import new_state


@pytest.fixture
def worker(make_settings, bundle_dir):
    """The worker object of a fresh app (not started), its bundle installed, no changelog producer open."""
    from streams.app import create_app

    s = make_settings(watchdog_s=0, web_port=0)
    shutil.copytree(bundle_dir, s.model_dir / bundle_dir.name)
    app = create_app(s)
    w = app.dreamstream_worker
    w.generation = 1  # as if it had an assignment
    w.feed.committed = {0: 10}
    return w


def cache_a_row(w) -> None:
    """A batch's row in the cache; the batch is not handed over yet."""
    w.checkpoint.cache.put(b"u1", new_state(4, 2, 3), 0)


def test_a_release_after_an_interrupted_batch_drops_the_batch_instead_of_flushing_it(worker, caplog) -> None:
    cache_a_row(worker)  # rows cached, records not yet handed over: the loop was cancelled in between
    with caplog.at_level(logging.INFO, logger="streams.worker"):
        asyncio.run(worker.release("shutdown"))
    assert "shutdown: a batch was interrupted" in caplog.text
    assert "last flush failed" not in caplog.text, "it tried to flush the interrupted batch's rows"
    assert worker.checkpoint.cache.get(b"u1") is None and not worker.checkpoint.cache.pending()
    assert worker.generation is None and worker.feed.owned == set()


def test_a_flush_that_fails_in_a_release_is_logged_and_the_release_still_lets_go(worker, caplog) -> None:
    cache_a_row(worker)
    worker.checkpoint.cache.handed_over([], {0: 11})  # a finished batch, but the changelog producer is closed: the flush fails
    with caplog.at_level(logging.INFO, logger="streams.worker"):
        asyncio.run(worker.release("rebalance"))  # must not raise
    assert "rebalance: the last flush failed" in caplog.text and "Traceback" in caplog.text
    assert "rebalance: released partitions committed={0: 10}" in caplog.text
    assert not worker.checkpoint.cache.pending() and worker.generation is None

"""The worker's Faust declarations: topics, agents, timers, the /metrics page and the rebalance hooks.

* ``update-users`` subscribes the Faust group to ``watch-events`` so it
  assigns those partitions together with the user table's; the records are
  read by the worker's own feed (``streams.worker``), never by Faust
  (``streams.compat.hold_back``).
* ``update_users`` (a task) runs the worker loop.
* ``item-tower`` on ``item-features`` embeds new videos (``streams.item_tower``).
* ``item-refiner`` on ``item-watchers`` refines them by their watchers, and
  ``item-refiner-publish`` (a timer) publishes the refined vectors (``streams.item_refiner``).
* ``ItemFollower`` (a service started with the app, before the group join)
  keeps the item table in step with ``item-vectors``.
* ``bundle-watcher`` (a timer) hot-reloads a new bundle between batches (``streams.ops.reload``).
"""
from __future__ import annotations

import logging
from typing import Any

import faust
from mode import Service

from dreamstream.settings import Settings
from dreamstream.topics import ITEM_FEATURES, ITEM_WATCHERS
from streams.compat.hold_back import hold_back
from streams.worker import Worker

log = logging.getLogger("streams.worker")
RAW = dict(key_serializer="raw", value_serializer="raw")


def register(app: faust.App, settings: Settings) -> Worker:
    """Declare the worker's topics, tables, agents, timer and /metrics page on ``app``."""
    worker = Worker(app, settings)
    worker.metrics.serve_model(worker.holder.bundle.version)
    watch = app.topic(worker.watch_topic, partitions=settings.partitions, **RAW)
    features = app.topic(settings.topic(ITEM_FEATURES), partitions=settings.item_partitions, **RAW)
    watchers = app.topic(settings.topic(ITEM_WATCHERS), partitions=settings.item_partitions, **RAW)

    app.add_dependency(ItemFollower(worker))  # before start: the app's first child, ahead of its consumer

    hold_back(worker.watch_topic)  # assigned through the Faust group, read by worker.feed

    @app.agent(watch, name="update-users")
    async def assignment_only(stream: faust.StreamT) -> None:
        """Subscribes the Faust group to watch-events, so it assigns them with the user table; never fed."""
        async for event in stream:
            log.error("faust delivered watch-events offset %s, which it should not fetch; ignored (the feed "
                      "reads it)", event.message.offset)

    @app.task
    async def update_users() -> None:
        await worker.run()

    @app.agent(features, name="item-tower")
    async def item_tower(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(256, settings.batch_timeout_s):
            await worker.item_tower.embed_batch(batch)

    @app.agent(watchers, name="item-refiner")
    async def item_refiner(stream: faust.StreamT) -> None:
        # waits up to a second to fill a batch: a refined vector leaves only every live_publish_s anyway, and each
        # batch costs a changelog write and an acknowledgement (small batches cost the worker ~10% of a core at 250
        # watches/s, dreamstream bench --live-share 0.1 at 2,500 events/s)
        async for batch in stream.take_events(4096, min(1.0, settings.live_publish_s)):
            await worker.item_refiner.apply_batch(batch)

    @app.timer(settings.live_publish_s, name="item-refiner-publish")
    async def publish_refined() -> None:
        await worker.item_refiner.publish()

    @app.timer(2.0, name="bundle-watcher")
    async def watch_bundles() -> None:
        await worker.holder.poll()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(worker.metrics.exposition(), content_type="text/plain")

    @app.on_partitions_revoked.connect
    async def release_partitions(app: Any, revoked: Any, **kwargs: Any) -> None:
        await worker.release("rebalance")  # the next owner starts where this worker's output ends
        try:  # before the next owner's newer vectors of the same videos
            await worker.item_refiner.publish()
        except Exception:  # a bug must not break Faust's rebalance half done; the rows are in the table
            log.exception("item refiner: publishing before the rebalance failed; the videos' next watch republishes")

    @app.on_before_shutdown.connect
    async def release_on_shutdown(app: Any, **kwargs: Any) -> None:
        await worker.release("shutdown")

    app.dreamstream_worker = worker  # for tests and the bench
    return worker


class ItemFollower(Service):
    """Follows ``item-vectors`` from the moment the app starts, beside Faust's own start.

    Why not an ``app.task``: Faust starts its tasks only once the group is
    joined and the table recovered; the item table then read its catalogue
    (or, on a warm restart, its tail) after all of that, while the worker
    waited for it. As the app's child it reads during the join instead.
    """

    def __init__(self, worker: Worker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker = worker

    async def on_start(self) -> None:
        self.add_future(self.worker.items.follow())

"""`dreamstream indexer`: the sidecar that keeps index versions of the item vectors (Faiss folders or Milvus collections)."""
from __future__ import annotations

import signal
import threading

import click

from dreamstream.cli_options import INDEX_BACKEND, KAFKA_SECURITY, settings_options
from dreamstream.index.service import Indexer, build_params
from dreamstream.index.width import index_width
from dreamstream.logs import setup_logging
from dreamstream.settings import Settings
from dreamstream.topics import create_topics


@click.command("indexer")
@click.option("--threads", type=int, default=0, envvar="DREAMSTREAM_INDEX_THREADS", show_default=True,
              help="Faiss threads for builds; 0 = all cores [env DREAMSTREAM_INDEX_THREADS].")
@settings_options(
    "broker", "topic_prefix", "index_dir", "state_dir", "model_dir", "index_dim", "item_partitions", "index_shards",
    "index_interval_s", "index_grace_s", "index_recall_floor", "index_exact_max", "index_nlist", "index_nprobe",
    "index_kind", "index_short_list",
    "metrics_port", "log_level", "web_bind", "namespace", *KAFKA_SECURITY, *INDEX_BACKEND,
)
def indexer(settings: Settings, threads: int) -> None:
    """Follow item-vectors and publish a new index version whenever items changed.

    Every --index-interval-s seconds, if anything changed, the shards whose
    items changed are rebuilt (the rest are shared with the previous
    version), recall@10 is measured, and the version becomes CURRENT and is
    announced on index-versions. Stops cleanly on SIGTERM / Ctrl-C.
    """
    index_width(settings)  # at once, before any wait for the broker: no bundle and no --index-dim is an error
    setup_logging(settings.log_level)
    create_topics(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service = Indexer(settings, build_params(settings, threads))
    service.metrics.serve(settings.metrics_port)
    try:
        service.run(stop)
    finally:
        service.close()

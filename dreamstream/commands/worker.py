"""`dreamstream worker`: the Faust stream worker (same app as `faust -A streams.app worker`)."""
from __future__ import annotations

import click

from dreamstream.cli_options import KAFKA_SECURITY, settings_options
from dreamstream.settings import Settings

WORKER_SETTINGS = (
    "broker", "broker_kind", "topic_prefix", "model_dir", "state_dir", "store", "state_block_cache_mb",
    "state_memtable_mb", "state_memtables", "item_store", "item_cache_mb", "item_dtype",
    "item_store_dir", "partitions", "item_partitions", "replication",
    "half_life_s", "opal_half_life_s", "skip_ratio", "skip_weight", "replay_cap", "impression_weight", "cold_min_positive",
    "batch_size", "batch_min", "batch_timeout_s", "fetch_max_wait_ms", "commit_interval_s", "web_port", "web_bind", "log_level",
    "session_timeout_s", "heartbeat_interval_s", "rebalance_timeout_s", "standby_replicas", "watchdog_s", "watchdog_action",
    "shutdown_grace_s", "namespace", "start_from", "dlq_retention_days", *KAFKA_SECURITY,
)


@click.command("worker")
@settings_options(*WORKER_SETTINGS)
def worker(settings: Settings) -> None:
    """Keep every user's embedding fresh: watch-events in, user-embeddings out.

    Creates the design's topics if missing, loads the newest valid bundle of
    --model-dir (and switches to newer ones as they appear), then runs until
    SIGTERM/SIGINT. Metrics on http://WEB_BIND:WEB_PORT/metrics.
    """
    from dreamstream.bundle import latest_version
    from dreamstream.errors import UserError
    from dreamstream.logs import setup_logging
    from dreamstream.topics import create_topics
    from streams.app import create_app
    from streams.ops.shutdown import run_worker

    if latest_version(settings.model_dir) is None:  # at once, before any wait for the broker
        raise UserError(f"no model bundle in {settings.model_dir}; run `dreamstream export` (or point "
                        "--model-dir / DREAMSTREAM_MODEL_DIR at a folder of bundles)")
    setup_logging(settings.log_level)
    create_topics(settings)
    app = create_app(settings)
    run_worker(app, settings.log_level, settings.shutdown_grace_s)

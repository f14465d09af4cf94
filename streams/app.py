"""The Faust app of the stream worker: ``faust -A streams.app worker`` or ``dreamstream worker``.

Configured from :class:`dreamstream.settings.Settings` only. The app id
carries the topic prefix, so two deployments (or two tests) on one broker
never share a consumer group or a changelog. Faust timeouts are tuned for a
worker that must reach its first output in seconds: short group session,
heartbeat and rebalance timeouts, no recovery delay.
"""
from __future__ import annotations

from typing import Any

import faust

from dreamstream.kafka.security import faust_credentials
from dreamstream.settings import Settings
from streams.compat import check_versions
from streams.compat.faust_web import WEB_SETTINGS, lock_down as lock_down_web
from streams.compat.tansu_rows import faust_settings
from streams.kafka.batch_send import MAX_BATCH_BYTES


def app_config(settings: Settings) -> dict[str, Any]:
    """Faust settings derived from ours (also used by the bench's plain agent)."""
    return dict(
        broker=settings.broker,
        broker_credentials=faust_credentials(settings),  # TLS / SASL (dreamstream.kafka.security)
        store=settings.store,
        datadir=str(settings.state_dir / "faust"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_bind,
        **WEB_SETTINGS,  # only /metrics (and Faust's status at /): no /router, /table, /graph pages (streams.compat.faust_web)
        consumer_auto_offset_reset="earliest",
        # measured on tansu: defaults take ~30 s to get partitions, these ~5 s
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_request_timeout=40.0,
        stream_recovery_delay=0.0,
        stream_wait_empty=False,
        table_standby_replicas=settings.standby_replicas,
        stream_buffer_maxsize=max(4096, 2 * settings.batch_size),
        broker_commit_interval=1.0,
        producer_linger=0.005,
        producer_max_batch_size=MAX_BATCH_BYTES,  # a live batch's records leave in one request (streams.kafka.batch_send)
        consumer_max_fetch_size=4 * 1024 * 1024,
        broker_max_poll_records=max(1000, settings.batch_size),
        table_cleanup_interval=3600.0,
        # Faust refuses to recover a table whose stored offset is beyond the broker's end offset; tansu
        # answers end offsets one produce batch short (streams.compat.tansu_rows switches the check off there)
        **faust_settings(settings),
    )


def create_app(settings: Settings) -> faust.App:
    """A fresh app with the worker's topics, tables, agents, timers and web page."""
    from streams.agents import register
    from streams.compat.fetch_cancel import install as install_fetch_cancel
    from streams.compat.fetch_wait import FAUST_FETCH_WAIT_MS, install as install_fetch_wait
    from streams.compat.table_start import install as install_table_start
    from streams.compat.tansu_leave import install as install_tansu_leave

    install_fetch_wait(FAUST_FETCH_WAIT_MS)
    install_table_start()  # no 1 s nap before the group join (the table is declared below, before the start)
    install_tansu_leave(settings)  # dev broker: a first-generation member leaves its group when it stops
    install_fetch_cancel()  # consumers stopped while the broker is away must not raise CancelledError
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **app_config(settings))
    lock_down_web(app)  # Faust's table and router pages stay off whatever the Faust release
    worker = register(app, settings)
    from streams.ops.watchdog import install as install_watchdog

    install_watchdog(app, worker, settings)  # stalled consumers exit (or log) instead of dying slowly
    check_versions()  # a library outside the range a compatibility shim was tested with: say which shim to re-check
    return app


_APP: faust.App | None = None


def __getattr__(name: str) -> Any:
    """``streams.app.app``, built from the environment on first use (what ``faust -A`` reads)."""
    global _APP
    if name == "app":
        if _APP is None:
            from dreamstream.cli_options import load_settings
            from dreamstream.logs import setup_logging

            settings = load_settings()
            setup_logging(settings.log_level)
            _APP = create_app(settings)
        return _APP
    raise AttributeError(name)

"""`dreamstream monitor`: live recommendation quality per model namespace, for judging a rollout on live traffic."""
from __future__ import annotations

import signal
import threading

import click

from dreamstream.cli_options import INDEX_BACKEND, KAFKA_SECURITY, settings_options
from dreamstream.logs import setup_logging
from dreamstream.monitor import DEFAULT_MAX_USERS, DEFAULT_WINDOW
from dreamstream.settings import Settings


@click.command("monitor")
@click.option("--sample", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.1, show_default=True,
              envvar="DREAMSTREAM_MONITOR_SAMPLE",
              help="Share of positive watch events scored, chosen by a hash of (user, offset) so it is deterministic "
                   "[env DREAMSTREAM_MONITOR_SAMPLE].")
@click.option("--k", "k", type=click.IntRange(1, 1000), default=20, show_default=True, envvar="DREAMSTREAM_MONITOR_K",
              help="An event is a hit when its video is in the top k candidates of the user's previous record "
                   "[env DREAMSTREAM_MONITOR_K].")
@click.option("--namespace", "namespaces", multiple=True, envvar="DREAMSTREAM_MONITOR_NAMESPACES",
              help="Also monitor this model namespace (repeatable; a rollout's new one while it catches up). The "
                   "SERVING pointer's namespace and its previous one are always monitored; the default namespace is "
                   "'' [env DREAMSTREAM_MONITOR_NAMESPACES, space-separated].")
@click.option("--window", type=click.IntRange(1), default=DEFAULT_WINDOW, show_default=True,
              envvar="DREAMSTREAM_MONITOR_WINDOW",
              help="The hit rate is over this many last scored events per namespace [env DREAMSTREAM_MONITOR_WINDOW].")
@click.option("--delay-s", type=click.FloatRange(0.0), default=2.0, show_default=True,
              envvar="DREAMSTREAM_MONITOR_DELAY_S",
              help="Seconds a sampled event waits before it is scored, so a record published before it but still in "
                   "flight is paired with it [env DREAMSTREAM_MONITOR_DELAY_S].")
@click.option("--status-interval-s", type=click.FloatRange(0.1), default=5.0, show_default=True,
              envvar="DREAMSTREAM_MONITOR_STATUS_INTERVAL_S",
              help="Seconds between writes of <index dir>/MONITOR.json [env DREAMSTREAM_MONITOR_STATUS_INTERVAL_S].")
@click.option("--max-users", type=click.IntRange(1), default=DEFAULT_MAX_USERS, show_default=True,
              envvar="DREAMSTREAM_MONITOR_MAX_USERS",
              help="Users whose last two records are held per namespace (~4 KB each at D=64, K=4); past it the user "
                   "updated least recently is forgotten and their next event skipped as no-record "
                   "[env DREAMSTREAM_MONITOR_MAX_USERS].")
@click.option("--from-earliest", is_flag=True, envvar="DREAMSTREAM_MONITOR_FROM_EARLIEST",
              help="A new consumer group starts at the earliest watch-events offset instead of the latest "
                   "[env DREAMSTREAM_MONITOR_FROM_EARLIEST].")
@settings_options("broker", "topic_prefix", "index_dir", "metrics_port", "web_bind", "skip_ratio", "log_level",
                  *KAFKA_SECURITY, *INDEX_BACKEND)
def monitor(settings: Settings, sample: float, k: int, namespaces: tuple[str, ...], window: int, delay_s: float,
            status_interval_s: float, max_users: int, from_earliest: bool) -> None:
    """Measure live HitRate@k per model namespace beside the ranking services.

    Samples positive watch events and checks whether each one's video was
    among the top-k candidates of the user's record, in each monitored
    namespace, from before the event. Exports dreamstream_monitor_* metrics on
    --metrics-port and writes <index dir>/MONITOR.json, which `rollout status`
    and `rollout switch --gate` read. Read-only; stops cleanly on SIGTERM / Ctrl-C.
    """
    from dreamstream.monitor_service import MonitorOptions, MonitorService

    setup_logging(settings.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    options = MonitorOptions(sample, k, window, delay_s, status_interval_s, from_earliest, tuple(namespaces), max_users)
    service = MonitorService(settings, options)
    server = service.metrics.serve(settings.metrics_port)
    try:
        service.run(stop)
    finally:
        service.close()
        if server is not None:
            server.shutdown()

"""`dreamstream bench-recovery`: seconds from worker start to serving when it must rebuild many users' state."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from dreamstream.bench.recovery import SCENARIOS
from dreamstream.cli_options import settings_options
from dreamstream.settings import Settings


@click.command("bench-recovery")
@settings_options("broker", "model_dir", "partitions", "batch_size", "session_timeout_s", "heartbeat_interval_s",
                  "rebalance_timeout_s", "log_level")
@click.option("--users", "n_users", default=100_000, show_default=True, envvar="DREAMSTREAM_RECOVERY_USERS",
              help="Users whose state the worker must rebuild.")
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(SCENARIOS),
              help="Scenarios to time (repeatable; default all).")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, envvar="DREAMSTREAM_RECOVERY_JSON",
              help="Also write the numbers to this JSON file.")
def bench_recovery(settings: Settings, n_users: int, scenarios: tuple[str, ...], json_out: Path | None) -> None:
    """Write the state of --users users through a real worker, then time recovery per store.

    Scenarios: memory store (full changelog replay), RocksDB in an empty
    folder, RocksDB in the folder that wrote the state (restart with its
    volume), and a hot standby taking over from a SIGKILLed worker. Starts a
    private embedded broker unless DREAMSTREAM_BROKER / --broker is given.
    """
    import os

    from dreamstream.bench.recovery import measure
    from dreamstream.broker import EmbeddedBroker, free_port
    from dreamstream.bench.harness import ensure_bundle

    work = Path(tempfile.mkdtemp(prefix="dreamstream-recovery-"))
    settings = ensure_bundle(settings, work, click.echo)
    broker = None
    if "DREAMSTREAM_BROKER" not in os.environ and "--broker" not in sys.argv:
        broker = EmbeddedBroker(port=free_port(), log_dir=work / "broker").start()
        settings = settings.model_copy(update={"broker": broker.url})
    try:
        out = measure(settings, n_users, scenarios or SCENARIOS, work=work, progress=click.echo)
    finally:
        if broker:
            broker.stop()
    click.echo(json.dumps(out, indent=2))
    if json_out:
        json_out.write_text(json.dumps(out, indent=2))

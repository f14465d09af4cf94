"""`dreamstream demo`: the whole system, end to end, on this machine."""
from __future__ import annotations

from pathlib import Path

import click

from dreamstream.demo.pipeline import DemoOptions


def _opt(flag: str, env: str, **kwargs):
    kwargs["help"] = f"{kwargs['help']} [env DREAMSTREAM_DEMO_{env}]"
    return click.option(flag, envvar=f"DREAMSTREAM_DEMO_{env}", show_default=True, **kwargs)


@click.command("demo")
@_opt("--workdir", "DIR", type=click.Path(path_type=Path, file_okay=False), default=Path("var/demo"),
      help="Folder for the demo's data, models, index, logs and plot (emptied at start).")
@_opt("--users", "USERS", type=int, default=2000, help="Users in the synthetic dataset.")
@_opt("--items", "ITEMS", type=int, default=3000, help="Videos in the synthetic dataset.")
@_opt("--epochs", "EPOCHS", type=int, default=8, help="Most training epochs per model.")
@_opt("--live-rate", "LIVE_RATE", type=float, default=500.0, help="Events/s of the live (held-out) traffic.")
@_opt("--seed", "SEED", type=int, default=0, help="Seed of data generation and training.")
@_opt("--timeout", "TIMEOUT_S", type=float, default=300.0, help="Seconds any one wait may take before the demo gives up.")
def demo(workdir: Path, users: int, items: int, epochs: int, live_rate: float, seed: int, timeout: float) -> None:
    """Run the whole system and print what it achieved.

    Starts an embedded broker, generates a synthetic dataset, trains and
    exports a small model, publishes the item vectors, starts the worker and
    the indexer, backfills each user's history and then streams the held-out
    events live, waits until every user's embedding is published and the
    index is current, retrieves for every user through dreamstream.client,
    and prints Recall/HitRate next to popularity with the throughput and
    latency it saw. Draws a PNG; stops everything it started.
    """
    from dreamstream.demo.run import run_demo

    opts = DemoOptions(workdir=workdir.resolve(), users=users, items=items, epochs=epochs,
                       live_rate=live_rate, seed=seed, timeout_s=timeout)
    raise SystemExit(run_demo(opts, click.echo))

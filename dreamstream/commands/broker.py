"""`dreamstream broker`: the embedded development broker in the foreground."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from dreamstream.broker import BrokerError, EmbeddedBroker


@click.command("broker")
@click.option("--port", type=int, default=9092, show_default=True, envvar="DREAMSTREAM_BROKER_PORT",
              help="Port to listen on (127.0.0.1). [env DREAMSTREAM_BROKER_PORT]")
@click.option("--durable", "durable_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="DREAMSTREAM_BROKER_DURABLE",
              help="Keep the log in this folder (tansu S3 engine over a local s3rver), so a restart loses nothing. "
                   "Needs Node.js; s3rver is installed from npm on first use. [env DREAMSTREAM_BROKER_DURABLE]")
@click.option("--s3-port", type=int, default=None, envvar="DREAMSTREAM_BROKER_S3_PORT",
              help="Port of the s3rver behind --durable (default: a free one). [env DREAMSTREAM_BROKER_S3_PORT]")
def broker(port: int, durable_dir: Path | None, s3_port: int | None) -> None:
    """Run tansu, a Kafka-compatible broker, until Ctrl-C.

    For development and tests only; production uses a real Kafka cluster
    (see infra/). Memory storage unless --durable is given.
    """
    embedded = EmbeddedBroker(port=port, durable_dir=durable_dir, s3_port=s3_port,
                              log_dir=durable_dir / "logs" if durable_dir else None)
    try:
        embedded.start()
    except BrokerError as err:
        raise click.ClickException(str(err)) from None
    storage = f"durable in {durable_dir} (s3rver on port {embedded.s3_port})" if durable_dir else "in memory"
    click.echo(f"broker ready at {embedded.url} ({storage}); Ctrl-C to stop")
    click.echo(f"  export DREAMSTREAM_BROKER={embedded.url}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if not embedded.alive():
                raise click.ClickException("the broker process exited unexpectedly")
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()
        click.echo("broker stopped")

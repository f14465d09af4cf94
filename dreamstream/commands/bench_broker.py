"""`dreamstream bench-broker`: the development broker's RAM / disk per record and fetch latency as its log grows."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from dreamstream.bench.broker_cost import ENGINES


@click.command("bench-broker")
@click.option("--engine", "engines", multiple=True, type=click.Choice(ENGINES), default=ENGINES, show_default=True,
              envvar="DREAMSTREAM_BROKER_BENCH_ENGINES",
              help="tansu storage engines to measure: memory, or s3 (the durable mode, over the strict s3rver).")
@click.option("--records", type=int, default=200_000, show_default=True, envvar="DREAMSTREAM_BROKER_BENCH_RECORDS",
              help="Records stored in the topic at the last step.")
@click.option("--steps", type=click.IntRange(min=1), default=4, show_default=True, envvar="DREAMSTREAM_BROKER_BENCH_STEPS",
              help="Measurements as the log fills (after each equal share of --records).")
@click.option("--record-bytes", type=int, default=300, show_default=True, envvar="DREAMSTREAM_BROKER_BENCH_RECORD_BYTES",
              help="Value size of each record (an item vector ~290 B, an event ~100 B, a user-state row ~2 KB).")
@click.option("--batch-records", type=int, default=100, show_default=True, envvar="DREAMSTREAM_BROKER_BENCH_BATCH_RECORDS",
              help="Records per produced batch (tansu's fetch cost follows batches, not records).")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, envvar="DREAMSTREAM_BROKER_BENCH_JSON",
              help="Also write every step to this JSON file.")
def bench_broker(engines: tuple[str, ...], records: int, steps: int, record_bytes: int, batch_records: int,
                 json_out: Path | None) -> None:
    """Fill one topic of a fresh embedded broker per engine and report RAM, disk and tail fetch latency per step.

    See dreamstream/bench/broker_cost.py for what each number is.
    """
    from dreamstream.bench import broker_cost

    work = Path(tempfile.mkdtemp(prefix="dreamstream-broker-bench-"))
    click.echo(f"bench-broker: {records:,} records of {record_bytes} B in batches of {batch_records}, {steps} steps; "
               f"work {work}; load {open('/proc/loadavg').read().split()[:3]}")
    every = []
    for engine in engines:
        got = broker_cost.measure(engine, records, steps, record_bytes, batch_records, work, progress=click.echo)
        every.extend(got)
        click.echo(f"{engine}: {json.dumps(broker_cost.per_record(got))}")
    click.echo(broker_cost.table(every))
    if json_out:
        json_out.write_text(json.dumps(broker_cost.to_json(every), indent=2))

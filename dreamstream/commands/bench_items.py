"""`dreamstream bench-items`: resident bytes per video, Zipf lookup cost and warm restart of each item store."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from dreamstream.cli_options import settings_options
from dreamstream.settings import Settings


@click.command("bench-items")
@settings_options("item_dtype", "item_cache_mb", "item_store_dir")
@click.option("--videos", "sizes", multiple=True, type=int, default=(50_000, 1_000_000), show_default=True,
              help="Catalogue sizes (repeatable).")
@click.option("--store", "stores", multiple=True, type=click.Choice(["memory", "rocksdb"]),
              help="Stores to measure (repeatable; default both).")
@click.option("--dim", default=64, show_default=True, help="Vector width D.")
@click.option("--events", default=200_000, show_default=True, help="Zipf-drawn events looked up per size.")
@click.option("--batch", default=1024, show_default=True, help="Events per lookup (the worker's batch).")
@click.option("--zipf", default=1.0, show_default=True, help="Popularity exponent s: rank k drawn ~ 1/k^s.")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Also write the results to this JSON file.")
def bench_items(settings: Settings, sizes: tuple[int, ...], stores: tuple[str, ...], dim: int, events: int, batch: int,
                zipf: float, json_out: Path | None) -> None:
    """Load each catalogue size into each item store through the worker's item table and measure it.

    Per (store, size), in a fresh process: records/s of the load, resident
    bytes per video, µs per event of a batch lookup with Zipf popularity, and
    seconds from reopening the store's folder to serving a batch (the memory
    store's restart is its load). No broker: `bench-scale` runs the worker.
    """
    from dreamstream.bench.items import measure, table

    work = settings.item_store_dir or Path(tempfile.mkdtemp(prefix="dreamstream-items-"))
    results = measure(list(stores or ("memory", "rocksdb")), list(sizes), dim, settings.item_dtype,
                      settings.item_cache_mb, events, batch, zipf, work, click.echo)
    click.echo(table(results))
    if json_out:
        json_out.write_text(json.dumps(results, indent=1))

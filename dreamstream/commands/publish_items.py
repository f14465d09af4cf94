"""`dreamstream publish-items`: a bundle's item vectors onto item-vectors, or tombstones."""
from __future__ import annotations

import time
from pathlib import Path

import click

from dreamstream.cli_options import KAFKA_SECURITY, settings_options
from dreamstream.index.items_publisher import latest_bundle, load_bundle_items, publish_tombstones, publish_vectors
from dreamstream.logs import setup_logging
from dreamstream.settings import Settings
from dreamstream.topics import create_topics


@click.command("publish-items")
@click.option("--bundle", type=click.Path(path_type=Path, file_okay=False), envvar="DREAMSTREAM_BUNDLE",
              help="Bundle folder holding items.npy and item_ids.json [env DREAMSTREAM_BUNDLE; default: newest in --model-dir].")
@click.option("--delete", "delete", multiple=True, metavar="ID", help="Publish a tombstone for this video id instead (repeatable).")
@settings_options("broker", "topic_prefix", "model_dir", "item_partitions", "log_level", "namespace", *KAFKA_SECURITY)
def publish_items(settings: Settings, bundle: Path | None, delete: tuple[str, ...]) -> None:
    """Put every item vector of a bundle on item-vectors (compacted, key = video id).

    With --delete ID..., publish tombstones (null values) instead: the
    indexer drops those items from its next version.
    """
    setup_logging(settings.log_level)
    if not delete:  # the bundle first: a wrong path fails at once, before any wait for the broker
        try:
            folder = bundle or latest_bundle(settings.model_dir)
            ids, vectors, model = load_bundle_items(folder)
        except (FileNotFoundError, ValueError) as err:
            raise click.ClickException(str(err)) from None
    create_topics(settings)
    started = time.perf_counter()
    if delete:
        count = publish_tombstones(settings, delete)
        click.echo(f"published {count} tombstones to {settings.topic('item-vectors')} in {time.perf_counter() - started:.1f}s")
        return
    count = publish_vectors(settings, ids, vectors, model)
    took = time.perf_counter() - started
    click.echo(f"published {count} items of bundle {folder} to {settings.topic('item-vectors')} in {took:.1f}s ({count / max(took, 1e-9):,.0f}/s)")

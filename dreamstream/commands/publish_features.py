"""`dreamstream publish-features`: a dataset's item features onto item-features, as a content pipeline would."""
from __future__ import annotations

import time
from pathlib import Path

import click

from dreamstream.cli_options import KAFKA_SECURITY, settings_options
from dreamstream.logs import setup_logging
from dreamstream.settings import Settings


@click.command("publish-features")
@click.option("--data", type=click.Path(path_type=Path, file_okay=False), required=True, envvar="DREAMSTREAM_FEATURES_DATA",
              help="Dataset folder whose items' features to publish (text_feat.npy / image_feat.npy, or .item text "
                   "encoded as `train` does). [env DREAMSTREAM_FEATURES_DATA]")
@click.option("--items", "items", multiple=True, metavar="ID[,ID...]", envvar="DREAMSTREAM_FEATURES_ITEMS",
              help="Only these video ids (repeatable, or comma-separated); default every item. "
                   "[env DREAMSTREAM_FEATURES_ITEMS]")
@click.option("--bundle", type=click.Path(path_type=Path, file_okay=False), envvar="DREAMSTREAM_BUNDLE",
              help="Bundle whose item tower will embed them (its input widths) [env DREAMSTREAM_BUNDLE; default: "
                   "newest in --model-dir].")
@settings_options("broker", "topic_prefix", "model_dir", "item_partitions", "log_level", *KAFKA_SECURITY)
def publish_features(settings: Settings, data: Path, items: tuple[str, ...], bundle: Path | None) -> None:
    """Put item features on item-features (key = video id): the worker's item tower embeds them onto item-vectors.

    New videos become searchable this way without retraining: the indexer
    adds their vectors to its next version.
    """
    from dreamstream.commands.train import ensure_text_features
    from dreamstream.data.recbole import DatasetError, load_dataset
    from dreamstream.index.features_publisher import publish_features as publish
    from dreamstream.index.items_publisher import latest_bundle
    from dreamstream.topics import create_topics

    setup_logging(settings.log_level)
    wanted = [i.strip() for group in items for i in group.split(",") if i.strip()]
    try:  # the dataset and bundle first: a wrong path fails at once, before any wait for the broker
        ds = ensure_text_features(load_dataset(data), click.echo)
        folder = bundle or latest_bundle(settings.model_dir)
    except (DatasetError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    create_topics(settings)
    started = time.perf_counter()
    count = publish(settings, ds, folder, wanted, progress=False)
    click.echo(f"published the features of {count} items of {ds.name} to {settings.topic('item-features')} "
               f"in {time.perf_counter() - started:.1f}s (item tower of {folder})")

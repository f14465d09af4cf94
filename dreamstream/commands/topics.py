"""`dreamstream topics`: create the design's topics on a broker."""
from __future__ import annotations

import click

from dreamstream.cli_options import KAFKA_SECURITY, settings_options
from dreamstream.settings import Settings
from dreamstream.topics import create_topics


@click.command("topics")
@settings_options("broker", "topic_prefix", "partitions", "item_partitions", "replication", "dlq_retention_days",
                  "namespace", *KAFKA_SECURITY)
def topics(settings: Settings) -> None:
    """Create every topic of the design that does not exist yet.

    watch-events and user-embeddings get --partitions (co-partitioned by
    user); item topics get --item-partitions; item-vectors, user-embeddings
    and index-versions are compacted. Existing topics are left untouched.
    """
    for name, state in create_topics(settings).items():
        click.echo(f"{state:8s} {name}")

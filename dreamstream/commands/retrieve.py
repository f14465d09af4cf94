"""`dreamstream retrieve`: a user's candidates from the current index, as a table."""
from __future__ import annotations

import click

from dreamstream.cli_options import INDEX_BACKEND, KAFKA_SECURITY, settings_options
from dreamstream.client import Retriever, latest_user_record
from dreamstream.settings import Settings


@click.command("retrieve")
@click.option("--user", "user", required=True, envvar="DREAMSTREAM_USER", help="User id to retrieve for [env DREAMSTREAM_USER].")
@click.option("-k", "k", type=int, default=50, show_default=True, envvar="DREAMSTREAM_K", help="Candidates to return [env DREAMSTREAM_K].")
@click.option("--exclude", multiple=True, metavar="VIDEO", help="Video ids to leave out (e.g. recently watched); repeatable.")
@click.option("--whole-topic", is_flag=True, envvar="DREAMSTREAM_WHOLE_TOPIC",
              help="Scan every partition of user-embeddings, not just the user's (murmur2) one [env DREAMSTREAM_WHOLE_TOPIC].")
@settings_options("broker", "topic_prefix", "index_dir", *KAFKA_SECURITY, *INDEX_BACKEND)
def retrieve(settings: Settings, user: str, k: int, exclude: tuple[str, ...], whole_topic: bool) -> None:
    """Read USER's latest record from the serving namespace's user-embeddings and print the top-k videos of its index."""
    # the index first: a missing index fails at once, before any wait for the broker
    from dreamstream.index.backend import index_backend

    with Retriever(settings.index_dir, follow=False, backend=index_backend(settings)) as retriever:
        serving = settings.in_namespace(retriever.serving.namespace)  # SERVING names the records' topic too
        record = latest_user_record(serving, user, whole_topic=whole_topic)
        if record is None:
            raise click.ClickException(f"user {user!r} has no record on {serving.topic('user-embeddings')} (try --whole-topic)")
        results = retriever.search(record, k, exclude=exclude)
        version = retriever.version_for(str(record.get("space") or "")).name
    weights = ", ".join(f"{w:.2f}" for w in record.get("interest_weights") or [])
    click.echo(f"user {user}  seq {record.get('seq')}  model {record.get('model')}  cold {record.get('cold')}  "
               f"interest weights [{weights}]  index {version}")
    click.echo(f"{'rank':>4}  {'video':<24}  {'score':>7}")
    for rank, (video, score) in enumerate(results, 1):
        click.echo(f"{rank:>4}  {str(video):<24}  {score:7.4f}")

"""`dreamstream replay`: a dataset onto watch-events, or dead letters back where they came from."""
from __future__ import annotations

import click

from dreamstream.cli_options import KAFKA_SECURITY, settings_options
from dreamstream.logs import setup_logging
from dreamstream.settings import Settings


@click.command("replay")
@settings_options("broker", "topic_prefix", "data_dir", "log_level", "skip_ratio", "skip_weight", "replay_cap",
                  "namespace", "index_dir", "state_dir", *KAFKA_SECURITY)
@click.option("--rate", type=float, default=None, envvar="DREAMSTREAM_REPLAY_RATE",
              help="Events per second, whatever the recorded times. [env DREAMSTREAM_REPLAY_RATE]")
@click.option("--speedup", type=float, default=None, envvar="DREAMSTREAM_REPLAY_SPEEDUP",
              help="Replay the recorded gaps this many times faster (1 = real time). "
                   "Neither --rate nor --speedup: as fast as possible. [env DREAMSTREAM_REPLAY_SPEEDUP]")
@click.option("--since", default=None, envvar="DREAMSTREAM_REPLAY_SINCE",
              help="Only events at or after this time: epoch seconds or ISO date/datetime (UTC). "
                   "[env DREAMSTREAM_REPLAY_SINCE]")
@click.option("--until", default=None, envvar="DREAMSTREAM_REPLAY_UNTIL",
              help="Only events before this time: epoch seconds or ISO date/datetime (UTC). "
                   "[env DREAMSTREAM_REPLAY_UNTIL]")
@click.option("--part", type=click.Choice(["all", "train", "heldout"]), default="all", show_default=True,
              envvar="DREAMSTREAM_REPLAY_PART",
              help="Which rows of the leave-last-out split: all, train (training histories) or heldout "
                   "(each user's rows after their training history). [env DREAMSTREAM_REPLAY_PART]")
@click.option("--dataset", "dataset_name", default=None, envvar="DREAMSTREAM_REPLAY_DATASET",
              help="Stem of the .inter file when --data-dir holds several. [env DREAMSTREAM_REPLAY_DATASET]")
@click.option("--dlq", is_flag=True, help="Re-drive dead letters from watch-events-dlq instead of a dataset.")
@click.option("--reason-contains", default=None,
              help="With --dlq: only letters whose reason contains this text (case-insensitive).")
@click.option("--from-beginning", is_flag=True,
              help="With --dlq: rewind the re-drive consumer group and re-drive every letter again.")
@click.option("--yes", is_flag=True,
              help="With --dlq: re-drive although other namespaces read the same inputs and will see the events again.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def replay(settings: Settings, rate: float | None, speedup: float | None, since: str | None, until: str | None,
           part: str, dataset_name: str | None, dlq: bool, reason_contains: str | None, from_beginning: bool,
           yes: bool, progress: bool) -> None:
    """Replay a RecBole dataset onto watch-events, or re-drive dead letters.

    Dataset mode: rows in event-time order (ties by file order), keyed by user
    id, value {user, video, ts, watch_ms, duration_ms}; a dataset without
    watch_ms/duration_ms columns replays each row with rating > 0 as a full
    play of a 15 s video (rating <= 0: a quick skip).

    --dlq mode: each letter's original key and value go back on its original
    topic. A letter that fails again lands in the DLQ again. A consumer group
    remembers what was re-driven, so a second run does not repeat it. The
    inputs are shared: when other namespaces read them (SERVING, rollouts
    started here), they are named and --yes is required.
    """
    from dreamstream import replay as rp

    setup_logging(settings.log_level)
    try:
        if dlq:
            others = rp.check_shared_inputs(settings, yes)
            if others:
                click.echo(f"namespace(s) {', '.join(ns or '(default)' for ns in others)} will see the re-driven "
                           "events again (--yes)", err=True)
            done = rp.redrive_dead_letters(settings, reason_contains, from_beginning, progress=progress)
            click.echo(f"re-drove {done.sent} dead letter(s) from {settings.topic(rp.DLQ)} ({done.summary()})")
            return
        if reason_contains or from_beginning or yes:
            raise click.UsageError("--reason-contains, --from-beginning and --yes only apply with --dlq")
        from dreamstream.data.recbole import DatasetError, load_dataset

        pace = rp.Pace(rate=rate, speedup=speedup)
        try:
            ds = load_dataset(settings.data_dir, dataset_name)
        except DatasetError as err:
            raise click.ClickException(str(err)) from None
        rows = rp.select_rows(ds, part, rp.parse_time(since), rp.parse_time(until), settings)
        sent = rp.replay_dataset(settings, ds, rows, pace, progress=progress)
        click.echo(f"replayed {sent} event(s) of {ds.name} ({part}) onto {settings.topic(rp.WATCH_EVENTS)}")
    except rp.ReplayError as err:
        raise click.UsageError(str(err)) from None

"""The ``dreamstream`` console script: one click group, one module per command.

Commands are imported lazily so ``dreamstream broker`` never pays for torch
and ``dreamstream worker`` never imports it at all.
"""
from __future__ import annotations

import difflib
import importlib
import os

import click

from dreamstream.errors import user_message

# name -> (module:function, one-line summary shown by `dreamstream --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "broker": ("dreamstream.commands.broker:broker", "Run the embedded Kafka-compatible broker (tansu) for development."),
    "topics": ("dreamstream.commands.topics:topics", "Create every topic of the design with its partitions and configs."),
    "datagen": ("dreamstream.commands.datagen:datagen", "Write a synthetic micro-video dataset as RecBole atomic files."),
    "train": ("dreamstream.commands.train:train", "Train DREAM then OPAL on a dataset; write a checkpoint."),
    "export": ("dreamstream.commands.export:export", "Export a checkpoint as the ONNX bundle the worker serves."),
    "evaluate": ("dreamstream.commands.evaluate:evaluate", "Score popularity, LightGCN, DREAM, DreamUMM and OPAL on a split."),
    "publish-items": ("dreamstream.commands.publish_items:publish_items", "Put a bundle's item vectors on item-vectors (or tombstones)."),
    "publish-features": ("dreamstream.commands.publish_features:publish_features",
                         "Put a dataset's item features on item-features (the worker's item tower embeds them)."),
    "worker": ("dreamstream.commands.worker:worker", "Run the Faust stream worker that keeps user embeddings fresh."),
    "indexer": ("dreamstream.commands.indexer:indexer", "Run the sidecar that builds sharded Faiss index versions."),
    "monitor": ("dreamstream.commands.monitor:monitor", "Measure live HitRate@k per model namespace (judges a rollout on live traffic)."),
    "retrieve": ("dreamstream.commands.retrieve:retrieve", "Retrieve candidates for a user from the current index."),
    "bench-index": ("dreamstream.commands.bench_index:bench_index", "Measure index build time, recall, search latency and memory at scale."),
    "replay": ("dreamstream.commands.replay:replay", "Replay a dataset (or dead letters) onto watch-events."),
    "bench-recovery": ("dreamstream.commands.bench_recovery:bench_recovery", "Time a worker's recovery of many users' state (memory, RocksDB, standby)."),
    "bench-scale": ("dreamstream.commands.bench_scale:bench_scale", "Measure the worker's memory, start-up, throughput and latency against catalogue and user-base size."),
    "bench-broker": ("dreamstream.commands.bench_broker:bench_broker", "Measure the development broker's RAM/disk per record and fetch latency as its log grows."),
    "bench-items": ("dreamstream.commands.bench_items:bench_items", "Measure each item store's bytes/video, Zipf lookup and warm restart."),
    "bench": ("dreamstream.commands.bench:bench", "Measure worker throughput and latency against a plain Faust agent."),
    "backfill": ("dreamstream.commands.rollout:backfill", "Rebuild user state in a model namespace from the watch-events log."),
    "rollout": ("dreamstream.commands.rollout:rollout_group", "Roll out a model with a new item space: start, status, switch, rollback."),
    "demo": ("dreamstream.commands.demo:demo", "Run the whole system end to end and print what it achieved."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when they run."""

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; a failure a person can fix ends with one line on stderr and exit 1, no traceback.

        The one place that decides it (:func:`dreamstream.errors.user_message`):
        :class:`~dreamstream.errors.UserError`, an unreachable broker, a missing
        file, a bad bundle or dataset, no index version. click's own errors pass
        through as they are. ``--debug`` (``DREAMSTREAM_DEBUG=1``) keeps the
        traceback; anything unrecognised is a bug and always keeps it.
        """
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as err:
            message = user_message(err, _broker_given(ctx.meta.get(_ARGS, [])))
            if message is None or ctx.params.get("debug"):
                raise
            raise click.ClickException(message) from None

    def resolve_command(self, ctx: click.Context, args: list[str]):
        ctx.meta[_ARGS] = list(args)  # the subcommand's arguments, for the broker an error message names
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, summary = COMMANDS[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            return _missing(name, summary)
        command = getattr(module, attr)
        command.short_help = command.short_help or summary
        return command


_ARGS = "dreamstream.args"


def _broker_given(args: list[str]) -> str:
    """The broker the command was pointed at: --broker, else DREAMSTREAM_BROKER, else the default setting."""
    broker = None
    for i, arg in enumerate(args):
        if arg == "--broker" and i + 1 < len(args):
            broker = args[i + 1]
        elif arg.startswith("--broker="):
            broker = arg.split("=", 1)[1]
    if broker is None:
        broker = os.environ.get("DREAMSTREAM_BROKER")
    if broker is None:
        from dreamstream.settings import Settings

        broker = Settings.model_fields["broker"].default
    return broker if "://" in broker else "kafka://" + broker


def _missing(name: str, summary: str) -> click.Command:
    @click.command(name, help=summary, short_help=summary)
    def not_built() -> None:
        raise click.ClickException(f"`dreamstream {name}` is not part of this build yet.")

    return not_built


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="dreamstream")
@click.option("--debug", is_flag=True, envvar="DREAMSTREAM_DEBUG",
              help="Show the full traceback when a command fails [env DREAMSTREAM_DEBUG=1].")
def main(debug: bool) -> None:
    """dreamstream keeps every user's interest embedding fresh in real time.

    Watch events come in on Kafka; the worker updates each user's DreamUMM
    vector and OPAL interests with ONNX models and publishes them; the
    indexer keeps sharded Faiss indexes of the DREAM item vectors for
    retrieval. Every flag also reads a DREAMSTREAM_* environment variable.

    A failure you can fix (no broker, a missing path, no index yet) prints
    one line saying what to do and exits 1; --debug shows the traceback.
    """
    if debug:  # also for dreamstream.errors.debugging() and the processes a command starts
        os.environ["DREAMSTREAM_DEBUG"] = "1"
    for warning in unknown_variables(os.environ):
        click.echo(f"warning: {warning}", err=True)


EXTRA_VARIABLES = {"DREAMSTREAM_CACHE", "DREAMSTREAM_DEBUG"}  # read outside Settings (a cache folder, --debug)


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """A sentence per ``DREAMSTREAM_*`` variable nothing reads (a typo would otherwise be silently ignored).

    Known: every setting (``DREAMSTREAM_<FIELD>``), the extras above, and
    every command option's variable (read from the command modules' source
    by :func:`dreamstream.settings_doc.command_variables`, only when a name
    is not already known: it costs a parse of every command module).
    """
    from dreamstream.settings import Settings

    known = {f"DREAMSTREAM_{name.upper()}" for name in Settings.model_fields} | EXTRA_VARIABLES
    left = [name for name in sorted(environ) if name.startswith("DREAMSTREAM_") and name not in known]
    if left:
        from dreamstream.settings_doc import command_variables

        known |= {v.variable for v in command_variables()}
    out = []
    for name in left:
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"{name} is not a dreamstream setting{hint}; it is ignored")
    return out

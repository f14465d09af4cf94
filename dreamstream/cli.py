"""The ``dreamstream`` console script: one click group, one module per command.

Commands are imported lazily so ``dreamstream broker`` never pays for torch
and ``dreamstream worker`` never imports it at all.
"""
from __future__ import annotations

import importlib

import click

from dreamstream.topics import PartitionCountMismatch

# name -> (module:function, one-line summary shown by `dreamstream --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "broker": ("dreamstream.commands.broker:broker", "Run the embedded Kafka-compatible broker (tansu) for development."),
    "topics": ("dreamstream.commands.topics:topics", "Create every topic of the design with its partitions and configs."),
    "datagen": ("dreamstream.commands.datagen:datagen", "Write a synthetic micro-video dataset as RecBole atomic files."),
    "train": ("dreamstream.commands.train:train", "Train DREAM then OPAL on a dataset; write a checkpoint."),
    "export": ("dreamstream.commands.export:export", "Export a checkpoint as the ONNX bundle the worker serves."),
    "evaluate": ("dreamstream.commands.evaluate:evaluate", "Score popularity, LightGCN, DREAM, DreamUMM and OPAL on a split."),
    "publish-items": ("dreamstream.commands.publish_items:publish_items", "Put a bundle's item vectors on item-vectors (or tombstones)."),
    "worker": ("dreamstream.commands.worker:worker", "Run the Faust stream worker that keeps user embeddings fresh."),
    "indexer": ("dreamstream.commands.indexer:indexer", "Run the sidecar that builds sharded Faiss index versions."),
    "retrieve": ("dreamstream.commands.retrieve:retrieve", "Retrieve candidates for a user from the current index."),
    "bench-index": ("dreamstream.commands.bench_index:bench_index", "Measure index build time, recall, search latency and memory at scale."),
    "replay": ("dreamstream.commands.replay:replay", "Replay a dataset (or dead letters) onto watch-events."),
    "bench-recovery": ("dreamstream.commands.bench_recovery:bench_recovery", "Time a worker's recovery of many users' state (memory, RocksDB, standby)."),
    "bench": ("dreamstream.commands.bench:bench", "Measure worker throughput and latency against a plain Faust agent."),
    "demo": ("dreamstream.commands.demo:demo", "Run the whole system end to end and print what it achieved."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when they run."""

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; a deployment that contradicts its settings ends with the message alone, no traceback."""
        try:
            return super().invoke(ctx)
        except PartitionCountMismatch as err:
            raise click.ClickException(str(err)) from None

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


def _missing(name: str, summary: str) -> click.Command:
    @click.command(name, help=summary, short_help=summary)
    def not_built() -> None:
        raise click.ClickException(f"`dreamstream {name}` is not part of this build yet.")

    return not_built


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="dreamstream")
def main() -> None:
    """dreamstream keeps every user's interest embedding fresh in real time.

    Watch events come in on Kafka; the worker updates each user's DreamUMM
    vector and OPAL interests with ONNX models and publishes them; the
    indexer keeps sharded Faiss indexes of the DREAM item vectors for
    retrieval. Every flag also reads a DREAMSTREAM_* environment variable.
    """

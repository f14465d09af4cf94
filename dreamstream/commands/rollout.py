"""`dreamstream backfill` and `dreamstream rollout ...`: a new item space built from the log, then switched to.

The mechanism is in :mod:`dreamstream.rollout`; these commands are its
faces for a person: progress with lag and ETA, a status table, and one-line
refusals that say what to wait for.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import click

from dreamstream.cli_options import INDEX_BACKEND, KAFKA_SECURITY, settings_options
from dreamstream.errors import UserError
from dreamstream.settings import Settings

ROLLOUT_SETTINGS = ("broker", "topic_prefix", "model_dir", "index_dir", "state_dir", "partitions", "item_partitions",
                    "replication", "half_life_s", "log_level", *KAFKA_SECURITY, *INDEX_BACKEND)
MAX_LAG = click.option("--max-lag", type=int, default=1000, show_default=True, envvar="DREAMSTREAM_ROLLOUT_MAX_LAG",
                       help="Events a namespace may be behind watch-events and still count as caught up.")


def prepare(settings: Settings, version: str, start_from: str) -> Settings:
    """The namespace's settings, after its topics exist and its bundle's item vectors are on item-vectors.<ns>."""
    from dreamstream import rollout
    from dreamstream.bundle import BundleError, load_bundle
    from dreamstream.index.items_publisher import publish_vectors
    from dreamstream.index.layout import check_namespace
    from dreamstream.topics import create_topics

    folder = Path(settings.model_dir) / check_namespace(version)  # the name first: ".." must not pick a bundle
    try:
        bundle = load_bundle(folder)
    except (BundleError, FileNotFoundError) as err:
        raise UserError(f"cannot roll out {version}: {err}") from None
    ns = settings.in_namespace(version).model_copy(update={"start_from": start_from})
    click.echo(rollout.history_advice(ns, ns.start_from_ms, rollout.earliest_record_ms(ns)))
    create_topics(ns)
    count = publish_vectors(ns, bundle.item_ids, bundle.items, model=bundle.version, progress=False)
    click.echo(f"namespace {version}: {count} item vectors on {ns.topic('item-vectors')}")
    return ns


def watch_progress(settings: Settings, namespace: str, max_lag: int, timeout_s: float | None = None,
                   alive: Callable[[], bool] | None = None) -> bool:
    """A progress bar of the namespace's catch-up (lag and ETA) until its lag is within ``max_lag``."""
    from tqdm import tqdm

    from dreamstream import rollout

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    bar = tqdm(desc=f"backfill {namespace}", unit="ev", dynamic_ncols=True)
    first: int | None = None
    try:
        while deadline is None or time.monotonic() < deadline:
            behind = rollout.lag(settings, namespace)
            if behind.started:
                first = behind.total if first is None else max(first, behind.total)
                bar.total = first
                bar.n = first - behind.total
                bar.set_postfix(lag=behind.total)
                bar.refresh()
                if behind.total <= max_lag:
                    return True
            if alive is not None and not alive():
                raise UserError(f"the worker of namespace {namespace} stopped; see its log")
            time.sleep(1.0)
        return False
    finally:
        bar.close()


@click.command("backfill")
@click.option("--namespace", "namespace", required=True, envvar="DREAMSTREAM_NAMESPACE",
              help="The bundle version to rebuild user state with; also the namespace it is kept in.")
@click.option("--from", "start_from", default="", envvar="DREAMSTREAM_START_FROM",
              help="Start at this time (ISO, e.g. 2026-11-01T00:00Z, or epoch ms); default the earliest retained record.")
@click.option("--keep-running", is_flag=True, help="Keep the worker running once caught up (it then follows the live stream).")
@MAX_LAG
@settings_options(*ROLLOUT_SETTINGS)
def backfill(settings: Settings, namespace: str, start_from: str, keep_running: bool, max_lag: int) -> None:
    """Rebuild every user's state in a namespace from the retained watch-events log, with a progress bar.

    Runs a worker of NAMESPACE in the foreground (exactly once in effect: a
    backfill killed mid-way resumes from its commits) until it has caught up
    with the live end of watch-events. The serving deployment is not touched.
    """
    from dreamstream.bench.harness import WorkerProcess

    ns = prepare(settings, namespace, start_from)
    from dreamstream import rollout

    folder = rollout.rollout_dir(settings, namespace)
    worker = WorkerProcess(ns.model_copy(update={"state_dir": folder / "state", "web_port": 0}),
                           folder / "backfill-worker.log").start()
    try:
        watch_progress(settings, namespace, max_lag, alive=worker.alive)
        click.echo(f"namespace {namespace} caught up with watch-events")
        if keep_running:
            click.echo("following the live stream; Ctrl-C stops it")
            while worker.alive():
                time.sleep(1.0)
    finally:
        worker.stop()


@click.group("rollout")
def rollout_group() -> None:
    """Roll out a model with a new item space: start (backfill), status, switch, rollback, retire."""


@rollout_group.command("start")
@click.argument("version")
@click.option("--from", "start_from", default="", envvar="DREAMSTREAM_START_FROM",
              help="Rebuild state from this time (ISO or epoch ms); default the earliest retained record.")
@click.option("--spawn/--no-spawn", default=True, show_default=True,
              help="Start the namespace's worker and indexer on this machine (else: deploy them with "
                   "DREAMSTREAM_NAMESPACE=VERSION yourself).")
@settings_options(*ROLLOUT_SETTINGS)
def start(settings: Settings, version: str, start_from: str, spawn: bool) -> None:
    """Create VERSION's namespace, publish its items and start rebuilding its users' state from the log."""
    from dreamstream import rollout

    prepare(settings, version, start_from)
    if spawn:
        pids = rollout.spawn(settings.in_namespace(version).model_copy(update={"start_from": start_from}), version)
        click.echo(f"namespace {version}: worker pid {pids['worker']}, indexer pid {pids['indexer']} "
                   f"(logs in {rollout.rollout_dir(settings, version)})")
    else:
        click.echo(f"deploy a worker and an indexer with DREAMSTREAM_NAMESPACE={version}"
                   + (f" DREAMSTREAM_START_FROM={start_from}" if start_from else ""))
    click.echo(f"then: dreamstream rollout status, and dreamstream rollout switch {version}")


@rollout_group.command("status")
@settings_options(*ROLLOUT_SETTINGS)
def status(settings: Settings) -> None:
    """Which namespace serves, which is catching up, and how far behind each is."""
    from dreamstream import rollout
    from dreamstream.index.backend import index_backend
    from dreamstream.index.manifest import IndexCorruptError
    from dreamstream.monitor import read_monitor
    from dreamstream.serving import namespace_dir, read_serving

    backend = index_backend(settings)
    serving = read_serving(settings.index_dir)
    names = rollout.known_namespaces(settings)
    try:
        live = read_monitor(settings.index_dir)  # `dreamstream monitor`'s live HitRate per namespace, when it runs
    except IndexCorruptError as err:
        click.echo(f"live quality unknown: {err}", err=True)
        live = {}
    click.echo(f"{'namespace':<28} {'role':<12} {'lag':>9}  {'live HitRate@K':<22} index version")
    for name in names:
        role = "serving" if name == serving.namespace else "previous" if name == serving.previous else "catching up"
        behind = rollout.lag(settings, name)
        shown = behind.total if behind.started else "-"
        stat = live.get(name)
        quality = f"{stat.hitrate:.4f} ({stat.window} ev)" if stat and stat.hitrate is not None else "-"
        try:
            index = backend.current(name) or "-"
        except IndexCorruptError:
            index = "(CURRENT unreadable)"
        click.echo(f"{name or '(default)':<28} {role:<12} {shown!s:>9}  {quality:<22} {index}")


@rollout_group.command("switch")
@click.argument("version")
@MAX_LAG
@click.option("--gate", "gate_margin", type=float, default=None, envvar="DREAMSTREAM_ROLLOUT_GATE",
              help="Switch only if VERSION's live HitRate (dreamstream monitor) is at most this much below the serving "
                   "namespace's, e.g. 0.01.")
@settings_options(*ROLLOUT_SETTINGS)
def switch_command(settings: Settings, version: str, max_lag: int, gate_margin: float | None) -> None:
    """Point readers at VERSION's namespace (user embeddings, item vectors, index together), atomically."""
    from dreamstream import rollout
    from dreamstream.serving import read_serving

    if gate_margin is not None:
        from dreamstream.monitor import gate

        ok, why = gate(settings.index_dir, version, read_serving(settings.index_dir).namespace, gate_margin)
        if not ok:
            raise UserError(f"not switching to {version}: {why}")
        click.echo(f"gate passed: {why}")
    new = rollout.switch(settings, version, max_lag)
    click.echo(f"serving {version}; previous {new.previous or '(default)'} stays available for `dreamstream rollout rollback`")


@rollout_group.command("rollback")
@settings_options(*ROLLOUT_SETTINGS)
def rollback(settings: Settings) -> None:
    """Point readers back at the namespace that served before the last switch."""
    from dreamstream.serving import read_serving, switch_serving

    serving = read_serving(settings.index_dir)
    if serving.previous is None:
        raise UserError("nothing to roll back to: no switch has happened in this index dir")
    switch_serving(settings.index_dir, serving.previous)
    click.echo(f"serving {serving.previous or '(default)'} again; {serving.namespace} stays as previous")


@rollout_group.command("retire")
@click.argument("version")
@settings_options(*ROLLOUT_SETTINGS)
def retire(settings: Settings, version: str) -> None:
    """Stop a namespace this machine started and remove its index versions (never the serving or previous one)."""
    from dreamstream import rollout

    stopped, removed = rollout.retire(settings, version)
    click.echo(f"retired {version}: stopped {', '.join(stopped) or 'nothing'}; {removed}. Its topics stay "
               "(delete them with your Kafka tools when the history is no longer needed).")


"""Rolling out a model with a new item space: a namespace built from the log, caught up, then switched to atomically.

A retrain changes the item space, and every user's state is a sum of the
old space's vectors, so a new model cannot be hot-reloaded into live state
(the worker refuses it). Instead (the Kappa way: the retained
``watch-events`` log is the source of truth):

1. ``start``: the new bundle's version becomes a *namespace*
   (``DREAMSTREAM_NAMESPACE``): its own consumer group and changelog, its
   own ``item-vectors.<ns>`` (the bundle's items are published there),
   ``user-embeddings.<ns>``, dead letters and ``<index dir>/<ns>/``. A worker
   and an indexer in that namespace start; the worker reads ``watch-events``
   from ``--from`` (or the earliest retained record) and rebuilds every
   user's state with the new model, exactly once in effect like any worker
   (a backfill killed mid-way resumes from its commits). Serving goes on.
2. The namespace *catches up*: its lag behind the live end of
   ``watch-events`` shrinks to the live rate (``status`` shows it).
3. ``switch``: one atomic write of ``SERVING`` (:mod:`dreamstream.serving`)
   moves readers to the new namespace's user embeddings, item vectors and
   index together. The old namespace keeps running, and stays loaded in
   the client for records read before the switch.
4. ``rollback`` points ``SERVING`` back; ``retire`` stops an old namespace.

The processes a rollout starts here (``start --spawn``) are for a single
machine (development, the demo, the tests). On Kubernetes the namespace's
worker and indexer are deployments with ``DREAMSTREAM_NAMESPACE`` set
(docs/production.md); the other steps are the same commands.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dreamstream.errors import UserError, broker_bootstrap
from dreamstream.index.layout import InvalidNamespace, check_namespace, is_version_name
from dreamstream.index.manifest import IndexCorruptError, read_manifest
from dreamstream.kafka.security import kafka_python_options
from dreamstream.processes.pid_file import owned_pid, write_pid_file
from dreamstream.serving import Serving, namespace_dir, read_serving, switch_serving
from dreamstream.settings import Settings
from dreamstream.topics import WATCH_EVENTS

log = logging.getLogger(__name__)
HISTORY_HALF_LIVES = 10  # events older than this many half-lives weigh under 0.1% of a fresh one
PROCESSES = ("worker", "indexer")


@dataclass(frozen=True)
class Lag:
    """How far a namespace's worker is behind the end of watch-events: per partition and in total."""

    namespace: str
    committed: dict[int, int | None]
    ends: dict[int, int]

    @property
    def total(self) -> int:
        return sum(max(0, end - (self.committed.get(p) or 0)) for p, end in self.ends.items())

    @property
    def started(self) -> bool:
        """Has the namespace's worker committed anything yet (it commits its start at once)?"""
        return any(c is not None for c in self.committed.values())


def lag(settings: Settings, namespace: str) -> Lag:
    """The committed positions of ``namespace``'s worker against the end offsets of watch-events.

    End offsets come from ListOffsets, which the development broker answers
    one produce batch short: there the lag reads low by up to a batch.
    """
    from kafka import KafkaConsumer, TopicPartition

    ns = settings.in_namespace(namespace)
    topic = settings.topic(WATCH_EVENTS)
    with broker_bootstrap(settings.broker):
        consumer = KafkaConsumer(group_id=f"{ns.app_id}-positions", enable_auto_commit=False,
                                 client_id="dreamstream-rollout", **kafka_python_options(settings))
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        if not parts:
            raise UserError(f"topic {topic} does not exist on {settings.broker}; run `dreamstream topics` first")
        tps = [TopicPartition(topic, p) for p in parts]
        ends = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
        committed = {tp.partition: consumer.committed(tp) for tp in tps}
    finally:
        consumer.close()
    return Lag(namespace, committed, ends)


def history_needed_s(half_life_s: float) -> float:
    """Seconds of history a user vector with this half-life depends on (inf without decay)."""
    return HISTORY_HALF_LIVES * half_life_s


def earliest_record_ms(settings: Settings) -> int | None:
    """The Kafka timestamp of the oldest record still retained on watch-events (None: the topic is empty)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topic(WATCH_EVENTS)
    with broker_bootstrap(settings.broker):
        consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, client_id="dreamstream-rollout",
                                 **kafka_python_options(settings))
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        oldest: dict[int, int] = {}
        deadline = time.monotonic() + 10
        while len(oldest) < len(tps) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=300, max_records=len(tps) * 50).items():
                if records and tp.partition not in oldest:
                    oldest[tp.partition] = records[0].timestamp
                    consumer.pause(tp)
        return min(oldest.values()) if oldest else None
    finally:
        consumer.close()


def history_advice(settings: Settings, start_ms: int | None, earliest_ms: int | None, now_ms: int | None = None) -> str:
    """What the chosen half-life needs and whether the retained log has it: one sentence for a person."""
    needed = history_needed_s(settings.half_life_s)
    need = "all of it (no decay)" if math.isinf(needed) else f"the last {_duration(needed)}"
    line = f"half-life {settings.half_life_s:g} s: a user's vector depends on {need} of their history"
    if earliest_ms is None:
        return line + "; watch-events holds no record yet"
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    want_from = start_ms if start_ms is not None else (None if math.isinf(needed) else now_ms - int(needed * 1000))
    if want_from is not None and earliest_ms > want_from:
        return (line + f". WARNING: watch-events retains records only from {_when(earliest_ms)}, later than the "
                f"{_when(want_from)} that needs: users' first vectors will miss the older history (raise the "
                "topic's retention.ms, or accept it)")
    return line + f"; watch-events retains records from {_when(earliest_ms)}: enough"


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} seconds"


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


# --- processes a rollout starts on this machine ------------------------------------------
def rollout_dir(settings: Settings, namespace: str) -> Path:
    """Where ``rollout start --spawn`` keeps a namespace's pid files, logs and state: its rollout record."""
    return settings.state_dir / "rollout" / check_namespace(namespace)


def known_namespaces(settings: Settings) -> list[str]:
    """Every namespace that may be reading the shared inputs: serving, previous, then each rollout started here.

    What ``rollout status`` lists, and whom ``replay --dlq`` warns: a
    namespace deployed elsewhere and not yet switched to is not known here.
    """
    folder = settings.state_dir / "rollout"
    started = sorted(p.name for p in folder.iterdir() if p.is_dir() and _is_namespace(p.name)) if folder.is_dir() else []
    return list(dict.fromkeys([*read_serving(settings.index_dir).spaces(), *started]))


def _is_namespace(name: str) -> bool:
    """A rollout record's folder name that is a namespace's (a stray folder there is not one)."""
    try:
        check_namespace(name)
    except InvalidNamespace:
        return False
    return True


def spawn(settings: Settings, namespace: str) -> dict[str, int]:
    """Start the namespace's worker and indexer as detached processes (pid files and logs in its rollout dir).

    A process already running under a pid file (checked against its command
    line and start time, :mod:`dreamstream.processes.pid_file`) is kept.
    """
    from dreamstream.bench.harness import settings_env

    folder = rollout_dir(settings, namespace)
    folder.mkdir(parents=True, exist_ok=True)
    ns = settings.in_namespace(namespace).model_copy(update={"state_dir": folder / "state", "web_port": 0})
    pids = {}
    for name in PROCESSES:
        running = owned_pid(folder / f"{name}.pid", name)
        if running is not None:
            pids[name] = running
            continue
        with open(folder / f"{name}.log", "ab") as out:
            proc = subprocess.Popen([str(Path(sys.executable).parent / "dreamstream"), name], env=settings_env(ns),
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        write_pid_file(folder / f"{name}.pid", proc.pid)
        pids[name] = proc.pid
    return pids


def stop_spawned(settings: Settings, namespace: str, timeout_s: float = 30.0) -> list[str]:
    """SIGTERM the namespace's spawned processes and wait for them; returns the ones that were running.

    Only a process its pid file still describes is signalled: a stale file
    (the process died, the PID was reused after a reboot) is removed and
    nothing is killed.
    """
    stopped = []
    for name in PROCESSES:
        pid_file = rollout_dir(settings, namespace) / f"{name}.pid"
        pid = owned_pid(pid_file, name)
        if pid is None:
            pid_file.unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid) and owned_pid(pid_file, name) == pid:
            os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        stopped.append(name)
    return stopped


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process (tests) is not alive
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


# --- retiring a namespace ------------------------------------------------------------------
def proven_namespace(settings: Settings, namespace: str) -> str:
    """How we know ``namespace`` is a namespace ("" when we do not): a rollout record here, or an index version built for it.

    ``retire`` deletes ``<index dir>/<namespace>/``; a name that merely
    passes the name check (a stray folder, a typo of another one) is not
    enough to delete a folder.
    """
    if rollout_dir(settings, namespace).is_dir():
        return f"its rollout record {rollout_dir(settings, namespace)}"
    if settings.index_backend == "milvus":  # its versions live in Milvus: the namespace's alias is the proof
        from dreamstream.index.backend import index_backend

        backend = index_backend(settings)
        return f"its {backend.where(namespace)}" if backend.current(namespace) is not None else ""
    folder = namespace_dir(settings.index_dir, namespace)
    for version in sorted(folder.iterdir()) if folder.is_dir() else ():
        if is_version_name(version.name) and version.is_dir():
            try:
                if read_manifest(version).space == namespace:
                    return f"index version {version.name} built for it"
            except IndexCorruptError:
                continue
    return ""


def retire(settings: Settings, namespace: str) -> tuple[list[str], str]:
    """Stop a namespace's spawned processes and remove its index versions: (processes stopped, what was removed).

    Faiss: its index folder; Milvus: its alias and collections
    (:meth:`dreamstream.index.backend.IndexBackend.retire`).

    Refused (:class:`UserError`) for the default namespace, the serving or
    previous one, a name that is not a namespace's (an index version's, a
    pointer file's: :func:`dreamstream.index.layout.check_namespace`), and a
    namespace it cannot prove is one (:func:`proven_namespace`).
    """
    import shutil

    check_namespace(namespace)
    if not namespace:
        raise UserError("the default namespace cannot be retired")
    if namespace in read_serving(settings.index_dir).spaces():
        raise UserError(f"namespace {namespace!r} is serving or previous; switch away (and again) before retiring it")
    proof = proven_namespace(settings, namespace)
    if not proof:
        raise UserError(f"{namespace!r} is not known as a namespace here (no rollout record under "
                        f"{settings.state_dir / 'rollout'} and no index version built for it under {settings.index_dir}); "
                        "nothing retired")
    log.info("retiring namespace %r, known by %s", namespace, proof)
    stopped = stop_spawned(settings, namespace)
    if settings.index_backend == "milvus":
        from dreamstream.index.backend import index_backend

        return stopped, f"dropped {index_backend(settings).retire(namespace)}"
    folder = namespace_dir(settings.index_dir, namespace)
    if not folder.is_dir() or folder.is_symlink():
        return stopped, "it had no index folder"
    shutil.rmtree(folder)
    return stopped, f"removed {folder}"


# --- the switch ----------------------------------------------------------------------------
def switch(settings: Settings, namespace: str, max_lag: int) -> Serving:
    """Point readers at ``namespace`` once it has an index and is caught up; refuse with the reason otherwise.

    An unreadable ``SERVING`` does not stop it: the switch is how it is repaired.
    """
    try:
        current = read_serving(settings.index_dir)
    except IndexCorruptError as err:
        log.warning("replacing an unreadable pointer: %s", err)
        current = None
    if current is not None and current.namespace == namespace:
        raise UserError(f"namespace {namespace!r} already serves")
    from dreamstream.index.backend import index_backend

    backend = index_backend(settings)
    if backend.current(namespace) is None:
        raise UserError(f"namespace {namespace!r} has no index version in {backend.where(namespace)} "
                        "yet; is its indexer running (`dreamstream rollout start --spawn`, or its deployment)?")
    behind = lag(settings, namespace)
    if not behind.started or behind.total > max_lag:
        raise UserError(f"namespace {namespace!r} is {behind.total} events behind watch-events (allowed: {max_lag}); "
                        "wait for it to catch up (`dreamstream rollout status`)")
    return switch_serving(settings.index_dir, namespace)

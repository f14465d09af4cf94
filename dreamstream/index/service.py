"""The indexer loop: follow ``item-vectors``, build a version every interval when anything changed.

Single-threaded on purpose: applying records and snapshotting the store
happen in the same thread, so a build sees a consistent store without locks.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dreamstream import codec
from dreamstream.index.builder import BuildParams, BuiltVersion, build_version
from dreamstream.index.follower import ItemFollower
from dreamstream.index.manifest import IndexCorruptError, Manifest, read_manifest
from dreamstream.index.metrics import IndexMetrics
from dreamstream.index.publish import discard, install, prune, read_current
from dreamstream.index.store import ItemStore
from dreamstream.index.width import bundle_folder, index_width
from dreamstream.kafka.security import kafka_python_options
from dreamstream.settings import Settings
from dreamstream.topics import INDEX_VERSIONS

log = logging.getLogger(__name__)


def build_params(settings: Settings, threads: int = 0) -> BuildParams:
    """The build parameters the settings describe."""
    return BuildParams(
        exact_max=settings.index_exact_max,
        recall_floor=settings.index_recall_floor,
        nlist=settings.index_nlist,
        nprobe=settings.index_nprobe,
        threads=threads,
        kind=settings.index_kind,
        short_list=settings.index_short_list,
    )


@dataclass(frozen=True)
class BuildOutcome:
    manifest: Manifest
    published: bool
    reason: str = ""


def publish_version(built: BuiltVersion, index_dir: Path, recall_floor: float, serving: Manifest | None = None
                    ) -> BuildOutcome:
    """Install a built version unless it must not serve (then delete it and say why).

    Refused: recall under the floor, or a width other than the version
    serving now (``serving``): readers would switch to an index no query of
    theirs fits. A namespace's width changes only with a rollout to a new
    namespace.
    """
    reason = ""
    if serving is not None and built.manifest.dim != serving.dim:
        reason = (f"its items are {built.manifest.dim}-d but the serving version {serving.version} is {serving.dim}-d; "
                  "a new width needs a new namespace (`dreamstream rollout start`), not a new version")
    elif built.manifest.recall < recall_floor:
        reason = (
            f"recall@10 {built.manifest.recall:.4f} is under the floor {recall_floor:.4f} "
            f"(shards: {[s.recall for s in built.manifest.shards]}); raise --index-nprobe or --index-nlist, raise --index-exact-max (exact shards), or lower --index-recall-floor"
        )
    if reason:
        discard(built)
        log.warning("version=%s not published: %s", built.manifest.version, reason)
        return BuildOutcome(built.manifest, False, reason)
    try:
        install(built, index_dir)
    except OSError as err:  # e.g. a folder where CURRENT belongs: the indexer keeps running and says why
        reason = f"cannot install it in {index_dir} ({err}); fix the index dir, the next build publishes"
        shutil.rmtree(index_dir / built.manifest.version, ignore_errors=True)
        discard(built)
        log.error("version=%s not published: %s", built.manifest.version, reason)
        return BuildOutcome(built.manifest, False, reason)
    log.info("published version=%s items=%d recall=%.4f", built.manifest.version, built.manifest.items, built.manifest.recall)
    return BuildOutcome(built.manifest, True)


def current_manifest(index_dir: Path) -> Manifest | None:
    """The manifest of the version CURRENT names, to link its unchanged shards; None (said in the log) when unreadable."""
    try:
        name = read_current(index_dir)
        return None if name is None else read_manifest(index_dir / name)
    except IndexCorruptError as err:
        log.warning("current version unreadable, building every shard: %s", err)
        return None


def bundle_interests(settings: Settings) -> int:
    """The K of the namespace's bundle (:func:`~dreamstream.index.width.bundle_folder`); 0 when none is readable.

    Written into every version's manifest, so readers cap the interests they
    search per record at what the worker can have written (client.max_interests).
    """
    from dreamstream.bundle import BundleError, read_manifest as read_bundle_manifest

    folder = bundle_folder(settings)
    if folder is None or not (folder / "manifest.json").is_file():
        return 0
    try:
        return read_bundle_manifest(folder).interests
    except BundleError as err:
        log.warning("bundle K unknown, readers use their default cap: %s", err)
        return 0


class Indexer:
    """The sidecar: one store, one follower, versions built into ``settings.index_dir``."""

    def __init__(self, settings: Settings, params: BuildParams | None = None, metrics: IndexMetrics | None = None) -> None:
        self.settings = settings
        self.index_dir = Path(settings.namespace_index_dir)  # <index dir>/<namespace>/ for a rollout's namespace
        self.params = params or build_params(settings)
        self.metrics = metrics or IndexMetrics(bind=settings.web_bind)  # /metrics listens where DREAMSTREAM_WEB_BIND says
        self.store = ItemStore(settings.index_shards, dim=index_width(settings))
        self.interests = bundle_interests(settings)
        self.follower = ItemFollower(settings, self.store)
        self._start_ends = self.follower.consumer.end_offsets(self.follower.partitions)
        self._caught_up = False
        self.pending: set[int] = set()  # shards changed since the last published version
        self._changed = False  # anything applied since the last build attempt
        self._last_build = 0.0
        self._producer = None
        self.outcomes: list[BuildOutcome] = []
        self.milvus = None  # --index-backend milvus: versions are collections (dreamstream/index/milvus_publish.py)
        if settings.index_backend == "milvus":
            from dreamstream.index.milvus_publish import MilvusPublisher

            self.milvus = MilvusPublisher.of(settings)

    # --- following ----------------------------------------------------------
    def poll(self, timeout_s: float = 0.2) -> None:
        stats = self.follower.poll(timeout_s)
        self.metrics.records.labels("put").inc(stats.puts)
        self.metrics.records.labels("delete").inc(stats.deletes)
        self.metrics.records.labels("rejected").inc(stats.rejected)
        if stats.changed:
            self._changed = True
            self.pending |= self.store.dirty
            self.store.dirty.clear()

    def caught_up(self) -> bool:
        """Whether everything on the topic when we started has been read: no version of half a catalogue."""
        if not self._caught_up:
            consumer = self.follower.consumer
            self._caught_up = all(consumer.position(tp) >= end for tp, end in self._start_ends.items())
        return self._caught_up

    # --- building -----------------------------------------------------------
    def due(self, now: float) -> bool:
        return self._changed and self.caught_up() and now - self._last_build >= self.settings.index_interval_s

    def build(self) -> BuildOutcome:
        """Build and (if its recall clears the floor) publish a version of the store as it is now."""
        self._last_build = time.monotonic()
        self._changed = False
        started = time.perf_counter()
        if self.milvus is not None:
            built, published, reason = self.milvus.publish(self.store, self.params, self.settings.namespace, self.interests)
            outcome = BuildOutcome(built.manifest, published, reason)
        else:
            previous = current_manifest(self.index_dir)
            built = build_version(self.store, self.index_dir, self.params, rebuild=set(self.pending), previous=previous,
                                  space=self.settings.namespace, interests=self.interests)
            outcome = publish_version(built, self.index_dir, self.params.recall_floor, serving=previous)
        self.metrics.build_seconds.observe(time.perf_counter() - started)
        self.metrics.recall.set(built.manifest.recall)
        if outcome.published:
            self.pending.clear()
            self.metrics.versions.inc()
            self.metrics.items.set(built.manifest.items)
            self._announce(built.manifest)
        else:
            self.metrics.refused.inc()
        self.prune()
        self.outcomes.append(outcome)
        return outcome

    def prune(self) -> None:
        """Remove versions retired longer than the grace (folders, or Milvus collections)."""
        if self.milvus is not None:
            self.milvus.prune(self.settings.namespace, self.settings.index_grace_s)
        elif self.index_dir.exists():
            prune(self.index_dir, self.settings.index_grace_s)

    def _announce(self, manifest: Manifest) -> None:
        """Put the new version on ``index-versions`` (key "current")."""
        from kafka import KafkaProducer

        if self._producer is None:
            self._producer = KafkaProducer(**kafka_python_options(self.settings), client_id="dreamstream-indexer")
        record = {
            "version": manifest.version,
            "path": self.milvus.where(manifest) if self.milvus is not None else str((self.index_dir / manifest.version).resolve()),
            "shards": len(manifest.shards),
            "items": manifest.items,
            "built_at": manifest.built_at,
            "recall": manifest.recall,
        }
        self._producer.send(self.settings.topic(INDEX_VERSIONS), key=b"current", value=codec.pack(record))
        self._producer.flush(timeout=10)

    # --- running ------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Follow and build until ``stop`` is set (SIGTERM in the command)."""
        log.info("indexer started topic=%s shards=%d dim=%d index_dir=%s", self.follower.topic, self.store.shards,
                 self.store.dim, self.index_dir)
        last_prune = time.monotonic()
        while not stop.is_set():
            self.poll(min(0.5, self.settings.index_interval_s))
            now = time.monotonic()
            if self.due(now):
                self.build()
            elif now - last_prune >= self.settings.index_interval_s:
                self.prune()  # versions retire on time even when nothing changes
                last_prune = now
        log.info("indexer stopping")

    def close(self) -> None:
        self.follower.close()
        if self._producer is not None:
            self._producer.close(timeout=5)

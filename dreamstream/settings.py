"""One typed, frozen settings object for every dreamstream process.

Every field is reachable three ways, in this order of precedence: a CLI flag
(``--half-life-s``), an environment variable (``DREAMSTREAM_HALF_LIFE_S``),
the default written here. The CLI builds its flags from these fields
(:func:`dreamstream.cli_options.settings_options`), so a setting added here is
a flag and a variable everywhere at once and the two can never drift apart.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dreamstream.dreamumm_ref import LIVE_BETA0, LIVE_GAMMA


class Settings(BaseSettings):
    """Settings shared by the worker, the indexer, the tools and the tests."""

    model_config = SettingsConfigDict(env_prefix="DREAMSTREAM_", frozen=True, extra="ignore")

    # --- where things are -------------------------------------------------
    broker: str = Field(
        "kafka://127.0.0.1:9092",
        description="Kafka bootstrap servers as kafka://host:port[,host:port].",
    )
    broker_kind: Literal["auto", "kafka", "tansu"] = Field(
        "auto", description="What the broker is: kafka (any Kafka cluster), tansu (the embedded development broker: the "
                            "worker switches on its repairs for tansu's quirks, streams/compat/), or auto (tansu when the "
                            "broker is on a loopback address, else kafka). Set kafka for a local Kafka.",
    )
    topic_prefix: str = Field("", description="Prefix put before every topic name (e.g. 'prod.').")
    namespace: str = Field(
        "",
        description="The model rollout (item space) this process serves, normally the bundle version it started with "
                    "(`dreamstream rollout`). Its state and outputs live apart: its own consumer group and changelog, "
                    "user-embeddings.<namespace>, item-vectors.<namespace>, watch-events-dlq.<namespace>, "
                    "<index dir>/<namespace>/. Empty: the default namespace (topics without a suffix). Letters, digits, '.', '_' "
                    "and '-', starting with a letter or digit; not an index dir file name (CURRENT, SERVING, ...) nor "
                    "an index version name (dreamstream/index/layout.py).",
    )
    start_from: str = Field(
        "", description="Where a namespace that has never read watch-events starts: empty = the earliest retained "
                        "record, else an ISO time (2026-11-01T00:00Z) or epoch milliseconds (`dreamstream backfill --from`).",
    )
    model_dir: Path = Field(Path("var/models"), description="Folder of exported ONNX bundles, one sub-folder per version.")
    index_dir: Path = Field(Path("var/index"), description="Folder the indexer writes Faiss index versions into.")
    data_dir: Path = Field(Path("var/data"), description="Folder of a RecBole atomic dataset (.inter, .item, *_feat.npy).")
    state_dir: Path = Field(Path("var/state"), description="Folder for worker table state (RocksDB) and the indexer's item store.")
    store: str = Field("memory://", description="Faust table store: memory:// (tests, demo) or rocksdb:// (production).")
    state_block_cache_mb: int = Field(
        0, ge=0, description="Block cache of each user-state RocksDB database (one per partition a worker holds) in "
                             "MiB; 0 = Faust's default, 2048 (docs/scaling.md#user-state-memory).")
    state_memtable_mb: int = Field(
        0, ge=0, description="Size of each write buffer (memtable) of each user-state RocksDB database in MiB; 0 = "
                             "Faust's default, 64.")
    state_memtables: int = Field(
        0, ge=0, description="Write buffers (memtables) each user-state RocksDB database may hold; 0 = Faust's default, 3.")
    item_store: Literal["memory", "rocksdb"] = Field(
        "memory", description="Where a worker keeps the item vectors (docs/scaling.md#item-store): memory (one compact "
                              "table, rebuilt from item-vectors at every start) or rocksdb (on disk under the item store "
                              "dir, hot videos cached in RAM, a restart reads only the topic's tail).")
    item_cache_mb: int = Field(
        1024, ge=1, description="RAM ceiling of the item store in MiB: the whole table (memory: a video beyond it is "
                                "refused and its events dead-lettered) or the hot-video cache (rocksdb).")
    item_dtype: Literal["float32", "float16"] = Field(
        "float32", description="How the item store holds vectors: float32 (exact) or float16 (half the bytes; user "
                               "vectors move by ~1e-3, docs/scaling.md#item-store).")
    item_store_dir: Path | None = Field(None, description="Folder of the rocksdb item store (unset: <state dir>/items).")

    # --- Kafka security (docs/production.md#security): passed to every Kafka client the project creates -----
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How clients talk to the brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL.")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) that signed the brokers' certificates "
                                          "(SSL/SASL_SSL; unset: the system's CAs).")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) when the brokers verify clients.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Private key (PEM) of the client certificate.")
    kafka_ssl_password_file: Path | None = Field(None, description="File holding the client key's password, if any.")
    kafka_ssl_check_hostname: bool = Field(True, description="Verify that a broker's certificate names the host "
                                           "connected to. Switch off only for a test CA without host names.")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = Field(
        "PLAIN", description="SASL mechanism (SASL_PLAINTEXT/SASL_SSL).")
    kafka_sasl_username: str = Field("", description="SASL user name (PLAIN, SCRAM).")
    kafka_sasl_password_file: Path | None = Field(None, description="File holding the SASL password (PLAIN, SCRAM), "
                                                  "e.g. a mounted Secret; for OAUTHBEARER, the bearer token (re-read "
                                                  "on every login).")

    # --- topics -----------------------------------------------------------
    # 4, not more, because the embedded broker's every fetch pays for every partition it reads: at 34,000
    # events/s on 2 cores p99 was 121-125 ms with 4 against 258-357 ms with 8 (docs/measurements.md).
    partitions: int = Field(4, ge=1, description="Partitions of watch-events, user-embeddings and the user-state "
                            "changelog: the most workers that can share the load. On Kafka choose it for your largest "
                            "fleet (docs/production.md); it cannot change without a new deployment.")
    item_partitions: int = Field(1, ge=1, description="Partitions of item-vectors and item-features.")
    replication: int = Field(1, ge=1, description="Replication factor for topics created by `dreamstream topics`.")
    dlq_retention_days: float = Field(
        30.0, gt=0, description="How long watch-events-dlq keeps a dead letter (its retention.ms when `dreamstream topics` "
                                "creates it): long enough to notice, fix the cause and `replay --dlq`.",
    )

    # --- update math -----------------------------------------------------
    half_life_s: float = Field(
        120.0, gt=0, description="Half-life in seconds of a past event's weight in the user state; inf = no decay. "
                                 "`train` trains the item space for this same decay. 120 s was chosen on ml-100k-dev "
                                 "validation (docs/evaluation.md).",
    )
    opal_half_life_s: float = Field(
        float("inf"), gt=0, description="Half-life in seconds of OPAL's interest states; inf = no decay. The interests "
                                        "keep long-term tastes beside the session-length user vector and re-rank its "
                                        "candidates (dreamstream/blend.py); inf was chosen on ml-100k-dev validation.",
    )
    skip_ratio: float = Field(0.2, ge=0, le=1, description="A watch shorter than this fraction of the video is a quick skip.")
    skip_weight: float = Field(-0.3, le=0, description="Engagement weight of a quick skip (negative pushes the user away).")
    replay_cap: float = Field(1.5, ge=1, description="Largest engagement weight a (re)play can reach, as a completion ratio.")
    impression_weight: float = Field(1.0, ge=0, description="Weight of an impressed candidate in the Candidate-DreamUMM blend.")
    cold_min_positive: int = Field(
        5, ge=0, description="A user with fewer positive events than this is cold: blended with impressed candidates."
    )
    live_gamma: float = Field(
        LIVE_GAMMA, ge=0, description="Live refinement of new videos (item-side DreamUMM): how far each watcher's unit user "
        "vector, times the watch's engagement weight, pulls a video the item tower embedded; 0 turns live refinement "
        "off (no item-watchers records, new videos keep their tower vector). 0.1 was chosen on ml-100k-dev validation "
        "(docs/evaluation.md, live refinement).",
    )
    live_beta0: float = Field(
        LIVE_BETA0, ge=0, description="Live refinement: how far below its tower vector, along the bundle's mean user "
        "direction, a new video nobody has watched starts (keeps unwatched videos out of everyone's top-k). 0.4 was "
        "chosen on ml-100k-dev validation.",
    )
    live_publish_s: float = Field(
        10.0, gt=0, description="Live refinement: how often the item refiner publishes the refined vectors of the "
        "new videos watched since its last publish, in seconds (a debounce: on ml-100k-dev validation an hour late "
        "cost 0.004 HitRate@20 on the new videos' events).",
    )

    # --- worker -----------------------------------------------------------
    batch_size: int = Field(
        8192, ge=1, description="Most watch-events messages the worker takes in one batch (fewer when fewer are waiting)."
    )
    batch_min: int = Field(
        1024, ge=1, description="Most messages in a batch while the worker is caught up (its lag at most this); behind, "
        "batches grow with the lag up to batch_size. Caught up, a flush also writes its rows in 256 KB requests instead of "
        "1 MB, so no batch or encode holds the loop long (streams/kafka/batch_sizing.py)."
    )
    batch_timeout_s: float = Field(0.05, gt=0, description="Longest the worker waits to fill a batch, in seconds.")
    fetch_max_wait_ms: int = Field(
        5, ge=1, le=1500, description="Longest the broker may hold the worker's fetch when no data is there (ms). 5: on "
        "the embedded broker sent -> record written p50 6-7 ms against 7-8 at 10 and p99 at 600 events/s 43 / 60 ms against "
        "53 / 87 (two A/B pairs); 2 was no faster and cost the broker more CPU. On Kafka it only sets how often an idle "
        "worker asks."
    )
    commit_interval_s: float = Field(
        1.0, gt=0, description="Seconds between the worker's flushes: cached user rows to the changelog, then the watch-events "
        "offsets behind them committed. Longer: fewer row writes, more events replayed after a crash."
    )
    flush_spread: float = Field(
        0.6, ge=0, lt=1, description="Share of the commit interval over which a timed flush spreads its rows (in ~1 MB "
        "requests), so a broker on shared cores ingests a stream, not a burst; 0 = all at once. A flush the worker waits for "
        "(backpressure, rebalance, shutdown) never pauses."
    )
    gc_tuning: bool = Field(
        True, description="After its first output the worker exempts the objects of its startup from Python's cyclic garbage "
        "collector (gc.freeze) and raises its young threshold to 50,000: full passes over them paused the worker 80-115 ms, "
        "and young passes over batches in flight took ~4% of it (streams/ops/gc_tuning.py)."
    )
    web_port: int = Field(6066, ge=0, description="Port of the worker's web server (/metrics); 0 = no web server.")
    web_bind: str = Field(
        "127.0.0.1", description="Address the worker's web server and the indexer's metrics endpoint listen on; 0.0.0.0 in "
                                "containers so probes and Prometheus reach them (a NetworkPolicy then limits who may)."
    )
    metrics_port: int = Field(0, ge=0, description="Port of the indexer's Prometheus endpoint; 0 = none.")
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")

    # --- scaling and failure handling (docs/scaling.md) ---------------------
    session_timeout_s: float = Field(
        6.0, gt=0, description="Consumer-group session timeout: a worker silent this long loses its partitions to the others."
    )
    heartbeat_interval_s: float = Field(1.0, gt=0, description="Seconds between a worker's group heartbeats (well under the session timeout).")
    rebalance_timeout_s: float = Field(
        6.0, gt=0, description="Longest a rebalance waits for every worker to rejoin the group, in seconds."
    )
    standby_replicas: int = Field(
        0, ge=0, description="Extra workers that keep a warm copy of each user-state partition (shorter recovery after a failover)."
    )
    watchdog_s: float = Field(
        60.0, ge=0, description="A worker with input lag that applies and commits nothing for this many seconds is stalled; 0 = off."
    )
    watchdog_action: str = Field(
        "exit", pattern="^(exit|log)$", description="What a stalled worker does: exit (non-zero, so the orchestrator restarts it) or log."
    )
    shutdown_grace_s: float = Field(
        5.0, ge=0, description="Seconds a stopped worker waits for Faust's threads after its shutdown before it exits anyway, "
        "naming them in the log (a consumer thread can outlive a shutdown that lands mid-rebalance; streams/ops/shutdown.py)."
    )

    # --- indexer ---------------------------------------------------------
    index_dim: int = Field(0, ge=0, description="Width of the item vectors the index holds; records of another width "
                           "are refused. 0 = the `dim` of the namespace's bundle in --model-dir (the bundle named after "
                           "the namespace, else the newest), never the first record read.")
    index_shards: int = Field(4, ge=1, description="Shards per index version (item -> shard by a stable hash of its id).")
    index_interval_s: float = Field(5.0, gt=0, description="Seconds between index builds (only when items changed).")
    index_grace_s: float = Field(300.0, ge=0, description="Seconds an old index version stays on disk after it stops being current.")
    index_recall_floor: float = Field(0.95, ge=0, le=1, description="A version whose measured recall@10 is below this is not published.")
    index_exact_max: int = Field(200_000, ge=1, description="Shards up to this many items use an exact (flat) index; larger ones IVF.")
    index_nlist: int = Field(0, ge=0, description="IVF lists per large shard; 0 = about 2·sqrt(items in the shard).")
    index_nprobe: int = Field(0, ge=0, description="IVF lists searched per query; 0 = smallest that reaches the recall floor at build time.")
    index_kind: str = Field("ivf-flat", pattern="^(ivf-flat|ivf-pq|ivf-pq8|opq-pq|ivf-sq8)$", description=(
        "Index of large shards: ivf-flat (vectors in every reader's RAM), or compressed codes re-ranked exactly against "
        "a memory-mapped vectors file: ivf-pq (16 B/item at D=64, docs/measurements.md), ivf-pq8, opq-pq, ivf-sq8."))
    index_short_list: int = Field(0, ge=0, description="Compressed kinds: candidates per wanted item re-ranked exactly; 0 = smallest that reaches the recall floor at build time.")
    index_backend: Literal["faiss", "milvus"] = Field(
        "faiss", description="Where index versions live: faiss (files in the index dir, loaded into every reader) or "
        "milvus (one collection per version behind a per-namespace alias, searched on a Milvus cluster; "
        "docs/production.md#choosing-the-index-backend).")
    milvus_uri: str = Field("", description="Milvus endpoint when --index-backend milvus, e.g. "
                            "http://milvus.dreamstream.svc:19530 (https:// for TLS).")
    milvus_token_file: Path | None = Field(None, description="File holding the Milvus credentials, user:password or an "
                                           "API key, e.g. a mounted Secret (unset: no authentication).")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        from dreamstream.index.layout import check_namespace

        return check_namespace(value)

    @field_validator("start_from")
    @classmethod
    def _start_from(cls, value: str) -> str:
        if value:
            parse_time_ms(value)
        return value

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if "://" not in value:
            value = "kafka://" + value
        parsed = urlparse(value)
        if parsed.scheme != "kafka" or not parsed.netloc:
            raise ValueError(f"broker must look like kafka://host:port, got {value!r}")
        return value

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL as kafka-python / aiokafka want it: 'host:port,host:port'."""
        return ",".join(part.split("://", 1)[-1] for part in self.broker.split(","))

    @property
    def dev_broker(self) -> bool:
        """Is the broker the embedded development broker (tansu), whose quirks the worker repairs?"""
        if self.broker_kind != "auto":
            return self.broker_kind == "tansu"
        hosts = [address.rsplit(":", 1)[0].strip("[]") for address in self.bootstrap_servers.split(",")]
        return all(host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.") for host in hosts)

    @property
    def engagement(self) -> "Engagement":
        """The engagement-weight function these settings describe."""
        from dreamstream.engagement import Engagement

        return Engagement(self.skip_ratio, self.skip_weight, self.replay_cap, self.impression_weight)

    def topic(self, name: str) -> str:
        """The full name of one of the design's topics: the prefix, and a model namespace's suffix on its own outputs.

        Inputs (watch-events, item-features) are shared by every namespace;
        what depends on the item space (user embeddings, item vectors, dead
        letters, index versions) is per namespace (``docs/production.md``,
        "Rolling out a new model").
        """
        if self.namespace and name in PER_NAMESPACE_TOPICS:
            return f"{self.topic_prefix}{name}.{self.namespace}"
        return f"{self.topic_prefix}{name}"

    @property
    def app_id(self) -> str:
        """The worker's Faust app id: its consumer groups and changelog topic names derive from it."""
        return f"{self.topic_prefix}dreamstream" + (f".{self.namespace}" if self.namespace else "")

    @property
    def namespace_index_dir(self) -> Path:
        """Where this namespace's index versions live: the index dir itself for the default namespace."""
        from dreamstream.serving import namespace_dir

        return namespace_dir(self.index_dir, self.namespace)

    def in_namespace(self, namespace: str) -> "Settings":
        """The same settings for another namespace (a rollout's new version, or the one it replaces).

        ``model_copy`` skips validation, so the name is checked here (:func:`dreamstream.index.layout.check_namespace`).
        """
        from dreamstream.index.layout import check_namespace

        return self.model_copy(update={"namespace": check_namespace(namespace)})

    @property
    def start_from_ms(self) -> int | None:
        """``start_from`` as epoch milliseconds (None: the earliest retained record)."""
        return parse_time_ms(self.start_from) if self.start_from else None


# The design's topics whose records depend on the item space: one per model namespace (Settings.topic).
PER_NAMESPACE_TOPICS = ("user-embeddings", "item-vectors", "watch-events-dlq", "index-versions")


def parse_time_ms(text: str) -> int:
    """An ISO time (``2026-11-01T00:00Z``, offsets allowed; no zone = UTC) or epoch milliseconds -> epoch ms."""
    from datetime import datetime, timezone

    text = str(text).strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time like 2026-11-01T00:00Z nor epoch milliseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)

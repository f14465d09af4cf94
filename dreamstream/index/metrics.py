"""Prometheus metrics of the indexer, in their own registry so tests can build several indexers."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class IndexMetrics:
    """Build time, item count, versions published / refused, recall of the last build."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.build_seconds = Histogram(
            "dreamstream_index_build_seconds", "Time to build one index version.",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300), registry=self.registry,
        )
        self.items = Gauge("dreamstream_index_items", "Items in the current index version.", registry=self.registry)
        self.versions = Counter("dreamstream_index_versions", "Index versions published.", registry=self.registry)
        self.refused = Counter("dreamstream_index_refused", "Index versions built but not published (recall under the floor).", registry=self.registry)
        self.recall = Gauge("dreamstream_index_recall_at_10", "Recall@10 against exact search measured on the last build.", registry=self.registry)
        self.records = Counter("dreamstream_index_records", "item-vectors records applied, by kind.", ["kind"], registry=self.registry)

    def serve(self, port: int) -> None:
        """Expose /metrics on ``port`` (no-op when 0)."""
        if port:
            start_http_server(port, registry=self.registry)

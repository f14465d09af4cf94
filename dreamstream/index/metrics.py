"""Prometheus metrics of the indexer, in their own registry so tests can build several indexers."""
from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


def serve_registry(registry: CollectorRegistry, port: int, bind: str) -> WSGIServer | None:
    """Expose ``registry`` at /metrics on ``bind``:``port``; None when ``port`` is 0.

    Returns the server (``.server_address``; ``.shutdown()`` stops it). The
    address is always given: prometheus_client's own default would be
    0.0.0.0, every interface whatever the settings say.
    """
    if not port:
        return None
    server, _thread = start_http_server(port, addr=bind, registry=registry)
    return server


class IndexMetrics:
    """Build time, item count, versions published / refused, recall of the last build."""

    def __init__(self, bind: str = "127.0.0.1") -> None:
        self.bind = bind  # address serve() listens on (the indexer passes settings.web_bind)
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

    def serve(self, port: int, bind: str | None = None) -> WSGIServer | None:
        """Expose /metrics on ``bind``:``port`` (``bind`` defaults to :attr:`bind`); no-op when ``port`` is 0."""
        return serve_registry(self.registry, port, bind or self.bind)

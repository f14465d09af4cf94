"""What the worker's and the indexer's HTTP servers expose: /metrics, and not Faust's table or router pages.

No broker: the worker's app is built (as ``faust worker`` would) but never
started; its web application is set up and served in-process.
"""
from __future__ import annotations

import asyncio
import shutil
import types
import urllib.request
from pathlib import Path

import faust
import pytest

from dreamstream.broker import free_port
from dreamstream.index.metrics import IndexMetrics
from dreamstream.settings import Settings

OFF = ("/router", "/table", "/graph", "/performance", "/assignment")


def routes(app: faust.App) -> set[str]:
    """The paths the app's web server would serve (its blueprints mounted, as at server start)."""
    app.web.init_server()
    return {resource.canonical for resource in app.web.web_app.router.resources()}


@pytest.fixture
def worker_app(tmp_path: Path, bundle_dir: Path) -> faust.App:
    """The worker's app with its web server on, built without a broker (nothing connects before start)."""
    from streams.app import create_app

    s = Settings(broker="kafka://127.0.0.1:9", broker_kind="kafka", topic_prefix="web.", model_dir=tmp_path / "models",
                 index_dir=tmp_path / "index", data_dir=tmp_path / "data", state_dir=tmp_path / "state",
                 web_port=free_port(), web_bind="127.0.0.1", watchdog_s=0)
    shutil.copytree(bundle_dir, s.model_dir / bundle_dir.name)
    return create_app(s)


def test_the_worker_serves_metrics_and_no_table_or_router_page(worker_app: faust.App) -> None:
    assert worker_app.conf.web_enabled
    conf = worker_app.conf
    assert not (conf.web_router_enabled or conf.web_tables_enabled or conf.web_stats_enabled or conf.web_graph_enabled
                or conf.web_metrics_enabled)
    served = routes(worker_app)
    assert "/metrics" in served
    assert not [path for path in served if path.startswith(OFF)], sorted(served)
    assert served <= {"/metrics", "/"}, sorted(served)  # "/" is Faust's production index: {"status": "OK"}


def test_over_http_metrics_answers_and_table_rows_and_router_are_not_found(worker_app: faust.App) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    routes(worker_app)

    async def fetch() -> dict[str, tuple[int, str]]:
        async with TestClient(TestServer(worker_app.web.web_app)) as client:
            out = {}
            for path in ("/metrics", "/table/", "/table/user-state/u1/", "/router/", "/router/topics",
                         "/graph/", "/performance/"):
                response = await client.get(path)
                out[path] = (response.status, await response.text())
            return out

    answers = asyncio.run(fetch())
    status, body = answers.pop("/metrics")
    assert status == 200 and "dreamstream_" in body
    assert {path: status for path, (status, _) in answers.items()} == dict.fromkeys(answers, 404)


def test_lock_down_drops_the_pages_even_where_faust_ignores_the_settings() -> None:
    """A Faust before 0.15 ignores web_router_enabled & co: lock_down() must take the pages out by itself."""
    from streams.compat.faust_web import lock_down

    app = faust.App(f"web-{free_port()}", web_enabled=True)  # Faust's defaults: /router and /table on
    assert {p for p, _ in app.web.blueprints._enabled} >= {"/router", "/table"}
    assert set(lock_down(app)) >= {"/router", "/table"}
    served = routes(app)
    assert not [path for path in served if path.startswith(OFF)], sorted(served)
    with pytest.raises(RuntimeError, match="before it starts"):
        lock_down(app)  # too late once the blueprints are mounted: say so rather than pretend


def test_the_index_metrics_server_listens_on_the_address_it_is_given() -> None:
    metrics = IndexMetrics(bind="127.0.0.1")
    assert metrics.serve(0) is None  # port 0: no server
    port = free_port()
    server = metrics.serve(port)
    try:
        assert server.socket.getsockname() == ("127.0.0.1", port)  # not 0.0.0.0, prometheus_client's default
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "dreamstream_index_versions_total" in body
    finally:
        server.shutdown()
        server.server_close()


def test_the_index_metrics_default_to_loopback_and_the_indexer_passes_web_bind(monkeypatch, tmp_path: Path) -> None:
    from dreamstream.index import service

    assert IndexMetrics().bind == "127.0.0.1"
    follower = types.SimpleNamespace(consumer=types.SimpleNamespace(end_offsets=lambda tps: {}), partitions=[])
    monkeypatch.setattr(service, "ItemFollower", lambda settings, store: follower)  # no broker
    for bind in ("127.0.0.1", "0.0.0.0"):
        indexer = service.Indexer(Settings(index_dir=tmp_path / "index", state_dir=tmp_path / "state", web_bind=bind,
                                           index_dim=8))
        assert indexer.metrics.bind == bind

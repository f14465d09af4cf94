"""Keep Faust's own pages off the worker's web server: it serves ``/metrics`` (streams.agents) and ``/``.

Next to the pages an app adds, Faust's web server serves built-in blueprints:
``/router/...`` (which worker owns which key: the cluster's layout and every
worker's URL) and ``/table/<name>/<key>/`` (any row of any table over HTTP:
here, every user's state), plus, in debug mode, ``/graph`` and sensor
statistics, and optionally ``/performance``. The worker needs none of them
(it routes no request to a table key: no ``app.table_route``).

faust-streaming 0.15 has a setting per blueprint (``web_router_enabled``,
``web_tables_enabled``, ...): :data:`WEB_SETTINGS` switches them all off and
``streams.app.app_config`` passes it. Older releases, which the pin in
``pyproject.toml`` still allows, accept an unknown setting silently and serve
the pages anyway, so :func:`lock_down` also takes those blueprints out of the
web server's list before the server starts. That list
(``BlueprintManager._enabled``) is private: hence this module.
"""
from __future__ import annotations

from typing import Any

from streams.compat import shim

SHIM = shim(__name__, "faust-streaming", ("0.11", "0.16"),
            "the pin requires faust-streaming>=0.15, whose web_*_enabled settings (WEB_SETTINGS) are then enough")

#: Faust settings (0.15+): every built-in page but the production index at ``/`` off.
WEB_SETTINGS: dict[str, bool] = dict(
    web_router_enabled=False,   # /router/...: key -> worker URL, the cluster's layout
    web_tables_enabled=False,   # /table/<name>/<key>/: rows of the user table
    web_stats_enabled=False,    # / sensor statistics and /assignment/ (default: follows `debug`)
    web_graph_enabled=False,    # /graph: the service tree (default: follows `debug`)
    web_metrics_enabled=False,  # /performance/: Faust's monitor as JSON (our Prometheus page is /metrics)
)

#: The blueprints :data:`WEB_SETTINGS` switches off, as Faust names them, and where it mounts them.
OFF_BLUEPRINTS = frozenset({
    "faust.web.apps.router:blueprint",
    "faust.web.apps.tables.blueprint",
    "faust.web.apps.tables:blueprint",
    "faust.web.apps.graph:blueprint",
    "faust.web.apps.stats:blueprint",
    "faust.web.apps.metrics:blueprint",
})
OFF_PREFIXES = ("/router", "/table", "/graph", "/performance")


def lock_down(app: Any) -> list[str]:
    """Drop Faust's router, table, graph, statistics and performance blueprints from ``app``'s web server.

    Call before the web server starts (``streams.app.create_app`` does, right
    after building the app). Returns the prefixes of the blueprints it dropped
    (none on faust-streaming 0.15+, whose settings already left them out).
    """
    manager = app.web.blueprints
    if manager.applied:
        raise RuntimeError("Faust's web server already mounted its blueprints; lock_down() must run before it starts")
    kept, dropped = [], []
    for prefix, blueprint in manager._enabled:
        off = (isinstance(blueprint, str) and blueprint in OFF_BLUEPRINTS) or prefix.startswith(OFF_PREFIXES)
        (dropped if off else kept).append((prefix, blueprint))
    manager._enabled[:] = kept
    return [prefix for prefix, _ in dropped]

"""The demo's closing lines: a table a person can read at a glance."""
from __future__ import annotations

import numpy as np

from dreamstream.data.metrics import KS


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """Recall/HitRate/NDCG at every K, one row per model."""
    cols = [f"{m}@{k}" for k in KS for m in ("recall", "hitrate")] + [f"ndcg@{max(KS)}"]
    width = max(len(name) for name in metrics) + 2
    lines = [" " * width + "  ".join(f"{c:>10s}" for c in cols)]
    for name, values in metrics.items():
        lines.append(f"{name:<{width}}" + "  ".join(f"{values.get(c, float('nan')):10.4f}" for c in cols))
    return "\n".join(lines)


def speed_lines(events: int, seconds: float, latencies_ms: np.ndarray, live_rate: float) -> list[str]:
    """Throughput of the backfill and freshness of the live events."""
    lines = [f"throughput: {events:,} events applied in {seconds:.1f} s = {events / max(seconds, 1e-9):,.0f} events/s "
             "(produce -> worker -> published embedding, one 2-core box)"]
    if latencies_ms.size:
        p50, p99 = np.percentile(latencies_ms, [50, 99])
        lines.append(f"latency at {live_rate:.0f} events/s: event sent -> embedding published p50 {p50:.0f} ms, "
                     f"p99 {p99:.0f} ms ({latencies_ms.size} live events)")
    return lines

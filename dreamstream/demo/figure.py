"""The demo's picture: where streamed embeddings win (by history length) and how fresh they are."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dreamstream.demo.scoring import Scores  # noqa: E402


def draw(scores: Scores, latencies_ms: np.ndarray, out: Path) -> Path:
    """HitRate@20 by history length (streamed vs popularity) and the live-event latency histogram."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    _hit_rate_by_history(left, scores)
    _latency_histogram(right, latencies_ms)
    fig.suptitle("dreamstream demo: streamed user embeddings")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _hit_rate_by_history(ax: plt.Axes, scores: Scores) -> None:
    edges = np.unique(np.quantile(scores.history_len, np.linspace(0, 1, 6)).astype(int))
    bucket = np.clip(np.searchsorted(edges, scores.history_len, side="right") - 1, 0, len(edges) - 2)
    labels = [f"{edges[b]}–{edges[b + 1]}" for b in range(len(edges) - 1)]
    width = 0.8 / len(scores.hits)
    for n, (name, hits) in enumerate(scores.hits.items()):
        rates = [hits[bucket == b].mean() if (bucket == b).any() else 0.0 for b in range(len(labels))]
        ax.bar(np.arange(len(labels)) + n * width, rates, width, label=name)
    ax.set_xticks(np.arange(len(labels)) + width * (len(scores.hits) - 1) / 2, labels)
    ax.set_xlabel("events streamed for the user")
    ax.set_ylabel("HitRate@20 on the held-out video")
    ax.set_title("retrieval by history length")
    ax.legend()


def _latency_histogram(ax: plt.Axes, latencies_ms: np.ndarray) -> None:
    if latencies_ms.size:
        ax.hist(latencies_ms, bins=40, color="tab:green")
        for q, style in ((50, "--"), (99, ":")):
            value = float(np.percentile(latencies_ms, q))
            ax.axvline(value, color="black", linestyle=style, label=f"p{q} {value:.0f} ms")
        ax.legend()
    ax.set_xlabel("event sent → embedding published (ms)")
    ax.set_ylabel("live events")
    ax.set_title("freshness of live updates")

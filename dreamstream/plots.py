"""PNG plots for `evaluate`: training curves and a 2-D map of the item space by OPAL hyper-category.

matplotlib with the Agg backend (files only, no display needed). numpy only
otherwise: the PCA is an SVD.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path,
                    metric: str = "recall@20") -> Path:
    """Loss and validation ``metric`` per epoch of every model in ``history.json``, side by side."""
    plt = _pyplot()
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in history.items():
        rows = [r for r in rows if isinstance(r, Mapping)]
        if not rows:
            continue
        epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
        if all("loss" in r for r in rows):
            ax_loss.plot(epochs, [r["loss"] for r in rows], marker="o", label=name)
        if all(metric in r for r in rows):
            ax_metric.plot(epochs, [r[metric] for r in rows], marker="o", label=name)
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_metric.set(title=f"validation {metric}", xlabel="epoch", ylabel=metric)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(fig, plt, path)


def pca_basis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], first two principal axes [2, D]) of the rows of ``x``; project with ``(y - mean) @ axes.T``."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:2]


def item_map(items: np.ndarray, labels: np.ndarray, path: str | Path, centres: np.ndarray | None = None,
             title: str = "DREAM item space (PCA), coloured by OPAL hyper-category") -> Path:
    """Scatter of the items' first two principal components, one colour per label; centres as stars."""
    plt = _pyplot()
    items = np.asarray(items, dtype=np.float64)
    mean, axes = pca_basis(items)
    xy = (items - mean) @ axes.T
    fig, ax = plt.subplots(figsize=(6.5, 6))
    cmap = plt.get_cmap("tab10")
    for k in np.unique(labels):
        sel = labels == k
        ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.5, color=cmap(int(k) % 10), label=f"interest {k} ({sel.sum()})")
    if centres is not None:
        c = (np.asarray(centres, dtype=np.float64) - mean) @ axes.T
        scale = np.abs(xy).max() / max(np.abs(c).max(), 1e-9)  # hyper-categories are unit: stretch to the cloud
        for k, (x, y) in enumerate(c * scale):
            ax.scatter([x], [y], marker="*", s=250, color=cmap(k % 10), edgecolor="black")
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    ax.legend(markerscale=3, fontsize=8)
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def protocol_bars(name: str, block: Mapping, path: str | Path) -> Path:
    """One protocol's rows as horizontal bars: HitRate@20 (mean, std over seeds), overall and by prior events."""
    plt = _pyplot()
    rows = list(block["rows"])
    buckets = ["overall"] + list(next(iter(block["rows"].values()))["by_prior_events"])
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.5))
    height = 0.8 / len(buckets)
    for b, bucket in enumerate(buckets):
        cells = [block["rows"][r]["overall"] if bucket == "overall" else block["rows"][r]["by_prior_events"][bucket]
                 for r in rows]
        means = [c.get("hitrate@20", {}).get("mean", np.nan) for c in cells]
        stds = [c.get("hitrate@20", {}).get("std", 0.0) for c in cells]
        label = bucket if bucket == "overall" else f"{bucket} prior events"
        ax.barh(np.arange(len(rows)) + b * height, means, height, xerr=stds, capsize=2, label=label)
    ax.set_yticks(np.arange(len(rows)) + 0.4 - height / 2, rows, fontsize=8)
    ax.invert_yaxis()
    ax.set(title=f"{name}: HitRate@20 (mean ± std over seeds)", xlabel="HitRate@20")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scale_curves(points: Sequence[Mapping], path: str | Path) -> Path:
    """`bench-scale`'s cost against size: resident memory, start-up, throughput and p99 (extrapolated hollow).

    Memory in MB, not bytes per video: a fixed cost divided by a small
    catalogue looks like a large per-video cost, a flat line does not lie.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [
        (axes[0, 0], "videos", [("worker_items_mb", "worker, catalogue loaded"), ("worker_users_mb", "worker, + every user"),
                                ("broker_mb_end", "embedded broker")],
         "MB resident", "memory (a flat line: a cost that does not grow)"),
        (axes[0, 1], "videos", [("cold_start_s", "cold"), ("warm_start_s", "warm")], "seconds", "start -> serving"),
        (axes[1, 0], "videos", [("events_per_s", "sustained events/s")], "events/s", "throughput (Zipf videos)"),
        (axes[1, 1], "videos", [("p99_ms", "p99"), ("p50_ms", "p50")], "ms", "event -> record at half the sustained rate"),
    ]
    for ax, x_key, series, ylabel, title in panels:
        for key, label in series:
            for extrapolated, marker in ((False, "o"), (True, "o")):
                rows = [p for p in points if bool(p.get("extrapolated")) == extrapolated and p.get(key) is not None]
                if rows:
                    ax.plot([p[x_key] for p in rows], [p[key] for p in rows], marker=marker,
                            fillstyle="none" if extrapolated else "full", linestyle=":" if extrapolated else "-",
                            label=f"{label}{' (extrapolated)' if extrapolated else ''}")
        ax.set_xscale("log")
        ax.set(title=title, xlabel="videos in the catalogue (users grow with it, see the table)", ylabel=ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, plt, path)

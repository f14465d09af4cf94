"""The PNG of ``dreamstream bench-index --history``: recall against client memory, and latency and memory against size.

Left: served recall@20 (after exact re-ranking and the blend; dots) and
search recall@20 (triangles) against the client's accounted bytes per item, one point per run, labelled with its
kind and size: the curve that chose the compressed kind. Middle: search
p50 / p99 (user vector + 4 interests, one Faiss thread) against catalogue size:
CPU time of the searching thread (the latency on a core of its own) and,
faint, wall time on the shared machine.
Right: client bytes per item (accounted, and anonymous resident in a fresh
process) against size, with the 80 B budget of issue 26.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from dreamstream.plots import _pyplot, _save

BUDGET_BYTES = 80  # per item at D=64 (issue 26)


def index_curve(runs: Sequence[Mapping], path: str | Path) -> Path:
    """Draw every bench-index run (the dicts it prints) into one PNG."""
    plt = _pyplot()
    fig, (ax_recall, ax_latency, ax_memory) = plt.subplots(1, 3, figsize=(15, 4.4))
    kinds = sorted({_series(r) for r in runs})  # a kind on one catalogue shape (--noise) is one series
    colours = {kind: f"C{n}" for n, kind in enumerate(kinds)}
    for run in runs:
        kind = _series(run)
        if "accounted_bytes_per_item" in run and "served_recall_at_20" in run:
            ax_recall.scatter(run["accounted_bytes_per_item"], run["served_recall_at_20"], color=colours[kind])
            if "recall_at_20_end_to_end" in run:  # search recall@20 (held-out queries near items), hollow
                ax_recall.scatter(run["accounted_bytes_per_item"], run["recall_at_20_end_to_end"], facecolors="none",
                                  edgecolors=colours[kind], marker="^")
            ax_recall.annotate(f"{kind} {run['items'] / 1e6:g}M", (run["accounted_bytes_per_item"], run["served_recall_at_20"]),
                               fontsize=7, xytext=(3, 3), textcoords="offset points")
    for kind in kinds:
        mine = sorted((r for r in runs if _series(r) == kind and "search_ms_p99_threads1" in r),
                      key=lambda r: r["items"])
        if not mine:
            continue
        sizes = [r["items"] / 1e6 for r in mine]
        timed = [r for r in mine if "search_cpu_ms_p99_threads1" in r]
        if timed:  # CPU time of the searching thread: the latency on a core of its own (the box is shared)
            at = [r["items"] / 1e6 for r in timed]
            ax_latency.plot(at, [r["search_cpu_ms_p99_threads1"] for r in timed], marker="o", color=colours[kind], label=f"{kind} p99 CPU")
            ax_latency.plot(at, [r["search_cpu_ms_p50_threads1"] for r in timed], marker=".", ls="--", color=colours[kind], label=f"{kind} p50 CPU")
        ax_latency.plot(sizes, [r["search_ms_p99_threads1"] for r in mine], marker="x", ls=":", alpha=0.5, color=colours[kind], label=f"{kind} p99 wall")
        ax_memory.plot(sizes, [r.get("accounted_bytes_per_item") for r in mine], marker="o", color=colours[kind], label=f"{kind} accounted")
        ax_memory.plot(sizes, [r.get("anon_bytes_per_item") for r in mine], marker=".", ls="--", color=colours[kind], label=f"{kind} anon RSS")
    ax_recall.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax_recall.axvline(BUDGET_BYTES, color="grey", lw=0.8, ls=":")
    ax_recall.set(title="recall@20 vs client memory (dot: served blend, triangle: search)", xlabel="client bytes per item (accounted)",
                  ylabel="recall@20 vs exact")
    ax_latency.axhline(20, color="grey", lw=0.8, ls=":")
    ax_latency.set(title="search latency, user + 4 interests, 1 thread", xlabel="items (millions)", ylabel="ms", xscale="log", yscale="log")
    ax_memory.axhline(BUDGET_BYTES, color="grey", lw=0.8, ls=":")
    ax_memory.set(title="client memory per item", xlabel="items (millions)", ylabel="bytes per item", xscale="log")
    for ax in (ax_recall, ax_latency, ax_memory):
        ax.grid(alpha=0.3)
    for ax in (ax_latency, ax_memory):
        ax.legend(fontsize=7)
    return _save(fig, plt, path)


def _series(run: Mapping) -> str:
    return f"{run.get('index_kind', 'ivf-flat')} noise {run.get('noise', '?')}"

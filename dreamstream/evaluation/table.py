"""The evaluation report as text: one table per protocol, every row with its spread over seeds.

The last column is each row's HitRate@20 difference against the served row
with its 95% paired bootstrap interval over users
(:mod:`dreamstream.evaluation.bootstrap`); ``*`` marks an interval that
excludes zero (the only differences the docs call better or worse).
"""
from __future__ import annotations

from dreamstream.evaluation.prequential import BUCKETS

COLUMNS = ("hitrate@10", "hitrate@20", "ndcg@20", "hitrate@50")


def _cell(stat: dict | None) -> str:
    if not stat:
        return f"{'-':>15}"
    if stat.get("std", 0.0) == 0.0:
        return f"{stat['mean']:>15.4f}"
    return f"{stat['mean']:>8.4f}±{stat['std']:.4f}"


def delta_cell(block: dict, row: str) -> str:
    """``+0.0123 [+0.0050, +0.0190]*``: the row's HitRate@20 minus the served row's, and its interval."""
    d = block.get("vs_served", {}).get(row)
    if d is None:
        return "(served)" if block.get("vs_served") and row not in block["vs_served"] else "–"
    return f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]" + ("*" if d["significant"] else "")


def format_protocol(name: str, block: dict) -> str:
    """One protocol's rows: overall metrics, HitRate@20 by prior events, seeds and seconds."""
    d = block["describe"]
    head = f"{name}: " + ", ".join(f"{k} {v}" for k, v in d.items() if k != "protocol")
    width = max(len(r) for r in block["rows"]) + 1
    cols = list(COLUMNS) + [f"hr@20 [{b}]" for b in BUCKETS]
    lines = [head, f"{'model':<{width}}" + "".join(f"{c:>16}" for c in cols) + f"{'seeds':>7}{'seconds':>9}"
             + "  Δhr@20 vs served [95% CI over users]"]
    for row, stats in block["rows"].items():
        overall, buckets = stats["overall"], stats["by_prior_events"]
        cells = [_cell(overall.get(c)) for c in COLUMNS]
        cells += [_cell(buckets[b].get("hitrate@20")) if buckets[b]["events"] else f"{'-':>15}" for b in BUCKETS]
        lines.append(f"{row:<{width}}" + "".join(f" {c}" for c in cells)
                     + f"{overall['seeds']:>7}{block['seconds'].get(row, 0.0):>9.0f}  {delta_cell(block, row)}")
    for band, d in block.get("opal_by_spread", {}).items():
        lines.append(f"OPAL's gain (served - dream), {band} histories (spread {d['spread'][0]:.2f}-{d['spread'][1]:.2f}, "
                     f"{d['events']} events): {d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"
                     + ("*" if d["significant"] else ""))
    events = {b: block["rows"][next(iter(block["rows"]))]["by_prior_events"][b]["events"] for b in BUCKETS}
    lines.append("events by prior events: " + ", ".join(f"{b}: {n}" for b, n in events.items()))
    return "\n".join(lines)


def format_report(report: dict) -> str:
    parts = [format_protocol(name, block) for name, block in report["protocols"].items()]
    if "final" in report:
        f = report["final"]
        parts.append(f"FINAL: test window scored at commit {f['commit']}" + (" (uncommitted changes)" if f["dirty"] else "")
                     + f", {f['scored_at']}")
    parts.append(f"wall time {report['seconds']:.0f} s; seeds {report['seeds']}; data {report['data']['name']} "
                 f"({report['data']['events']} events, {report['data']['users']} users, {report['data']['items']} items)")
    return "\n\n".join(parts)


def format_markdown(report: dict, protocol: str, columns: tuple[str, ...] = ("hitrate@20", "ndcg@20", "hitrate@50")
                    ) -> str:
    """One protocol as a Markdown table (for docs and issue notes): mean ± std, HitRate@20 by prior events."""
    block = report["protocols"][protocol]
    head = ["model"] + list(columns) + [f"HR@20, {b} prior" for b in BUCKETS] + ["seeds", "ΔHR@20 vs served [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(stat: dict | None) -> str:
        if not stat:
            return "–"
        return f"{stat['mean']:.4f}" + (f" ± {stat['std']:.4f}" if stat.get("std") else "")

    for row, stats in block["rows"].items():
        buckets = stats["by_prior_events"]
        cells = [cell(stats["overall"].get(c)) for c in columns]
        cells += [cell(buckets[b].get("hitrate@20")) if buckets[b]["events"] else "–" for b in BUCKETS]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {stats['overall']['seeds']} | {delta_cell(block, row)} |")
    return "\n".join(lines)

"""`dreamstream bench-scale`: the worker's memory, start-up, throughput and latency against catalogue and user-base size."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from dreamstream.cli_options import settings_options
from dreamstream.settings import Settings


def _sizes(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[tuple[int, int]]:
    """``VIDEOS:USERS`` pairs (``1M``, ``300k`` allowed)."""
    def number(text: str) -> int:
        text = text.strip().lower().replace("_", "").replace(",", "")
        scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
        return int(float(text[:-1] if scale > 1 else text) * scale)
    out = []
    for value in values:
        try:
            videos, users = value.split(":")
            out.append((number(videos), number(users)))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not VIDEOS:USERS (e.g. 1M:100k)") from None
    return out


@click.command("bench-scale")
@settings_options("broker", "model_dir", "partitions", "batch_size", "store", "item_store", "item_cache_mb", "item_dtype",
                  "log_level")
@click.option("--size", "sizes", multiple=True, default=("20k:5k", "100k:20k"), show_default=True, callback=_sizes,
              envvar="DREAMSTREAM_SCALE_SIZES",
              help="A point to measure, VIDEOS:USERS (repeatable; the issue's curve: 1M:100k 3M:300k 10M:1M).")
@click.option("--zipf", "exponent", type=float, default=1.0, show_default=True, envvar="DREAMSTREAM_SCALE_ZIPF",
              help="Exponent of the videos' Zipf popularity (micro-video traffic: about 1).")
@click.option("--latency-seconds", type=float, default=10.0, show_default=True, envvar="DREAMSTREAM_SCALE_LATENCY_SECONDS",
              help="Seconds of paced load for p50/p99 event -> record at each point (0: skip).")
@click.option("--paced-fraction", type=float, default=0.5, show_default=True, envvar="DREAMSTREAM_SCALE_PACED_FRACTION",
              help="The paced load's rate as a fraction of the point's sustained events/s.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("var/bench-scale"), show_default=True,
              envvar="DREAMSTREAM_SCALE_OUT", help="Folder for scale.md, scale.json and scale.png.")
@click.option("--if-memory/--always", "guard", default=True, show_default=True, envvar="DREAMSTREAM_SCALE_IF_MEMORY",
              help="Skip (and extrapolate, labelled) a point whose estimated memory does not fit in MemAvailable.")
def bench_scale(settings: Settings, sizes: list[tuple[int, int]], exponent: float, latency_seconds: float,
                paced_fraction: float, out_dir: Path, guard: bool) -> None:
    """Run the real worker at each --size and report cost against size: a markdown table and a PNG plot.

    Per point, on a fresh embedded broker (unless DREAMSTREAM_BROKER /
    --broker is given): worker RSS per video and per user, changelog bytes
    per user, start -> serving cold and warm, sustained events/s with Zipf
    video popularity, and p50/p99 event -> record at --paced-fraction of it
    (dreamstream/bench/scale.py says how each is measured).
    """
    from dreamstream.bench import harness as h
    from dreamstream.bench import scale
    from dreamstream.bench.run_brokers import RunBrokers
    from dreamstream.bundle import latest_version, load_bundle
    from dreamstream.plots import scale_curves

    work = Path(tempfile.mkdtemp(prefix="dreamstream-scale-"))
    settings = h.ensure_bundle(settings, work, click.echo)
    bundle = load_bundle(latest_version(settings.model_dir))
    dim = bundle.manifest.dim
    embedded = "DREAMSTREAM_BROKER" not in os.environ and "--broker" not in sys.argv
    brokers = RunBrokers(settings, work, embedded)
    click.echo(f"bench-scale: sizes {', '.join(f'{v:,}:{u:,}' for v, u in sizes)}; Zipf {exponent}; D={dim}; item store "
               f"{settings.item_store} ({settings.item_dtype}, {settings.item_cache_mb} MiB); "
               f"{settings.partitions} partitions; broker {brokers.url}{' (embedded, fresh per point)' if embedded else ''}; "
               f"work {work}; load {open('/proc/loadavg').read().split()[:3]}")
    points: list[scale.ScalePoint] = []
    try:
        base = scale.baseline_rss(brokers, dim, bundle.version, click.echo)
        click.echo(f"baseline: worker RSS {base:.0f} MB serving a one-video catalogue")
        for videos, users in sizes:
            measured = [p for p in points if not p.extrapolated and p.bytes_per_video is not None]
            ok, why = scale.fits_here(measured, videos, users) if guard else (True, "")
            if not ok:
                click.echo(f"[{videos:,}:{users:,}] not run here: {why}; extrapolated from the largest measured point")
                points.append(scale.extrapolate(measured, videos, users, f"not run: {why}"))
                continue
            points.append(scale.run_point(brokers, videos, users, dim, bundle.version, base, exponent=exponent,
                                          paced_fraction=paced_fraction, latency_seconds=latency_seconds,
                                          progress=click.echo))
            _write(out_dir, points, scale, scale_curves)
    finally:
        brokers.stop()
    paths = _write(out_dir, points, scale, scale_curves)
    click.echo(scale.table(points))
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")


def _write(out_dir: Path, points: list, scale, scale_curves) -> list[Path]:
    """The table, the numbers and the plot so far (written after every point: a long run cut short keeps its points)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = scale.to_json(points)
    (out_dir / "scale.md").write_text(scale.table(points) + "\n")
    (out_dir / "scale.json").write_text(json.dumps(rows, indent=2))
    return [out_dir / "scale.md", out_dir / "scale.json", scale_curves(rows, out_dir / "scale.png")]

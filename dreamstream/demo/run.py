"""`dreamstream demo` end to end: broker, data, training, export, worker, indexer, replay, retrieval, report."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dreamstream.bench.soak import rss_mb
from dreamstream.broker import EmbeddedBroker, free_port
from dreamstream.demo import figure, pipeline, report, scoring, traffic
from dreamstream.demo.pipeline import DemoOptions, Echo, Steps
from dreamstream.topics import create_topics


def run_demo(opts: DemoOptions, echo: Echo) -> int:
    """Run everything, stop everything; returns the exit code (0 = the system did what it should)."""
    from dreamstream.data.datagen import SynthConfig, generate
    from dreamstream.data.recbole import load_dataset
    from dreamstream.data.split import leave_last_out
    from dreamstream.index.items_publisher import latest_bundle, load_bundle_items, publish_vectors

    step = Steps(10, echo)
    pipeline.fresh_workdir(opts.workdir)
    logs = opts.workdir / "logs"
    step(f"embedded broker (tansu), work folder {opts.workdir}")
    broker = EmbeddedBroker(port=free_port(), log_dir=logs).start()
    services: list = []
    try:
        settings = pipeline.demo_settings(opts, broker)
        echo(f"broker at {broker.url}")

        step(f"synthetic micro-video dataset: {opts.users} users, {opts.items} videos")
        generate(settings.data_dir, SynthConfig(n_users=opts.users, n_items=opts.items, seed=opts.seed))
        ds = load_dataset(settings.data_dir)
        split = leave_last_out(ds, engagement=settings.engagement)

        step(f"training LightGCN, DREAM, the item tower and OPAL ({opts.epochs} epochs at most)")
        ckpt = opts.workdir / "checkpoint"
        pipeline.run_cli(settings, "train", "--data", str(settings.data_dir), "--out", str(ckpt),
                         "--epochs", str(opts.epochs), "--seed", str(opts.seed))

        step("exporting the ONNX bundle")
        pipeline.run_cli(settings, "export", "--checkpoint", str(ckpt), "--out", str(settings.model_dir))
        bundle = latest_bundle(settings.model_dir)
        item_ids, items, model = load_bundle_items(bundle)
        items = np.asarray(items)

        step("topics, item vectors, worker and indexer")
        create_topics(settings)
        publish_vectors(settings, item_ids, items, model)
        services = pipeline.start_services(settings, logs)

        plan = traffic.plan(ds, split)
        expected = plan.expected_seq(ds)
        backfill_expected = traffic.Traffic(plan.backfill, plan.live[:0]).expected_seq(ds)
        reader = pipeline.RecordReader(settings, expected, opts.timeout_s)

        step(f"backfill: {len(plan.backfill):,} historical events as fast as they go")
        started = traffic.send_backfill(settings, ds, plan)
        pipeline.check_alive(services)
        finished = reader.wait(backfill_expected, opts.timeout_s, "users up to date", echo)
        backfill_s = finished - started

        step(f"live: {len(plan.live):,} held-out events at {opts.live_rate:.0f} events/s")
        traffic.send_live(settings, ds, plan, opts.live_rate)
        reader.wait(expected, opts.timeout_s, "users up to date", echo)
        reader.join()
        latencies = pipeline.live_latencies(reader.collected, plan.sent_at, expected)

        step("waiting for the index version with every item")
        retriever = _wait_for_index(settings, len(item_ids), opts.timeout_s)

        step("retrieving for every user through dreamstream.client")
        records = {u: r for u, r in reader.collected.latest.items() if not u.startswith("#")}
        scores = scoring.score(retriever, records, ds, split, items, item_ids, settings)
        retriever.close()

        step("stopping the worker and the indexer")
        echo(f"broker: {rss_mb(broker.pid) or 0:,.0f} MB resident (tansu's memory engine holds every record the demo "
             "wrote; the demo's dataset bounds it, docs/scaling.md#development-broker)")
        for proc in services:
            proc.stop()
        services = []
        png = figure.draw(scores, latencies, opts.workdir / "demo.png")
        return _final_report(scores, len(plan.backfill), backfill_s, latencies, opts, png, echo)
    finally:
        for proc in services:
            proc.stop()
        broker.stop()


def _wait_for_index(settings, n_items: int, timeout_s: float):
    """A Retriever on the first index version that holds the whole catalogue."""
    from dreamstream.client import Retriever

    retriever = Retriever(settings.index_dir, wait_s=timeout_s, check_interval_ms=200)
    deadline = time.monotonic() + timeout_s
    while retriever.version.manifest.items < n_items:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the index holds {retriever.version.manifest.items} of {n_items} items after {timeout_s:.0f}s")
        time.sleep(0.2)
    return retriever


def _final_report(scores: scoring.Scores, events: int, seconds: float, latencies: np.ndarray,
                  opts: DemoOptions, png: Path, echo: Echo) -> int:
    agree = scores.offline_cosine
    echo("\n" + "=" * 100)
    echo(f"Retrieval of each user's held-out video ({len(agree)} users, full catalogue, history excluded):")
    echo(report.metrics_table(scores.metrics))
    for line in report.speed_lines(events, seconds, latencies, opts.live_rate):
        echo(line)
    echo(f"streamed DreamUMM vectors vs the offline reference: min cosine {agree.min():.6f} over {len(agree)} users")
    echo(f"plot: {png}")
    echo(f"logs: {opts.workdir / 'logs'}")
    ok = agree.min() > 0.9999 and scores.metrics["streamed (client)"]["recall@50"] > scores.metrics["popularity"]["recall@50"]
    echo("result: OK — streamed embeddings beat popularity and match offline" if ok else
         "result: NOT OK — see the lines above")
    return 0 if ok else 1

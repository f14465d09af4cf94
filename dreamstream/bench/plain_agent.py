"""The baseline of `dreamstream bench`: a plain per-event Faust agent doing the DreamUMM update.

One event at a time: decode, one table read, the DreamUMM ONNX step at
batch 1, one table write, one send. What a first Faust implementation
looks like; the bench runs it on the same broker and events as the worker.
Run as ``python -m dreamstream.bench.plain_agent`` with DREAMSTREAM_* set.
"""
from __future__ import annotations

import numpy as np


def main() -> None:
    import faust

    from dreamstream import codec
    from dreamstream.bundle import latest_version, load_bundle
    from dreamstream.cli_options import load_settings
    from dreamstream.topics import ITEM_VECTORS, USER_EMBEDDINGS, WATCH_EVENTS
    from streams.app import app_config
    from streams.ops.shutdown import run_worker

    settings = load_settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(latest_version(settings.model_dir))
    step = bundle.sessions["dreamumm_step"]
    dim = bundle.manifest.dim
    engagement = settings.engagement
    items = {i: v[None, :].astype(np.float32) for i, v in zip(bundle.item_ids, bundle.items)}
    app = faust.App(f"{settings.topic_prefix}plain", **app_config(settings))
    watch = app.topic(settings.topic(WATCH_EVENTS), key_serializer="raw", value_serializer="raw")
    out = app.topic(settings.topic(USER_EMBEDDINGS), key_serializer="raw", value_serializer="raw")
    table = app.Table("plain-state", key_type=bytes, value_type=bytes, partitions=settings.partitions)
    _ = ITEM_VECTORS

    @app.agent(watch)
    async def plain(stream):
        async for event in stream.events():
            decoded = codec.unpack(event.message.value)
            for ev in decoded if isinstance(decoded, list) else [decoded]:  # a client batch: event by event
                await apply_one(event.message.key, ev)

    async def apply_one(key: bytes, ev: dict) -> None:
        """One event: a table read, the ONNX step at batch 1, a table write, a send (inside the stream's event)."""
        raw = table.get(key)
        seq = 0 if raw is None else codec.unpack(raw)["seq"]
        state = np.zeros((1, dim), np.float32) if raw is None else codec.bin_to_vec(codec.unpack(raw)["s"])[None]
        r = engagement.weight(ev["watch_ms"], ev["duration_ms"]).reshape(1, 1)
        state, user = step.run(["state_out", "user"], {"state": state, "item": items[ev["video"]], "weight": r,
                                                       "decay": np.ones((1, 1), np.float32)})
        seq += 1
        table[key] = codec.pack({"seq": seq, "s": codec.vec_to_bin(state[0])})
        await out.send(key=key, value=codec.pack({"user": ev["user"], "seq": seq, "ts": ev["ts"], "model": bundle.version,
                                                  "vector": codec.vec_to_bin(user[0])}))

    run_worker(app, settings.log_level, settings.shutdown_grace_s)


if __name__ == "__main__":
    main()

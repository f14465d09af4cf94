"""The demo's traffic: which rows are backfilled, which are "live", and when each live event was sent.

The model is trained on each user's history before the validation row. The
demo first backfills that history as fast as the producer goes (a worker
starting on an existing platform), then sends the held-out validation
events as live traffic at a fixed rate, remembering when each was sent so
the event-to-embedding latency can be measured. The test row stays unseen:
it is what retrieval must find.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from dreamstream.data.recbole import Dataset
from dreamstream.data.split import Split
from dreamstream.replay import Pace, event_values, paced, producer, replay_dataset, time_order
from dreamstream.settings import Settings
from dreamstream.topics import WATCH_EVENTS


@dataclass
class Traffic:
    """Rows to stream and what happened when they were sent."""

    backfill: np.ndarray
    live: np.ndarray
    sent_at: dict[str, float] = field(default_factory=dict)  # user -> wall time their live event was sent

    def expected_seq(self, ds: Dataset) -> dict[str, int]:
        """Events each user will have had applied once everything is through."""
        users = ds.user[np.concatenate([self.backfill, self.live])]
        counts = np.bincount(users, minlength=ds.n_users)
        return {ds.user_ids[u]: int(c) for u, c in enumerate(counts) if c}


def plan(ds: Dataset, split: Split) -> Traffic:
    """Backfill = every kept user's training rows; live = their validation rows."""
    backfill = np.concatenate(split.history("valid")) if len(split.users) else np.zeros(0, dtype=np.int64)
    return Traffic(time_order(ds.timestamp, backfill), time_order(ds.timestamp, split.valid_rows))


def send_backfill(settings: Settings, ds: Dataset, traffic: Traffic) -> float:
    """Produce the backfill as fast as possible; returns the wall time it started."""
    started = time.time()
    replay_dataset(settings, ds, traffic.backfill, Pace(), progress=True)
    return started


def send_live(settings: Settings, ds: Dataset, traffic: Traffic, rate: float) -> None:
    """Produce the live rows at ``rate`` events/s, noting when each user's event left."""
    topic = settings.topic(WATCH_EVENTS)
    prod = producer(settings)
    try:
        for key, value, _ts in paced(event_values(ds, traffic.live), Pace(rate=rate)):
            prod.send(topic, key=key, value=value)
            traffic.sent_at[key.decode()] = time.time()
        prod.flush()
    finally:
        prod.close()

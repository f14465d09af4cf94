"""Small hand-made event logs for the evaluation tests (no dataset files needed)."""
from __future__ import annotations

import numpy as np
import pytest

from dreamstream.evaluation.events import EventLog


def random_log(n_users: int = 12, n_items: int = 30, n_events: int = 240, seed: int = 0) -> EventLog:
    """Events with random users, items, weights (some negative) and strictly increasing times."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, n_users, n_events)
    item = rng.integers(0, n_items, n_events)
    weight = rng.choice(np.array([1.0, 1.0, 0.5, -0.3], np.float32), n_events)
    ts = np.cumsum(rng.integers(1, 5000, n_events)).astype(np.float64)
    return EventLog(user, item, weight, ts, n_users, n_items)


@pytest.fixture
def log() -> EventLog:
    return random_log()

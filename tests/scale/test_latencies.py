"""The bench's per-event latencies: each event's first covering record, split where it was sent and where its record
was written."""
from __future__ import annotations

import re

import numpy as np

from dreamstream.bench.harness import Collected
from dreamstream.commands.bench import Latencies, _latencies


def test_each_event_takes_the_first_record_whose_seq_covers_it_and_its_send_and_write_times() -> None:
    col = Collected()
    col.add("a", {"seq": 1}, now=10.30, written=10.20)
    col.add("a", {"seq": 3}, now=10.90, written=10.70)  # covers a's 2nd and 3rd event (a batch of two)
    col.add("b", {"seq": 1}, now=10.50, written=10.45)
    events = [{"user": "a"}, {"user": "b"}, {"user": "a"}, {"user": "a"}, {"user": "b"}]  # b's 2nd: no record yet
    due = [10.0, 10.1, 10.2, 10.3, 10.4]
    handed = [10.01, 10.15, 10.2, 10.3, 10.45]
    lat = _latencies(due, events, col, handed)
    assert np.allclose(lat.due, [10.0, 10.1, 10.2, 10.3])
    assert np.allclose(lat.total, [0.30, 0.40, 0.70, 0.60])
    assert np.allclose(lat.written, [0.20, 0.35, 0.50, 0.40])
    assert np.allclose(lat.sent, [0.01, 0.05, 0.0, 0.0])


def test_the_split_gives_each_stage_and_the_stages_add_up_to_the_total() -> None:
    lat = Latencies(due=np.zeros(3), total=np.array([0.3, 0.3, 0.3]), written=np.array([0.2, 0.2, 0.2]),
                    sent=np.array([0.05, 0.05, 0.05]))
    stages = re.findall(r"(due -> sent|sent -> record written|written -> read) p50 (\d+) ms, p99 (\d+) ms", lat.split())
    assert [(name, int(p50)) for name, p50, _ in stages] == [("due -> sent", 50), ("sent -> record written", 150),
                                                             ("written -> read", 100)]


def test_pooled_runs_keep_every_event() -> None:
    one = Latencies(np.array([1.0]), np.array([0.2]), np.array([0.1]), np.array([0.01]))
    two = Latencies(np.array([2.0, 3.0]), np.array([0.3, 0.4]), np.array([0.2, 0.1]), np.array([0.0, 0.02]))
    both = Latencies.pooled([one, two])
    assert both.total.tolist() == [0.2, 0.3, 0.4] and both.written.tolist() == [0.1, 0.2, 0.1]
    assert both.sent.tolist() == [0.01, 0.0, 0.02]

"""Each bench measurement on topics of its own, and on a broker of its own when the bench started the broker.

Why a new broker per run: the embedded broker (tansu, memory storage) keeps
every record of every run, ~700 MB more per 15-second latency run, and the
same paced run measured on it got slower after the first. On one broker in
sequence: at 17,600 events/s p99 204 ms, 310 ms, then a 35,000/s run, then
393 and 338 ms; at 22,000/s 169, 262, 320 and 202 ms. The same 22,000/s run
on a fresh broker each time, in the same half hour: 153 - 204 ms (six runs,
median 169). ``bench --live-max`` measures half the live maximum last,
after five or six runs, so it reported part of that broker's age as the
worker's latency. A Kafka broker's latency does not depend on what other
topics hold, and a benchmark's numbers should not depend on the order of
its runs.

An external broker (``--broker``) is shared by all runs, each on fresh
topics, as any shared cluster would be.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from dreamstream.broker import EmbeddedBroker, free_port
from dreamstream.settings import Settings


class RunBrokers:
    """Settings for one measurement at a time: fresh topics, state dir and web port; a fresh broker when embedded."""

    def __init__(self, settings: Settings, work: Path, embedded: bool) -> None:
        self.settings, self.work, self.embedded = settings, work, embedded
        self.broker: EmbeddedBroker | None = None
        self.runs = 0
        if embedded:
            self._restart()

    @property
    def pid(self) -> int | None:
        """The embedded broker's process (its CPU is reported), else None."""
        return self.broker.pid if self.broker else None

    @property
    def url(self) -> str:
        return self.broker.url if self.broker else self.settings.broker

    def fresh(self, tag: str) -> Settings:
        """Settings for the next measurement; an embedded broker is replaced first (except for the first run)."""
        if self.embedded and self.runs:
            self._restart()
        self.runs += 1
        return self.settings.model_copy(update={
            "broker": self.url, "topic_prefix": f"bench{uuid.uuid4().hex[:6]}-{tag}.", "web_port": free_port(),
            "state_dir": self.work / tag, "cold_min_positive": 0})

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def _restart(self) -> None:
        self.stop()
        self.broker = EmbeddedBroker(port=free_port(), log_dir=self.work / f"broker{self.runs}").start()

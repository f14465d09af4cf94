"""A client started while the broker is away: closed, retried with a new one, returned once it starts."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError

from streams.kafka import reachable


class Client:
    """Stands in for an aiokafka client: its start fails while the broker is away."""

    def __init__(self, away: list[bool]) -> None:
        self.away, self.stopped = away, False

    async def start(self) -> None:
        if self.away.pop(0):
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")

    async def stop(self) -> None:
        self.stopped = True


def test_a_client_is_retried_until_the_broker_answers_and_each_failed_one_closed(monkeypatch) -> None:
    monkeypatch.setattr(reachable, "RETRY_S", 0.0)
    away, made = [True, True, False], []

    def make() -> Client:
        made.append(Client(away))
        return made[-1]

    started = asyncio.run(reachable.start_when_reachable(make, "event feed"))
    assert started is made[-1] and len(made) == 3
    assert [c.stopped for c in made] == [True, True, False]


def test_an_error_that_is_not_the_broker_s_absence_is_raised() -> None:
    class Broken(Client):
        async def start(self) -> None:
            raise ValueError("bad settings")

    with pytest.raises(ValueError):
        asyncio.run(reachable.start_when_reachable(lambda: Broken([]), "event feed"))

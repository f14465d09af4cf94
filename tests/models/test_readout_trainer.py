"""The sequence batches read out every prefix exactly as the served user vector, and mask what was seen."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dreamstream.dreamumm_ref import user_vector
from dreamstream.evaluation.events import EventLog
from models.readout_trainer import NextItemExamples, readout_loss, served_examples


def _log() -> EventLog:
    rng = np.random.default_rng(3)
    n = 90
    return EventLog(rng.integers(0, 7, n), rng.integers(0, 15, n), rng.choice(np.float32([1, 0.5, -0.3]), n),
                    np.cumsum(rng.integers(0, 4, n)).astype(np.float64), 7, 15)


@pytest.mark.parametrize("half_life_s", [math.inf, 4.0])
def test_every_example_is_the_served_readout_of_its_prefix(half_life_s: float) -> None:
    log = _log()
    items = torch.nn.functional.normalize(torch.randn(15, 6), dim=1)
    examples = NextItemExamples(log)
    seen_examples = 0
    for batch in examples.batches(20, np.random.default_rng(0), half_life_s):
        users, seen = batch.users(items).numpy(), batch.seen(15).numpy()
        rows_items, weights, ts = batch.items.numpy(), batch.weights.numpy(), batch.ts.numpy()
        for m, t in enumerate(batch.targets.numpy()):
            f = batch.first.numpy()[t]
            _, expected = user_vector(items.numpy()[rows_items[f:t]], weights[f:t], ts[f:t] * 1000.0, half_life_s)
            np.testing.assert_allclose(users[m], expected, atol=1e-5)
            assert set(np.flatnonzero(seen[m])) == set(rows_items[f:t].tolist())
        seen_examples += len(batch.targets)
    assert seen_examples == len(examples) == len(log) - np.count_nonzero(np.bincount(log.user))


def test_the_loss_prefers_the_true_next_item() -> None:
    log = _log()
    batch = next(NextItemExamples(log).batches(1000, np.random.default_rng(0)))
    items = torch.nn.functional.normalize(torch.randn(15, 6), dim=1).requires_grad_(True)
    opt = torch.optim.Adam([items], lr=0.05)
    first = float(readout_loss(batch, torch.nn.functional.normalize(items, dim=1), 0.1))
    for _ in range(50):
        loss = readout_loss(batch, torch.nn.functional.normalize(items, dim=1), 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first


@pytest.mark.parametrize("half_life_s", [math.inf, 4.0])
def test_served_examples_are_the_fresh_readouts_of_every_prefix(half_life_s: float) -> None:
    """The item tower's training pairs: each (served vector, next item) of the log, repeats left out as the loss does."""
    log = _log()
    items = torch.nn.functional.normalize(torch.randn(15, 6), dim=1)
    users, targets = served_examples(log, items.numpy(), half_life_s, batch_events=20)
    expected_users, expected_targets = [], []
    for batch in NextItemExamples(log).batches(20, np.random.default_rng(0), half_life_s):
        seen = batch.seen(15)
        for m, t in enumerate(batch.target_items):
            if not seen[m, t]:
                expected_users.append(batch.users(items)[m])
                expected_targets.append(int(t))
    assert 0 < len(expected_targets) < len(NextItemExamples(log))  # the random log has repeats, and fresh events
    assert targets.tolist() == expected_targets
    torch.testing.assert_close(users, torch.stack(expected_users))

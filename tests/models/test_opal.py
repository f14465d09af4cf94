"""OPAL: step invariants, sequence == unrolled step, and what each loss term does."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.opal import Opal, OpalConfig, OpalState

CFG = OpalConfig(dim=16, interests=4, hidden=8)


@pytest.fixture
def model() -> Opal:
    torch.manual_seed(0)
    return Opal(CFG).eval()


def _inputs(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    item = F.normalize(torch.randn(batch, CFG.dim, generator=g), dim=1)
    hidden = 0.3 * torch.randn(batch, CFG.interests, CFG.hidden, generator=g)
    glob = 0.3 * torch.randn(batch, CFG.hidden, generator=g)
    soft = torch.randn(batch, CFG.interests, CFG.dim, generator=g)
    decay = torch.rand(batch, 1, generator=g)
    return item, hidden, glob, soft, decay


@pytest.mark.parametrize("batch", [1, 5])
def test_step_invariants(model: Opal, batch: int) -> None:
    item, hidden, glob, soft, decay = _inputs(batch)
    with torch.no_grad():
        out = model.step(item, hidden, glob, soft, decay)
    assert out.assign.dtype == torch.int64 and out.assign.shape == (batch,)
    assert torch.equal(out.assign, out.probs.argmax(1))
    changed = (out.hidden_out - hidden).abs().amax(dim=2) > 0
    assert torch.equal(changed, F.one_hot(out.assign, CFG.interests).bool())  # only the assigned row moves
    torch.testing.assert_close(out.soft_out, decay.unsqueeze(2) * soft + out.probs.unsqueeze(2) * item.unsqueeze(1))
    torch.testing.assert_close(out.interests.norm(dim=2), torch.ones(batch, CFG.interests))
    torch.testing.assert_close(out.weights.sum(1), torch.ones(batch))
    torch.testing.assert_close(out.probs.sum(1), torch.ones(batch))


def test_batch_one_equals_a_row_of_a_batch(model: Opal) -> None:
    args = _inputs(6)
    with torch.no_grad():
        full = model.step(*args)
        one = model.step(*(a[2:3] for a in args))
    for a, b in zip(full, one):
        assert b.shape[0] == 1
        torch.testing.assert_close(a[2:3], b)


def test_untouched_interests_read_out_their_hyper_category(model: Opal) -> None:
    state = model.empty_state(1)
    item = F.normalize(torch.randn(1, CFG.dim), dim=1)
    with torch.no_grad():
        out = model.step(item, *state, decay=torch.ones(1, 1))
        cats = model.categories()
    k = int(out.assign[0])
    for j in range(CFG.interests):
        if j != k:  # soft part seen (every interest gets probability mass), sequence part still C_j
            expected = F.normalize(0.5 * F.normalize(out.soft_out[0, j], dim=0) + 0.5 * cats[j], dim=0)
            torch.testing.assert_close(out.interests[0, j], expected)


def test_sequence_forward_equals_unrolled_step(model: Opal) -> None:
    torch.manual_seed(1)
    b, t = 3, 7
    items = F.normalize(torch.randn(b, t, CFG.dim), dim=2)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 5:] = False  # a shorter sequence: padding must not move its state
    decay = torch.rand(b, t)
    with torch.no_grad():
        seq = model.sequence(items, mask, decay)
        interests, weights = model.readout_at(seq["states"], torch.arange(t).repeat(b, 1))
        for row in range(b):
            state = model.empty_state(1)
            for i in range(int(mask[row].sum())):
                out = model.step(items[row, i:i + 1], *state, decay=decay[row, i:i + 1].view(1, 1))
                state = OpalState(out.hidden_out, out.global_out, out.soft_out)
                torch.testing.assert_close(interests[row, i], out.interests[0])
                torch.testing.assert_close(weights[row, i], out.weights[0])
                assert int(seq["assign"][row, i]) == int(out.assign[0])
            for a, b_ in zip(seq["state"], state):
                torch.testing.assert_close(a[row], b_[0])


def test_orthogonality_loss_drives_cct_to_identity() -> None:
    torch.manual_seed(0)
    model = Opal(CFG)
    with torch.no_grad():
        model.hyper.copy_(torch.randn(CFG.interests, CFG.dim) + 2.0)  # far from orthogonal
    before = float(model.orthogonality_loss())
    opt = torch.optim.Adam([model.hyper], lr=0.05)
    for _ in range(300):
        loss = model.orthogonality_loss()
        opt.zero_grad(); loss.backward(); opt.step()
    c = model.categories().detach()
    assert before > 0.1
    assert float(model.orthogonality_loss()) < 1e-3 * before
    assert (c @ c.T - torch.eye(CFG.interests)).abs().max() < 0.05


def test_orthogonal_init_actually_happens() -> None:
    c = Opal(CFG).categories().detach()
    torch.testing.assert_close(c @ c.T, torch.eye(CFG.interests), atol=1e-5, rtol=0)


def test_unique_loss_sharpens_assignments() -> None:
    torch.manual_seed(0)
    model = Opal(CFG)
    items = F.normalize(torch.randn(1, 200, CFG.dim), dim=2)
    mask = torch.ones(1, 200, dtype=torch.bool)

    def sharpness() -> float:
        return float(torch.softmax(model.scores(items), dim=2).amax(dim=2).mean())

    before = sharpness()
    opt = torch.optim.Adam([model.hyper], lr=0.02)
    for _ in range(100):
        loss = model.unique_loss(model.scores(items), mask)
        opt.zero_grad(); loss.backward(); opt.step()
    assert sharpness() > before + 0.1


def test_uniformity_loss_is_zero_for_balanced_mass_and_positive_otherwise() -> None:
    mask = torch.ones(1, 4, dtype=torch.bool)
    balanced = torch.eye(4).unsqueeze(0)
    skewed = torch.tensor([[[1.0, 0, 0, 0]] * 4])
    assert float(Opal.uniformity_loss(balanced, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(Opal.uniformity_loss(skewed, mask)) > 1.0


def test_future_loss_prefers_interests_pointing_at_future_items(model: Opal) -> None:
    catalogue = torch.eye(CFG.dim)
    targets = torch.tensor([[[3, 5]]])
    tmask = torch.ones(1, 1, 2)
    good = torch.zeros(1, 1, CFG.interests, CFG.dim); good[0, 0, 0, 3] = 1; good[0, 0, 1, 5] = 1
    good[0, 0, 2:, 0] = 1
    bad = torch.zeros_like(good); bad[..., 0] = 1
    assert float(model.future_loss(good, catalogue, targets, tmask)) < float(model.future_loss(bad, catalogue, targets, tmask))

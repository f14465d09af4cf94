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


# --- inference over whole histories ------------------------------------------------

@pytest.mark.parametrize("decayed", [False, True])
def test_states_after_reads_every_prefix_as_the_unrolled_step(model: Opal, decayed: bool) -> None:
    from models.opal import interests_after

    torch.manual_seed(2)
    catalogue = F.normalize(torch.randn(30, CFG.dim), dim=1)
    sequences = [np.array([3, 1, 4, 1, 5, 9, 2]), np.array([6]), np.array([7, 8, 0, 2])]
    decays = [np.linspace(1.0, 0.2, len(s)).astype(np.float32) for s in sequences] if decayed else None
    reads = np.array([0, 0, 2, 1, 0, 2, 1])
    at = np.array([7, 3, 4, 1, 0, 2, 0])  # 0: the empty state
    interests, weights = interests_after(model, catalogue, sequences, reads, at, decays)
    assert interests.shape == (7, CFG.interests, CFG.dim) and weights.shape == (7, CFG.interests)
    for q, (s, n) in enumerate(zip(reads, at)):
        state = model.empty_state(1)
        with torch.no_grad():
            expected = model.readout(*state)
            for j, item in enumerate(sequences[s][:n]):
                g = torch.full((1, 1), float(decays[s][j]) if decayed else 1.0)
                out = model.step(catalogue[item:item + 1], *state, decay=g)
                state = OpalState(out.hidden_out, out.global_out, out.soft_out)
                expected = (out.interests, out.weights)
        torch.testing.assert_close(interests[q], expected[0][0])
        torch.testing.assert_close(weights[q], expected[1][0])


def test_final_interests_counts_hard_assignments(model: Opal) -> None:
    from models.opal import final_interests

    catalogue = F.normalize(torch.randn(20, CFG.dim), dim=1)
    sequences = [np.array([1, 2, 3, 3]), np.array([5])]
    interests, weights, counts = final_interests(model, catalogue, sequences)
    assert interests.shape == (2, CFG.interests, CFG.dim) and weights.shape == (2, CFG.interests)
    assert counts.sum(axis=1).tolist() == [4, 1]
    assign = model.assignment(catalogue)[2].numpy()
    assert counts[1, assign[5]] == 1


# --- two-stage training with early stopping ----------------------------------------

def _tiny_sequences(n_users: int = 40, n_items: int = 24, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((n_items, CFG.dim)).astype(np.float32)
    sequences = [rng.integers(0, n_items, size=rng.integers(1, 15)) for _ in range(n_users)]
    return sequences, items


def test_fit_opal_restores_the_best_epoch_of_each_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    import models.opal as opal

    sequences, items = _tiny_sequences()
    script = {"soft": [0.10, 0.30, 0.20, 0.25, 0.90], "hard": [0.50, 0.40, 0.60, 0.55, 0.58, 0.90]}
    calls: list[tuple[str, dict]] = []
    starts: list[tuple[str, dict]] = []

    def validate(m: Opal) -> float:
        stage = "hard" if m.readout_hard else "soft"
        assert not m.training
        calls.append((stage, copy.deepcopy(m.state_dict())))
        return script[stage][sum(1 for s, _ in calls if s == stage) - 1]

    original = opal._train_epoch

    def recording(m, *args, **kwargs):
        starts.append(("hard" if m.readout_hard else "soft", copy.deepcopy(m.state_dict())))
        return original(m, *args, **kwargs)

    monkeypatch.setattr(opal, "_train_epoch", recording)
    config = OpalConfig(dim=CFG.dim, interests=4, hidden=8, max_len=10, batch_size=16, patience=2,
                        soft_epochs=5, hard_epochs=6)
    model, report = opal.fit_opal(sequences, items, validate, config, seed=0, progress=False)

    stages = [row["stage"] for row in report["history"]]
    assert stages == ["soft"] * 4 + ["hard"] * 5  # soft stops 2 after epoch 2, hard 2 after epoch 3
    assert [row["epoch"] for row in report["history"]] == list(range(1, 10))
    assert report["soft"] == {"best_epoch": 2, "epochs": 4, "valid": 0.30}
    assert report["hard"] == {"best_epoch": 3, "epochs": 5, "valid": 0.60}
    assert report["valid"] == 0.60
    soft_calls = [sd for s, sd in calls if s == "soft"]
    hard_calls = [sd for s, sd in calls if s == "hard"]
    first_hard_start = next(sd for s, sd in starts if s == "hard")
    for name, value in soft_calls[1].items():  # the hard stage starts from the best soft weights
        torch.testing.assert_close(first_hard_start[name], value)
    assert not torch.equal(soft_calls[-1]["hyper"], soft_calls[1]["hyper"])  # ... which were not the last ones
    for name, value in hard_calls[2].items():  # and the returned model is the best hard epoch
        torch.testing.assert_close(model.state_dict()[name], value)
    assert model.readout_hard and not model.training


def test_fit_opal_soft_stage_trains_only_the_hyper_categories() -> None:
    from models.opal import fit_opal

    sequences, items = _tiny_sequences(seed=1)
    torch.manual_seed(0)
    init = Opal(OpalConfig(dim=CFG.dim, interests=4, hidden=8)).state_dict()
    seen: list[dict] = []

    def validate(m: Opal) -> float:
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return float(len(seen))  # always improving: no early stop

    config = OpalConfig(dim=CFG.dim, interests=4, hidden=8, max_len=10, batch_size=16, soft_epochs=2, hard_epochs=1)
    fit_opal(sequences, items, validate, config, seed=0, progress=False)
    after_soft = seen[1]
    assert not torch.equal(after_soft["hyper"], init["hyper"])
    for name in init:
        if name != "hyper":
            torch.testing.assert_close(after_soft[name], init[name])  # no loss reaches the GRU / MLP in soft mode
    assert not torch.equal(seen[2]["cell.weight_ih"], init["cell.weight_ih"])  # the hard stage trains them


def test_fit_opal_refuses_sequences_with_nothing_to_learn() -> None:
    from models.opal import fit_opal

    with pytest.raises(ValueError, match="two events"):
        fit_opal([np.array([1]), np.array([], np.int64)], np.eye(CFG.dim, dtype=np.float32), lambda m: 0.0,
                 OpalConfig(dim=CFG.dim, hidden=8), progress=False)


def test_train_opal_writes_both_stages(small, tmp_path) -> None:
    import json

    from models.opal import load_opal, train_opal

    rng = np.random.default_rng(0)
    items = rng.standard_normal((small.ds.n_items, 16)).astype(np.float32)
    metrics = train_opal(items, small.split, small.ds, epochs=4, seed=0, out_dir=tmp_path,
                         config=OpalConfig(dim=16, hidden=8, max_len=12, patience=5), progress=False)
    history = json.loads((tmp_path / "history.json").read_text())["opal"]
    assert [row["stage"] for row in history] == ["soft", "soft", "hard", "hard"]
    assert all(0 <= row["recall@20"] <= 1 for row in history)
    assert metrics["pretrain_epochs"] == 2 and metrics["epochs"] == 4
    assert metrics["valid"]["recall@20"] == max(row["recall@20"] for row in history if row["stage"] == "hard")
    assert json.loads((tmp_path / "metrics.json").read_text())["opal"] == metrics
    loaded = load_opal(tmp_path)
    assert loaded.readout_hard and loaded.config.dim == 16


def test_load_opal_accepts_a_checkpoint_with_retired_training_keys(tmp_path) -> None:
    from models.opal import load_opal

    torch.manual_seed(0)
    model = Opal(CFG)
    old_config = {**CFG.to_dict(), "pretrain_share": 0.4}  # a key this version no longer has
    torch.save({"config": old_config, "state_dict": model.state_dict()}, tmp_path / "opal.pt")
    loaded = load_opal(tmp_path)
    torch.testing.assert_close(loaded.hyper, model.hyper)


def test_soft_loss_shortcut_equals_the_unrolled_soft_readout(model: Opal) -> None:
    torch.manual_seed(3)
    b, t, p, w, n = 3, 9, 4, 2, 25
    catalogue = F.normalize(torch.randn(n, CFG.dim), dim=1)
    idx = torch.randint(0, n, (b, t))
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[2, 6:] = False
    cut = torch.tensor([[0, 3, 8, 5], [1, 1, 2, 7], [0, 5, 4, 2]])
    targets = torch.randint(0, n, (b, p, w))
    tmask = torch.ones(b, p, w)
    loss, parts = model.loss(catalogue[idx], mask, catalogue, cut, targets, tmask, hard=False)
    out = model.sequence(catalogue[idx], mask)
    interests, _ = model.readout_at(out["states"], cut, hard=False)
    torch.testing.assert_close(parts["future"], model.future_loss(interests, catalogue, targets, tmask))
    assert "unique" not in parts

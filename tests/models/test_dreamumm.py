"""DreamUMM: the torch step, the numpy reference the worker matches, and the Candidate-DreamUMM blend."""
from __future__ import annotations

import numpy as np
import torch

from dreamstream import dreamumm_ref
from dreamstream.engagement import decay
from models.dreamumm import DreamUMMStep, candidate_dreamumm


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_reference_equals_unrolled_torch_step_with_event_time_decay() -> None:
    rng = np.random.default_rng(0)
    v = _unit(rng.standard_normal((9, 8))).astype(np.float32)
    w = rng.uniform(-0.3, 1.5, 9).astype(np.float32)
    ts = np.cumsum(rng.integers(0, 3_600_000, 9))
    ts[4] = ts[3] - 1000  # out-of-order event: its gap clamps to 0
    state, user = dreamumm_ref.user_vector(v, w, ts, half_life_s=1800.0)
    step = DreamUMMStep()
    s = torch.zeros(1, 8)
    last = ts[0]
    for vi, wi, t in zip(v, w, ts):
        g = torch.tensor(decay(t - last, 1800.0)).view(1, 1)
        last = t
        s, u = step(s, torch.from_numpy(vi[None]), torch.tensor([[wi]]), g)
    np.testing.assert_allclose(state, s[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(user, u[0].numpy(), atol=1e-5)
    assert abs(np.linalg.norm(user) - 1) < 1e-5


def test_no_decay_is_the_weighted_sum() -> None:
    rng = np.random.default_rng(1)
    v = rng.standard_normal((5, 4)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 5).astype(np.float32)
    state, user = dreamumm_ref.user_vector(v, w)
    np.testing.assert_allclose(state, (w[:, None] * v).sum(0), rtol=1e-5)
    np.testing.assert_allclose(user, _unit(state), rtol=1e-5)


def test_half_life_halves_the_past() -> None:
    v = np.eye(2, dtype=np.float32)
    state, _ = dreamumm_ref.user_vector(v, np.ones(2, np.float32), np.array([0, 60_000]), half_life_s=60.0)
    np.testing.assert_allclose(state, [0.5, 1.0], rtol=1e-6)


def test_empty_history_is_zero() -> None:
    state, user = dreamumm_ref.user_vector(np.zeros((0, 3), np.float32), np.zeros(0))
    assert not state.any() and not user.any()


def test_candidate_blend_moves_from_candidates_to_own_state() -> None:
    own = np.array([1.0, 0.0], np.float32)
    cand = dreamumm_ref.candidate_vector(np.array([[0.0, 1.0], [0.0, 3.0]], np.float32))
    np.testing.assert_allclose(cand, [0, 1])
    cold0, is_cold = dreamumm_ref.candidate_blend(own, cand, 0, 4)
    np.testing.assert_allclose(cold0, [0, 1], atol=1e-6)  # no positives: the candidates' direction
    half, _ = dreamumm_ref.candidate_blend(own, cand, 2, 4)
    np.testing.assert_allclose(half, _unit(np.array([0.5, 0.5])), atol=1e-6)
    warm, warm_cold = dreamumm_ref.candidate_blend(own, cand, 4, 4)
    np.testing.assert_allclose(warm, own)
    assert bool(is_cold) and not bool(warm_cold)
    # a missing side leaves the other alone
    only_own, _ = dreamumm_ref.candidate_blend(own, np.zeros(2, np.float32), 1, 4)
    np.testing.assert_allclose(only_own, own)
    only_cand, _ = dreamumm_ref.candidate_blend(np.zeros(2, np.float32), cand, 3, 4)
    np.testing.assert_allclose(only_cand, cand)


def test_candidate_blend_batched_and_torch_wrapper_agree() -> None:
    rng = np.random.default_rng(2)
    users = _unit(rng.standard_normal((6, 5))).astype(np.float32)
    cands = _unit(rng.standard_normal((6, 5))).astype(np.float32)
    n_pos = np.array([0, 1, 2, 5, 7, 3])
    batched, cold = dreamumm_ref.candidate_blend(users, cands, n_pos, 5)
    for i in range(6):
        one, _ = dreamumm_ref.candidate_blend(users[i], cands[i], n_pos[i], 5)
        np.testing.assert_allclose(batched[i], one, atol=1e-6)
    t, tc = candidate_dreamumm(torch.from_numpy(users), torch.from_numpy(cands), torch.from_numpy(n_pos), 5)
    np.testing.assert_allclose(t.numpy(), batched)
    assert cold.tolist() == [True, True, True, False, False, True] == tc.tolist()

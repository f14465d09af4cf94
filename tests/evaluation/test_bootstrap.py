"""The paired bootstrap over users against a case small enough to enumerate by hand."""
from __future__ import annotations

import numpy as np
import pytest

from dreamstream.evaluation.bootstrap import hits, paired_interval
from dreamstream.evaluation.runner import intervals
from dreamstream.evaluation.prequential import PrequentialResult


def test_interval_matches_the_enumerated_resamples() -> None:
    # user A: differences [1, 0] (2 events), user B: [0] (1 event). Resampling 2 users with replacement:
    # {A,A} 1/4 -> 2/4 = 0.5; {A,B} 1/2 -> 1/3; {B,B} 1/4 -> 0. So the 2.5% quantile is 0, the 97.5% is 0.5,
    # and the observed difference is 1/3.
    got = paired_interval(np.array([1.0, 0.0, 0.0]), np.array([7, 7, 3]), draws=4000)
    assert got.diff == pytest.approx(1 / 3)
    assert got.lo == 0.0 and got.hi == 0.5 and not got.significant
    shifted = paired_interval(np.array([1.0, 0.5, 0.25]), np.array([7, 7, 3]), draws=4000)  # 0.75 / 0.5 / 0.25
    assert (shifted.lo, shifted.hi) == (0.25, 0.75) and shifted.significant


def test_a_seeded_row_is_averaged_over_seeds_before_users_are_resampled() -> None:
    assert hits([np.array([0, 30, 5]), np.array([25, 30, 1])]).tolist() == [0.5, 0.0, 1.0]
    served = [PrequentialResult(np.array([0, 0, 50, 50]), np.zeros(4, np.int64))]
    worse = [PrequentialResult(np.array([50, 0, 50, 50]), np.zeros(4, np.int64))]
    out = intervals({"served: dream + opal": served, "ease": worse}, np.array([1, 1, 2, 2]))
    assert set(out) == {"ease"} and out["ease"]["diff"] == pytest.approx(-0.25)
    assert out["ease"]["lo"] == pytest.approx(-0.5) and out["ease"]["hi"] == pytest.approx(0.0)

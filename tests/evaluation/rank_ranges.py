"""A brute-force rank as the range a correct scorer may report: float ties make the exact place a matter of rounding.

Why a range: the fast scorers rank a batch of histories with one matrix
product and the brute-force loops one history at a time; BLAS sums the two
in different orders, so two items whose scores are equal in exact arithmetic
can swap (seen with numpy 2.4.6's OpenBLAS: one rank in ~100 off by one).
An item ahead of the target by more than ``EPS`` must be ahead, one within
``EPS`` may be; a wrong history moves a score by far more.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-5  # relative: float32 scores carry ~7 significant digits
AT = 50     # ranks at or past it are reported as AT


def rank_range(scores: np.ndarray, watched: set[int], target: int, at: int = AT) -> tuple[int, int]:
    """(fewest, most) items that may rank ahead of ``target`` among the unwatched, each capped at ``at``.

    A watched target is never ranked (the protocol masks what the user has
    seen): ``(at, at)``.
    """
    if target in watched:
        return at, at
    s = np.asarray(scores, np.float64)
    others = np.ones(len(s), bool)
    others[list(watched)] = False
    others[target] = False
    slack = EPS * max(1.0, abs(s[target]))
    surely = int((s[others] > s[target] + slack).sum())
    maybe = int((s[others] >= s[target] - slack).sum())
    return min(surely, at), min(maybe, at)


def assert_ranks_within(ranks: list[int], ranges: list[tuple[int, int]]) -> None:
    """Every fast rank inside its brute-force range; the message names the first event that is not."""
    assert len(ranks) == len(ranges)
    bad = [(n, r, lo_hi) for n, (r, lo_hi) in enumerate(zip(ranks, ranges)) if not lo_hi[0] <= r <= lo_hi[1]]
    assert not bad, f"event {bad[0][0]}: rank {bad[0][1]}, the brute force allows {bad[0][2]} ({len(bad)} such events)"

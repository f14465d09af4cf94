"""The feature publisher's records, and what it refuses before sending anything."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.errors import UserError
from dreamstream.index.features_publisher import chosen_items, feature_matrices, feature_records
from streams.domain.item_features import parse_features


def dataset(text_dim: int | None = 4) -> SimpleNamespace:
    text = None if text_dim is None else np.arange(3 * text_dim, dtype=np.float32).reshape(3, text_dim)
    return SimpleNamespace(path="d", item_ids=["a", "b", "c"], n_items=3, text_feat=text, image_feat=None)


def test_records_are_what_the_item_tower_parses() -> None:
    text, visual = feature_matrices(dataset(), 4, 2)
    assert visual.shape == (3, 2) and not visual.any()  # a modality the data lacks: zeros of the tower's width
    records = list(feature_records(["a", "b", "c"], text, visual, ts=7))
    assert [k for k, _ in records] == [codec.key_bytes(i) for i in "abc"]
    video, t, v, ts = parse_features(records[1][1], 4, 2)
    assert (video, ts) == ("b", 7) and t.tolist() == [4, 5, 6, 7] and v.tolist() == [0, 0]


def test_a_wrong_width_or_unknown_id_is_refused() -> None:
    with pytest.raises(UserError, match="4 wide but the bundle's item tower reads 8"):
        feature_matrices(dataset(), 8, 2)
    assert chosen_items(dataset(), []).tolist() == [0, 1, 2]
    assert chosen_items(dataset(), ["c", "a", "c"]).tolist() == [2, 0]
    with pytest.raises(UserError, match="1 of the --items are not in d: zz"):
        chosen_items(dataset(), ["a", "zz"])

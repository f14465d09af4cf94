"""The RecBole atomic-file reader: what it builds, and that every malformed file names its file and line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dreamstream.data.recbole import DatasetError, load_dataset

INTER = [
    ("u2", "b", 1, 10.0, 9000, 10000),
    ("u1", "a", 0, 5.0, 500, 10000),
    ("u2", "a", 1, 11.5, 12000, 10000),
]
ITEMS = [("c", "pets", "puppy fetch"), ("a", "music", "guitar cover"), ("b", "music", "piano")]


def test_reads_inter_and_item_in_their_orders(write_dataset) -> None:
    ds = load_dataset(write_dataset(INTER, ITEMS))
    assert ds.name == "tiny"
    assert ds.user_ids == ["u2", "u1"]  # first appearance in .inter
    assert ds.item_ids == ["c", "a", "b"]  # .item row order, cold item "c" kept
    np.testing.assert_array_equal(ds.user, [0, 1, 0])
    np.testing.assert_array_equal(ds.item, [2, 1, 1])
    assert ds.user.dtype == np.int64 and ds.item.dtype == np.int64
    np.testing.assert_array_equal(ds.rating, np.array([1, 0, 1], np.float32))
    assert ds.rating.dtype == np.float32
    np.testing.assert_array_equal(ds.timestamp, [10.0, 5.0, 11.5])
    assert ds.timestamp.dtype == np.float64
    assert sorted(ds.columns) == ["duration_ms", "watch_ms"]
    np.testing.assert_array_equal(ds.columns["watch_ms"], [9000, 500, 12000])
    assert ds.item_fields == {"category": ["pets", "music", "music"], "title": ["puppy fetch", "guitar cover", "piano"]}
    assert ds.item_text() == ["category: pets. title: puppy fetch", "category: music. title: guitar cover",
                              "category: music. title: piano"]
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 3, 3)
    assert ds.text_feat is None and ds.image_feat is None


def test_without_item_file_items_are_sorted_and_there_is_no_text(write_dataset) -> None:
    ds = load_dataset(write_dataset(INTER))
    assert ds.item_ids == ["a", "b"]
    np.testing.assert_array_equal(ds.item, [1, 0, 0])
    assert ds.item_text() is None and ds.item_fields == {}


def test_rating_and_timestamp_may_be_absent(write_dataset) -> None:
    folder = write_dataset([("x", "i"), ("y", "j"), ("x", "j")], inter_header=("user_id:token", "item_id:token"))
    ds = load_dataset(folder)
    np.testing.assert_array_equal(ds.rating, [1, 1, 1])
    np.testing.assert_array_equal(ds.timestamp, [0, 1, 2])  # row number: file order is event order
    assert ds.columns == {}


def test_extra_columns_of_any_type_and_crlf_and_blank_lines(write_dataset) -> None:
    header = ("item_id:token", "user_id:token", "tags:token_seq", "emb:float_seq", "score:float", "src:token")
    folder = write_dataset([("i", "u", "a b", "0.1 0.2", 2.5, "web"), ("j", "u", "", "", 1, "app")],
                           inter_header=header)
    inter = folder / "tiny.inter"
    inter.write_text(inter.read_text().replace("\n", "\r\n") + "\r\n\r\n")
    ds = load_dataset(folder)
    assert ds.item_ids == ["i", "j"] and ds.user_ids == ["u"]
    assert list(ds.columns) == ["score"]  # only plain float columns become arrays
    np.testing.assert_array_equal(ds.columns["score"], [2.5, 1.0])


def test_feature_files_are_read_in_item_order(write_dataset) -> None:
    folder = write_dataset(INTER, ITEMS)
    text = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.save(folder / "text_feat.npy", text)
    np.save(folder / "image_feat.npy", np.ones((3, 2), np.float32))
    ds = load_dataset(folder)
    assert ds.text_feat.dtype == np.float32 and ds.text_feat.shape == (3, 4)
    np.testing.assert_array_equal(ds.text_feat, text)
    assert ds.image_feat.shape == (3, 2)


def test_name_picks_one_of_several_and_a_file_path_works(write_dataset) -> None:
    folder = write_dataset(INTER, name="tiny")
    (folder / "other.inter").write_text((folder / "tiny.inter").read_text())
    assert load_dataset(folder, "other").name == "other"
    assert load_dataset(folder / "tiny.inter").name == "tiny"
    with pytest.raises(DatasetError, match="2 .inter files"):
        load_dataset(folder)


def _error(folder: Path, name: str | None = None) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(folder, name)
    return str(info.value)


def test_missing_folder_and_missing_inter(tmp_path: Path, write_dataset) -> None:
    assert "no such dataset folder" in _error(tmp_path / "nope")
    assert "datagen" in _error(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no .inter file" in _error(empty)
    folder = write_dataset(INTER)
    msg = _error(folder, "absent")
    assert "absent.inter" in msg and "tiny.inter" in msg


def test_missing_required_column_names_file_and_header_line(write_dataset) -> None:
    folder = write_dataset([("u", 1.0)], inter_header=("user_id:token", "rating:float"))
    msg = _error(folder)
    assert "tiny.inter:1:" in msg and "item_id:token" in msg


def test_bad_header_type(write_dataset) -> None:
    folder = write_dataset([("u", "i")], inter_header=("user_id:token", "item_id:string"))
    msg = _error(folder)
    assert "tiny.inter:1:" in msg and "item_id:string" in msg and "token_seq" in msg


def test_wrong_column_count_names_the_line(write_dataset) -> None:
    folder = write_dataset(INTER)
    inter = folder / "tiny.inter"
    inter.write_text(inter.read_text() + "u3\tz\t1\t12\n")
    msg = _error(folder)
    assert "tiny.inter:5:" in msg and "4 tab-separated values" in msg and "6 columns" in msg


def test_non_numeric_float_names_the_line_and_column(write_dataset) -> None:
    rows = list(INTER)
    rows[1] = ("u1", "a", 0, "yesterday", 500, 10000)
    msg = _error(write_dataset(rows))
    assert "tiny.inter:3:" in msg and "timestamp:float" in msg and "'yesterday'" in msg


def test_item_missing_from_item_file_names_the_inter_line(write_dataset) -> None:
    msg = _error(write_dataset(INTER + [("u1", "zz", 1, 20, 1, 1)], ITEMS))
    assert "tiny.inter:5:" in msg and "'zz'" in msg and "tiny.item" in msg


def test_duplicate_item_row(write_dataset) -> None:
    msg = _error(write_dataset(INTER, ITEMS + [("a", "pets", "again")]))
    assert "tiny.item:5:" in msg and "first on line 3" in msg


def test_item_file_line_errors_too(write_dataset) -> None:
    folder = write_dataset(INTER, ITEMS)
    item = folder / "tiny.item"
    item.write_text(item.read_text() + "d\tpets\n")
    assert "tiny.item:5:" in _error(folder)


@pytest.mark.parametrize("shape", [(2, 4), (4, 4), (3,)])
def test_feature_rows_must_match_items(write_dataset, shape: tuple[int, ...]) -> None:
    folder = write_dataset(INTER, ITEMS)
    np.save(folder / "image_feat.npy", np.zeros(shape, np.float32))
    msg = _error(folder)
    assert "image_feat.npy" in msg and ("3 items" in msg or "2-D" in msg)


def test_non_finite_features_are_rejected(write_dataset) -> None:
    folder = write_dataset(INTER, ITEMS)
    feat = np.zeros((3, 2), np.float32)
    feat[1, 0] = np.nan
    np.save(folder / "text_feat.npy", feat)
    assert "row 1" in _error(folder)

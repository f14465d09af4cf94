"""Reading a dataset in RecBole's atomic-file format, with MMRec's feature files beside it.

Why this format: it is what public recommendation datasets ship as (RecBole
publishes ~40 of them converted), so anything ``dreamstream datagen`` writes can
be swapped for a real dataset without touching the trainer.

A dataset is a folder::

    <dir>/<name>.inter     tab-separated, header of field:type (token, token_seq, float, float_seq);
                           needs user_id and item_id, may have rating, timestamp and any other columns
    <dir>/<name>.item      optional: item_id plus token / token_seq columns (category, title, ...)
    <dir>/text_feat.npy    optional: float [n_items, Dt], row i = item i (see item order below)
    <dir>/image_feat.npy   optional: float [n_items, Dv]

Item order (the row order of the feature files): the ``.item`` rows when
there is a ``.item``, otherwise the sorted item ids of ``.inter``. Items that
are in ``.item`` but never in ``.inter`` are kept (cold items).

Every problem is a :class:`DatasetError` naming the file, the line and what to
do, because a reader that silently drops a malformed row trains a model on
something other than what the person thinks they gave it. numpy only: the
replay tool and the stream worker's side import this without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
FEATURE_FILES = {"text_feat": "text_feat.npy", "image_feat": "image_feat.npy"}


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message says where and what to do."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """One interaction log with its item side, as integer indexes ready for training."""

    name: str
    path: Path
    user_ids: list[str]  # index -> raw id, in order of first appearance in .inter
    item_ids: list[str]  # index -> raw id: .item row order, or sorted ids when there is no .item
    user: np.ndarray  # int64 [N], rows in .inter file order
    item: np.ndarray  # int64 [N]
    rating: np.ndarray  # float32 [N]; 1.0 when .inter has no rating column
    timestamp: np.ndarray  # float64 [N], seconds; the row number when .inter has no timestamp column
    columns: dict[str, np.ndarray]  # other float columns of .inter by bare name (watch_ms, duration_ms, ...)
    item_fields: dict[str, list[str]]  # token / token_seq columns of .item by bare name, one string per item
    text_feat: np.ndarray | None  # float32 [n_items, Dt]
    image_feat: np.ndarray | None  # float32 [n_items, Dv]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(self.user.shape[0])

    def item_text(self) -> list[str] | None:
        """Per item, its ``.item`` text columns joined: the input of a sentence encoder.

        Each column is written as ``"<field>: <value>"`` so that the encoder
        sees which words are a category and which are a title. None when the
        dataset has no ``.item`` text.
        """
        if not self.item_fields:
            return None
        fields = list(self.item_fields.items())
        return [
            ". ".join(f"{name}: {values[i]}" for name, values in fields if values[i])
            for i in range(self.n_items)
        ]

    def __repr__(self) -> str:
        feats = [k for k in FEATURE_FILES if getattr(self, k) is not None]
        return (f"Dataset({self.name!r}, users={self.n_users}, items={self.n_items}, "
                f"interactions={self.n_interactions}, features={feats})")


@dataclass(frozen=True)
class _Table:
    """One atomic file, parsed into columns of strings."""

    path: Path
    fields: list[tuple[str, str]]  # (bare name, type) in header order
    values: dict[str, list[str]]  # bare name -> one string per data row
    lines: list[int]  # 1-based file line of each data row

    def require(self, *names: str) -> None:
        have = [n for n, _ in self.fields]
        missing = [n for n in names if n not in have]
        if missing:
            raise DatasetError(
                f"{self.path}:1: the header has no {', '.join(n + ':token' for n in missing)} column "
                f"(it has {', '.join(f'{n}:{t}' for n, t in self.fields)}); rename the user / item id columns "
                f"to user_id:token and item_id:token")

    def floats(self, name: str) -> np.ndarray:
        """A float column as float64, or an error naming the first line that is not a number."""
        raw = self.values[name]
        try:
            return np.asarray(raw, dtype=np.float64) if raw else np.zeros(0)
        except ValueError:
            for row, text in enumerate(raw):
                try:
                    float(text)
                except ValueError:
                    raise DatasetError(
                        f"{self.path}:{self.lines[row]}: column {name}:float holds {text!r}, not a number; "
                        f"fix the value or declare the column as :token") from None
            raise


def load_dataset(path: Path | str, name: str | None = None) -> Dataset:
    """Read the dataset in folder ``path``; ``name`` is the stem of its ``.inter`` file.

    Without ``name`` the folder must hold exactly one ``*.inter`` file. A path
    to the ``.inter`` file itself is also accepted.
    """
    path = Path(path)
    if path.suffix == ".inter" and path.is_file():
        path, name = path.parent, path.stem
    if not path.is_dir():
        raise DatasetError(f"{path}: no such dataset folder; run `dreamstream datagen --out {path}` "
                           f"or point --data-dir at a folder holding <name>.inter")
    name = name or _only_inter(path)
    inter_path = path / f"{name}.inter"
    if not inter_path.is_file():
        found = sorted(p.name for p in path.glob("*.inter"))
        raise DatasetError(f"{inter_path}: no such file (the folder has {found or 'no .inter file'}); "
                           f"pass the stem of one of them as the dataset name")

    inter = _read_table(inter_path)
    inter.require("user_id", "item_id")
    item_path = path / f"{name}.item"
    item_table = _read_table(item_path) if item_path.is_file() else None
    if item_table is not None:
        item_table.require("item_id")

    user_ids, user = _index_in_order(inter.values["user_id"])
    item_ids, item = _item_index(inter, item_table)
    n = len(inter.lines)
    types = dict(inter.fields)
    rating = inter.floats("rating").astype(np.float32) if types.get("rating") == "float" else np.ones(n, np.float32)
    timestamp = inter.floats("timestamp") if types.get("timestamp") == "float" else np.arange(n, dtype=np.float64)
    columns = {f: inter.floats(f) for f, t in inter.fields
               if t == "float" and f not in ("rating", "timestamp")}
    item_fields = {} if item_table is None else {
        f: item_table.values[f] for f, t in item_table.fields if t in ("token", "token_seq") and f != "item_id"}
    features = {key: _load_feature(path / file, len(item_ids), item_path if item_table else inter_path)
                for key, file in FEATURE_FILES.items()}
    return Dataset(name=name, path=path, user_ids=user_ids, item_ids=item_ids, user=user, item=item,
                   rating=rating, timestamp=timestamp, columns=columns, item_fields=item_fields, **features)


def _only_inter(folder: Path) -> str:
    found = sorted(folder.glob("*.inter"))
    if len(found) != 1:
        what = "no .inter file" if not found else f"{len(found)} .inter files ({', '.join(p.name for p in found)})"
        raise DatasetError(f"{folder}: found {what}; a dataset folder holds exactly one <name>.inter, "
                           f"or pass the dataset name to pick one")
    return found[0].stem


def _parse_header(path: Path, line: str) -> list[tuple[str, str]]:
    fields = []
    for column, cell in enumerate(line.split("\t"), start=1):
        bare, sep, kind = cell.strip().partition(":")
        if not sep or not bare or kind not in FIELD_TYPES:
            raise DatasetError(
                f"{path}:1: header column {column} is {cell!r}; each column must be name:type with type one of "
                f"{', '.join(FIELD_TYPES)} (RecBole atomic format, tab-separated)")
        fields.append((bare, kind))
    names = [f for f, _ in fields]
    dup = sorted({f for f in names if names.count(f) > 1})
    if dup:
        raise DatasetError(f"{path}:1: header names {dup} more than once; give each column its own name")
    return fields


def _read_table(path: Path) -> _Table:
    """Split an atomic file into string columns, checking every line has the header's column count."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); re-encode it as UTF-8") from None
    rows = text.split("\n")
    if not rows[0].strip():
        raise DatasetError(f"{path}:1: empty header; the first line must list the columns as name:type")
    fields = _parse_header(path, rows[0].rstrip("\r"))
    width = len(fields)
    cells: list[list[str]] = []
    lines: list[int] = []
    for number, row in enumerate(rows[1:], start=2):
        row = row.rstrip("\r")
        if not row:
            continue  # blank lines (and the final newline) carry nothing
        parts = row.split("\t")
        if len(parts) != width:
            raise DatasetError(
                f"{path}:{number}: {len(parts)} tab-separated values but the header has {width} columns "
                f"({', '.join(f for f, _ in fields)}); fix the line (a stray tab inside a value, or a missing value)")
        cells.append(parts)
        lines.append(number)
    values = {f: [c[j] for c in cells] for j, (f, _) in enumerate(fields)}
    return _Table(path=path, fields=fields, values=values, lines=lines)


def _index_in_order(raw: list[str]) -> tuple[list[str], np.ndarray]:
    """Ids in order of first appearance, and each row's index into them."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(r, len(index)) for r in raw), dtype=np.int64, count=len(raw))
    return list(index), codes


def _item_index(inter: _Table, item_table: _Table | None) -> tuple[list[str], np.ndarray]:
    raw = inter.values["item_id"]
    if item_table is None:
        item_ids = sorted(set(raw))
    else:
        item_ids = item_table.values["item_id"]
        seen: dict[str, int] = {}
        for row, iid in enumerate(item_ids):
            if iid in seen:
                raise DatasetError(
                    f"{item_table.path}:{item_table.lines[row]}: item {iid!r} is listed again "
                    f"(first on line {item_table.lines[seen[iid]]}); each item must have exactly one row")
            seen[iid] = row
    position = {iid: i for i, iid in enumerate(item_ids)}
    codes = np.empty(len(raw), dtype=np.int64)
    for row, iid in enumerate(raw):
        code = position.get(iid)
        if code is None:
            raise DatasetError(
                f"{inter.path}:{inter.lines[row]}: item {iid!r} is not in {item_table.path.name}; "  # type: ignore[union-attr]
                f"add a row for it there or remove its interactions")
        codes[row] = code
    return list(item_ids), codes


def _load_feature(file: Path, n_items: int, order_source: Path) -> np.ndarray | None:
    """A feature matrix whose row i belongs to item i, or None when the file is absent."""
    if not file.is_file():
        return None
    try:
        feat = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DatasetError(f"{file}: not a readable .npy array ({err}); write it with numpy.save") from None
    if feat.ndim != 2:
        raise DatasetError(f"{file}: expected a 2-D array [n_items, dim], got shape {feat.shape}")
    if feat.shape[0] != n_items:
        raise DatasetError(
            f"{file}: {feat.shape[0]} rows but the dataset has {n_items} items (in the order of {order_source.name}); "
            f"row i must be the feature of item i — regenerate the file for this item list")
    if not np.issubdtype(feat.dtype, np.number):
        raise DatasetError(f"{file}: dtype {feat.dtype} is not numeric")
    feat = feat.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(feat).all(axis=1))
    if bad.size:
        raise DatasetError(f"{file}: row {bad[0]} (item {bad[0]}) holds NaN or inf ({bad.size} rows do); "
                           f"fix or drop those features")
    return feat

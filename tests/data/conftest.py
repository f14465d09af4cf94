"""Helpers for the dataset tests: write small RecBole atomic files by hand."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pytest

INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float", "watch_ms:float", "duration_ms:float")


def write_atomic(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """One tab-separated atomic file: header then rows, newline-terminated."""
    lines = ["\t".join(header)] + ["\t".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def write_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Write ``<tmp>/<name>/<name>.inter`` (and ``.item`` when given); returns the folder."""

    def write(inter: Sequence[Sequence[object]], item: Sequence[Sequence[object]] | None = None,
              inter_header: Sequence[str] = INTER_HEADER,
              item_header: Sequence[str] = ("item_id:token", "category:token", "title:token_seq"),
              name: str = "tiny") -> Path:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        write_atomic(folder / f"{name}.inter", inter_header, inter)
        if item is not None:
            write_atomic(folder / f"{name}.item", item_header, item)
        return folder

    return write

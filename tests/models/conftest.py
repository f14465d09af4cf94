"""Fixtures for the model tests: a small synthetic dataset and the graphs built from it.

Small enough that every test trains in a second or two, structured enough
(categories, modal features correlated with them) that a loss either does
its job or visibly does not.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamstream.data.datagen import SynthConfig, generate
from dreamstream.data.recbole import Dataset, load_dataset
from dreamstream.data.split import Split, leave_last_out
from models.graphs import normalized_adjacency, user_mean_matrix

SMALL = SynthConfig(n_users=120, n_items=150, n_categories=4, events_per_user=(12, 30), text_dim=24, visual_dim=12,
                    seed=3)


@dataclass(frozen=True)
class Small:
    path: Path
    ds: Dataset
    split: Split
    adjacency: torch.Tensor
    user_mean: torch.Tensor

    @property
    def features(self) -> dict[str, np.ndarray | None]:
        return {"text": self.ds.text_feat, "visual": self.ds.image_feat}


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("small-synthetic"), SMALL, progress=False)


@pytest.fixture(scope="session")
def small(small_data_dir: Path) -> Small:
    ds = load_dataset(small_data_dir)
    split = leave_last_out(ds)
    pairs = split.train_positive_pairs()
    return Small(small_data_dir, ds, split, normalized_adjacency(*pairs, ds.n_users, ds.n_items),
                 user_mean_matrix(*pairs, ds.n_users, ds.n_items))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """The machine's two cores are shared: one intra-op thread is faster than two fighting other processes."""
    torch.set_num_threads(1)

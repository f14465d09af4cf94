"""The two graphs DREAM propagates over, as torch sparse tensors.

* the user–item bipartite graph, symmetrically normalised
  ``D^-1/2 A D^-1/2`` over ``U + I`` nodes (LightGCN, He et al. 2020), and its
  row-normalised user→item block, which turns item vectors into the mean
  vector of what each user interacted with;
* the item–item relation graph: for every item its ``k`` most
  cosine-similar other items by raw modal features (FREEDOM / MGCN build it
  the same way), symmetrically normalised.

Why a module of its own: the baseline, DREAM, and the tests all build these,
and the normalisation is the one place where an off-by-one in degrees
silently ruins a graph model.

Deviation from MGCN/FREEDOM: their kNN keeps the item itself among its ``k``
neighbours (``topk`` of a similarity matrix whose diagonal is 1); here self is
excluded, so every item has exactly ``k`` *other* neighbours, and DREAM keeps
the item's own vector through a layer mean instead.
"""
from __future__ import annotations

import numpy as np
import torch


def _sparse(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    indices = torch.from_numpy(np.vstack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(values.astype(np.float32)), shape, check_invariants=True).coalesce()


def _unique_pairs(users: np.ndarray, items: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated (user, item) interactions: the graph has one edge per pair."""
    keys = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
    return keys // n_items, keys % n_items


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the bipartite graph; nodes are users then items. Shape [U+I, U+I]."""
    u, i = _unique_pairs(users, items, n_items)
    rows = np.concatenate([u, i + n_users])
    cols = np.concatenate([i + n_users, u])
    degree = np.bincount(rows, minlength=n_users + n_items).astype(np.float64)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1.0)), 0.0)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    n = n_users + n_items
    return _sparse(rows, cols, values, (n, n))


def user_mean_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """Row-normalised user→item matrix [U, I]: ``R @ item_vecs`` = mean of each user's items.

    A user with no interactions gets a zero row (and so a zero modal vector).
    """
    u, i = _unique_pairs(users, items, n_items)
    degree = np.bincount(u, minlength=n_users).astype(np.float64)
    values = 1.0 / degree[u]
    return _sparse(u, i, values, (n_users, n_items))


def knn_neighbours(features: torch.Tensor | np.ndarray, k: int, chunk: int = 2048) -> torch.Tensor:
    """Indices [N, k] of each row's ``k`` most cosine-similar *other* rows.

    Exact, in row chunks so memory stays at ``chunk x N``. With fewer than
    ``k + 1`` rows, ``k`` is cut to ``N - 1``.
    """
    x = torch.as_tensor(features, dtype=torch.float32)
    n = x.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return torch.empty((n, 0), dtype=torch.int64)
    x = torch.nn.functional.normalize(x, dim=1)
    out = []
    for start in range(0, n, chunk):
        block = x[start:start + chunk] @ x.T  # [c, N]
        rows = torch.arange(block.shape[0])
        block[rows, rows + start] = -float("inf")  # never your own neighbour
        out.append(block.topk(k, dim=1).indices)
    return torch.cat(out)


def knn_adjacency(neighbours: torch.Tensor, n: int) -> torch.Tensor:
    """Symmetrically normalised sparse [N, N] graph from kNN indices (edge i -> its neighbours).

    ``D_out^-1/2 A D_in^-1/2``: out-degree is k for every item; dividing by the
    in-degree too keeps a hub item (everyone's neighbour) from dominating. FREEDOM
    uses the row sums on both sides, which here would be a flat ``1/k``.
    """
    k = neighbours.shape[1]
    rows = np.repeat(np.arange(n), k)
    cols = neighbours.reshape(-1).numpy()
    degree = np.bincount(rows, minlength=n).astype(np.float64) + 1e-7
    inv_sqrt = 1.0 / np.sqrt(degree)
    in_degree = np.bincount(cols, minlength=n).astype(np.float64) + 1e-7
    values = inv_sqrt[rows] * (1.0 / np.sqrt(in_degree))[cols]
    return _sparse(rows, cols, values, (n, n))

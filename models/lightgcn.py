"""LightGCN — the behaviour line of DREAM, and on its own the honest baseline.

Paper: He et al., "LightGCN: Simplifying and Powering Graph Convolution
Network for Recommendation", SIGIR 2020 (arXiv 2002.02126). Reference code
read for facts: MMRec ``src/models/lightgcn.py``.

Deviation: scores are ``<user, normalize(item)>``. Every other part of
dreamstream lives in a space of unit item vectors (Faiss inner product,
DreamUMM, OPAL), so the model is trained the way it is served: the user
vector's norm is free (a per-user confidence), the item's is not.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LightGCNConfig:
    dim: int = 64          # D: the one embedding space every part of dreamstream shares
    n_layers: int = 2      # propagation layers; the output is the mean over layers 0..L
    w_reg: float = 1e-4    # L2 on the batch's layer-0 embeddings, divided by batch size (as MMRec)

    def to_dict(self) -> dict:
        return asdict(self)


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: -log sigmoid(s+ - s-), averaged. Shapes [B]."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def l2_reg(*embeddings: torch.Tensor) -> torch.Tensor:
    """Half the squared norm of the given rows, per batch row (MMRec's EmbLoss)."""
    batch = embeddings[0].shape[0]
    return sum(0.5 * e.pow(2).sum() for e in embeddings) / batch


class BehaviourLine(nn.Module):
    """ID embeddings propagated over the normalised user–item graph (no weights, no nonlinearity)."""

    def __init__(self, n_users: int, n_items: int, adjacency: torch.Tensor, dim: int, n_layers: int):
        super().__init__()
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        self.register_buffer("adjacency", adjacency, persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated (users [U,D], items [I,D]): the mean of layers 0..L."""
        x = torch.cat([self.user_emb.weight, self.item_emb.weight])  # [U+I, D]
        layers = [x]
        for _ in range(self.n_layers):
            x = torch.sparse.mm(self.adjacency, x)
            layers.append(x)
        out = torch.stack(layers).mean(dim=0)
        return out[: self.n_users], out[self.n_users:]


class LightGCN(nn.Module):
    """The behaviour line alone, trained with BPR + L2, scored against unit item vectors."""

    def __init__(self, n_users: int, n_items: int, adjacency: torch.Tensor, config: LightGCNConfig = LightGCNConfig()):
        super().__init__()
        self.config = config
        self.line = BehaviourLine(n_users, n_items, adjacency, config.dim, config.n_layers)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (users [U,D], items [I,D] unit rows) — what is saved and served."""
        users, items = self.line()
        return users, F.normalize(items, dim=1)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BPR over (user, positive, negative) index batches [B] plus L2; returns (total, parts)."""
        u, i = self.embeddings()
        bpr = bpr_loss((u[users] * i[pos]).sum(-1), (u[users] * i[neg]).sum(-1))
        reg = l2_reg(self.line.user_emb(users), self.line.item_emb(pos), self.line.item_emb(neg))
        parts = {"bpr": bpr, "reg": self.config.w_reg * reg}
        return parts["bpr"] + parts["reg"], parts

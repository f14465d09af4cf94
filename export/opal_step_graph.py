"""OPAL's streaming step written for onnxruntime: the same function as ``Opal.step``, in fewer passes.

``Opal.step`` is written to read like the paper and to share code with
training. Exported as is, most of its ONNX time went to element-wise ops
over [B, K, D] tensors, not to the matrix products: ``F.normalize`` becomes
ReduceL2 + Clip + Expand + Div, the GRU cell projects the same item twice,
the readout MLP runs as batched 3-D MatMuls. This module computes the same
outputs with one norm and one division per normalisation, one input
projection shared by the interest's and the global state's GRU step, and
2-D Gemms for the MLPs. The exporter validates it against ``Opal.step``
(``export.onnx_export.validate_function``), so the two cannot drift apart
unnoticed.
"""
from __future__ import annotations

import torch
from torch import nn

from models.opal import Opal, OpalStep

EPS = 1e-12  # F.normalize's


def unit(x: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / max(|x|, eps), |x|) along the last axis: one reduction and one broadcast division."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / torch.clamp(norm, min=eps), norm


class OpalStepGraph(nn.Module):
    """``Opal.step`` with the same signature and outputs, for export."""

    def __init__(self, opal: Opal) -> None:
        super().__init__()
        self.opal = opal

    def gru(self, item: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """``nn.GRUCell`` (no bias) on states [S, B, H] that all take the same input item [B, D]."""
        cell, h = self.opal.cell, self.opal.config.hidden
        gi = (item @ cell.weight_ih.T).unsqueeze(0)                 # [1, B, 3H]: projected once
        gh = states @ cell.weight_hh.T                              # [S, B, 3H]
        r = torch.sigmoid(gi[..., :h] + gh[..., :h])
        z = torch.sigmoid(gi[..., h:2 * h] + gh[..., h:2 * h])
        n = torch.tanh(gi[..., 2 * h:] + r * gh[..., 2 * h:])
        return n + z * (states - n)                                 # (1 - z) * n + z * h

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """The readout MLP on [..., H] rows as 2-D Gemms."""
        first, _, second = self.opal.mlp
        rows = x.reshape(-1, x.shape[-1])
        out = torch.tanh(rows @ first.weight.T + first.bias) @ second.weight.T + second.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def forward(self, item: torch.Tensor, hidden: torch.Tensor, glob: torch.Tensor, soft: torch.Tensor,
                decay: torch.Tensor) -> OpalStep:
        opal, k = self.opal, self.opal.config.interests
        _, probs, assign = opal.assignment(item)                                  # as in training: same argmax
        onehot = (torch.arange(k, device=item.device).unsqueeze(0) == assign.unsqueeze(1)).unsqueeze(2)  # [B,K,1]
        rows = torch.arange(item.shape[0], device=item.device) * k + assign
        mine = hidden.reshape(-1, hidden.shape[2]).index_select(0, rows)          # [B, H] = h[assign]
        stepped = self.gru(item, torch.stack([mine, glob]))                       # [2, B, H]
        hidden_out = torch.where(onehot, stepped[0].unsqueeze(1), hidden)
        glob_out = stepped[1]
        soft_out = decay.unsqueeze(2) * soft + probs.unsqueeze(2) * item.unsqueeze(1)
        cats = opal.categories()                                                  # [K, D]
        soft_unit, soft_norm = unit(soft_out)
        soft_part = torch.where(soft_norm > 0, soft_unit, cats)
        seq_seen = torch.linalg.vector_norm(hidden_out, ord=1, dim=2, keepdim=True) > 0
        seq_part = torch.where(seq_seen, unit(self.mlp(hidden_out))[0], cats)
        interests = unit(soft_part + seq_part, 2 * EPS)[0]                        # = normalize(0.5 a + 0.5 b)
        user = unit(self.mlp(glob_out))[0]                                        # [B, D]
        weights = torch.softmax((interests * user.unsqueeze(1)).sum(dim=2) / opal.config.tau, dim=1)
        return OpalStep(hidden_out, glob_out, soft_out, interests, weights, assign, probs)

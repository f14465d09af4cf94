"""DreamUMM: the user as the closed-form point of the item space (arXiv 2410.03538, Lin et al., 2024).

The paper's regular-user model finds the user representation that best
aligns with the (multimodal) representations of the videos the user engaged
with; with engagement weights ``r`` and time decay ``g`` the optimum on the
unit sphere is the normalised weighted sum, kept incrementally::

    s <- g*s + r*v,   u = s / |s|

Candidate-DreamUMM (users with little history): while a user has fewer than
``cold_min_positive`` positive events, ``u`` is blended with the normalised
sum of the impressed candidates' vectors by confidence
``c = n_pos / cold_min_positive``: ``u = normalize(c*u + (1-c)*cand)``. The
blend has no parameters and runs in the worker in numpy: its one
implementation is :func:`dreamstream.dreamumm_ref.candidate_blend`, which
:func:`candidate_dreamumm` calls.

Deviations: the paper's space comes from an LLM-distilled multimodal
encoder; here it is DREAM's item space (behaviour + modal lines), so users,
items and OPAL interests share one Faiss index. No trained parameters: the
module exists so the step ships as ONNX with the same contract as OPAL.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dreamstream import dreamumm_ref


class DreamUMMStep(nn.Module):
    """``(state [B,D], item [B,D], weight [B,1], decay [B,1]) -> (state_out [B,D], user [B,D])``."""

    def forward(self, state: torch.Tensor, item: torch.Tensor, weight: torch.Tensor, decay: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        state_out = decay * state + weight * item          # [B, D]
        return state_out, F.normalize(state_out, dim=1)    # zero state -> zero user


def candidate_dreamumm(user: torch.Tensor, candidates: torch.Tensor, n_positive: torch.Tensor,
                       cold_min_positive: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate-DreamUMM for torch callers: delegates to the numpy reference the worker uses."""
    blended, cold = dreamumm_ref.candidate_blend(user.detach().cpu().numpy(), candidates.detach().cpu().numpy(),
                                                 n_positive.detach().cpu().numpy(), cold_min_positive)
    return torch.from_numpy(blended), torch.from_numpy(np.asarray(cold))

"""Saving and loading a model as ``{"config", "state_dict"}``: the checkpoint format of every model file.

The config travels with the weights (as nanoGPT does) so a checkpoint rebuilds
its model without the training command's flags.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def save_module(model: nn.Module, path: str | Path) -> None:
    """Write the model's config (``model.config.to_dict()``) and weights."""
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, path)


def load_module(path: Path, build: Callable[[dict[str, Any]], M]) -> M:
    """Rebuild a model from a checkpoint file with ``build(config_dict)``, in eval mode."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dreamstream train --out {path.parent}` first")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = build(blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model.eval()

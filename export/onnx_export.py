"""PyTorch -> ONNX for the three functions of the bundle contract, validated against PyTorch.

Every input and output gets a dynamic batch axis ``B`` (state tensors
included: the worker batches users). The legacy TorchScript exporter
(``dynamo=False``) handles these small graphs exactly and is what torch 2.13
still ships; each file is checked with ``onnx.checker`` and then run by
onnxruntime against the module on random inputs at batch 1 and 37.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from dreamstream.bundle import CONTRACT, Function

VALIDATION_BATCHES = (1, 37)


class BundleExportError(RuntimeError):
    """An exported function disagrees with PyTorch or with the contract."""


def random_inputs(function: Function, sizes: Mapping[str, int], batch: int, rng: np.random.Generator
                  ) -> dict[str, np.ndarray]:
    """Random feeds for a contract function: state-like inputs small, item-like inputs unit rows."""
    feeds = {}
    for port in function.inputs:
        shape = (batch,) + tuple(sizes[s] for s in port.shape[1:])
        x = rng.standard_normal(shape).astype(np.float32)
        if port.name == "item":
            x /= np.linalg.norm(x, axis=-1, keepdims=True)
        elif port.name in ("hidden", "global"):
            x *= 0.3
        elif port.name == "decay":
            x = rng.uniform(0, 1, shape).astype(np.float32)
        elif port.name == "weight":
            x = rng.uniform(-1, 2, shape).astype(np.float32)
        feeds[port.name] = x
    return feeds


def export_function(module: nn.Module, function: Function, sizes: Mapping[str, int], path: Path,
                    forward: Callable | None = None) -> None:
    """Export ``module`` (or ``forward``, a callable over its tensors) as ``function`` to ``path``."""
    import onnx

    class _Wrapped(nn.Module):
        """Fixes the positional signature to the contract's input order."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *args: torch.Tensor):
            out = (forward or self.inner)(*args)
            return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    wrapped = _Wrapped().eval()
    example = random_inputs(function, sizes, 2, np.random.default_rng(0))
    args = tuple(torch.from_numpy(example[p.name]) for p in function.inputs)
    axes = {p.name: {0: "B"} for p in function.inputs + function.outputs}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped, args, str(path),
            input_names=[p.name for p in function.inputs],
            output_names=[p.name for p in function.outputs],
            dynamic_axes=axes, opset_version=function.opset, do_constant_folding=True, dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def validate_function(module: Callable, function: Function, sizes: Mapping[str, int], path: Path,
                      seed: int = 0) -> float:
    """Largest |onnx - torch| over random inputs at batch 1 and 37; raises when above the tolerance."""
    from dreamstream.bundle import _session, verify_signature

    session = _session(path)
    verify_signature(function, session, sizes)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch in VALIDATION_BATCHES:
        feeds = random_inputs(function, sizes, batch, rng)
        with torch.no_grad():
            ref = module(*(torch.from_numpy(feeds[p.name]) for p in function.inputs))
        ref = tuple(ref) if isinstance(ref, (tuple, list)) else (ref,)
        got = session.run(None, feeds)
        for port, r, g in zip(function.outputs, ref, got):
            r = r.numpy()
            if g.shape != r.shape or g.dtype != r.dtype:
                raise BundleExportError(f"{path.name}: output {port.name} is {g.dtype}{g.shape} at batch {batch}, "
                                        f"PyTorch gives {r.dtype}{r.shape}")
            err = float(np.abs(g.astype(np.float64) - r.astype(np.float64)).max()) if g.size else 0.0
            worst = max(worst, err)
            if err > function.tolerance:
                raise BundleExportError(f"{path.name}: output {port.name} differs from PyTorch by {err:.2e} "
                                        f"at batch {batch} (tolerance {function.tolerance:.0e})")
    return worst


def export_all(modules: Mapping[str, nn.Module], sizes: Mapping[str, int], folder: Path,
               graphs: Mapping[str, nn.Module] | None = None) -> dict[str, float]:
    """Export and validate every contract function into ``folder``; returns the max error per file.

    ``graphs`` optionally gives, per function, a module written for
    onnxruntime (``export.opal_step_graph``) that is exported instead of the
    model's own; the file is still validated against ``modules[name]``.
    """
    errors = {}
    for name, function in CONTRACT.items():
        module = modules[name].eval()
        graph = (graphs or {}).get(name, module).eval()
        path = folder / function.file
        export_function(graph, function, sizes, path)
        errors[function.file] = validate_function(module, function, sizes, path)
    return errors

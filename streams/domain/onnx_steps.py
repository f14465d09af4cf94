"""Running the bundle's ONNX step functions over a batch's rows: in cache-sized slices, written in place.

The step functions are per row, so slicing a batch is exact; what it buys is
speed (tensors that stay in cache, outputs written straight into the full
arrays). ``dreamstream bench`` measures it through ``run_chunked``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

ONNX_CHUNK = 512  # rows per session.run: at 4,096 rows the tensors fell out of cache (8.8 us/event vs 4.3-4.8 at 512-1,024)


def run_chunked(session: Any, outputs: list[str] | None, feeds: dict[str, np.ndarray], chunk: int = ONNX_CHUNK
                ) -> list[np.ndarray]:
    """``session.run`` over row slices of at most ``chunk``: the step functions are per row, so this is exact.

    The first slice learns the output shapes; the others write straight into
    slices of the full outputs through an I/O binding. Concatenating the
    slices' outputs instead cost ~1 µs per event at 8,192 rows (a copy of
    every output, ~3 KB per row).
    """
    n = len(next(iter(feeds.values())))
    if n <= chunk:
        return session.run(outputs, feeds)
    names = outputs or [o.name for o in session.get_outputs()]
    first = session.run(names, {k: v[:chunk] for k, v in feeds.items()})
    full = [np.empty((n, *part.shape[1:]), part.dtype) for part in first]
    for out, part in zip(full, first):
        out[:chunk] = part
    binding = session.io_binding()
    for i in range(chunk, n, chunk):
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value[i:i + chunk]))
        for name, out in zip(names, full):
            rows = out[i:i + chunk]  # a contiguous view: outputs are C-ordered with rows first
            binding.bind_output(name, "cpu", 0, out.dtype, list(rows.shape), rows.ctypes.data)
        session.run_with_iobinding(binding)
    return full


def run_step(session: Any, outputs: list[str], glob: np.ndarray | None = None, **feeds: np.ndarray) -> list[np.ndarray]:
    if glob is not None:
        feeds["global"] = glob
    return run_chunked(session, outputs, feeds)

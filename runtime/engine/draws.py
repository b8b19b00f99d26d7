"""Random arrays created in the run's dtype, with the values of one float64 draw cast to it.

A Generator fills an array element by element from its bit stream, so drawing n values in pieces
gives the same values, in the same order, as drawing them at once. These helpers draw float64
values `CHUNK` at a time and cast each piece into the result: a float32 run's initial parameters and
batches are bit-identical to `rng.normal(..., shape).astype(float32)` while the float64 copy never
exists in full (it would double the peak memory of a large model: tests/runtime/engine/test_draws.py).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

CHUNK = 1 << 20  # float64 values drawn at once: 8 MiB


def filled(shape: tuple[int, ...], dtype, fill: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """An array of `shape` and `dtype` whose flat (C-order) entries [s, s + n) are `fill(s, n)`
    (float64 values, cast on assignment), filled in order, at most CHUNK at a time."""
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1)
    for s in range(0, flat.size, CHUNK):
        n = min(CHUNK, flat.size - s)
        flat[s:s + n] = fill(s, n)
    return out


def normal(rng: np.random.Generator, loc: float, scale: float, shape: tuple[int, ...], dtype) -> np.ndarray:
    """`rng.normal(loc, scale, shape).astype(dtype)` without the float64 array."""
    return filled(shape, dtype, lambda s, n: rng.normal(loc, scale, n))


def uniform(rng: np.random.Generator, low: float, high: float, shape: tuple[int, ...], dtype) -> np.ndarray:
    """`rng.uniform(low, high, shape).astype(dtype)` without the float64 array."""
    return filled(shape, dtype, lambda s, n: rng.uniform(low, high, n))


def rows(shape: tuple[int, ...], dtype, fill: Callable[[int], np.ndarray]) -> np.ndarray:
    """An array whose last-axis rows are computed in blocks: `fill(k)` returns the next k rows as
    float64 (k, shape[-1]), cast on assignment (for row-wise transforms of a draw, e.g. unit rows)."""
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1, shape[-1]) if shape[-1] else out.reshape(-1, 0)
    step = max(1, CHUNK // max(shape[-1], 1))
    for s in range(0, flat.shape[0], step):
        k = min(step, flat.shape[0] - s)
        flat[s:s + k] = fill(k)
    return out

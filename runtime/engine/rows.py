"""Rows with an all-zero input, dropped where that is exact.

Where a kind's model says an all-zero input row is inert (models.Model.zero_input_inert: every
decomposed matrix then gets a zero input, so the row's output is the target's under any mask and
its importances are those of a zero input), a step can work on the rows with a nonzero input plus
one all-zero row that stands for the rest (TMS 5-2 at p = 0.05: ~77 % of the rows dropped). SPD
and VPD use `compact_index`; APD's fused path has its own variant (methods/apd/fused.py).
"""
from __future__ import annotations

import numpy as np


def nonzero_rows(x: np.ndarray) -> np.ndarray:
    """(I, B, n) -> (I, B) bool: rows with a nonzero entry (sum of |x| against ones: one GEMV
    instead of a reduction over a short trailing axis; a sum of non-negative numbers is zero only
    if they all are)."""
    return np.matmul(np.abs(x), np.ones(x.shape[-1], dtype=x.dtype)) > 0


def compact_index(x: np.ndarray) -> tuple[np.ndarray, int]:
    """(idx (I, R), R): per replicate the indices of its rows with a nonzero input, in order, then
    all-zero rows up to R = the largest count + 1, so every replicate keeps R rows and the last of
    them is an all-zero row. R = B (nothing dropped) when that is not fewer than B rows."""
    nz = nonzero_rows(x)
    B = x.shape[1]
    R = int(nz.sum(axis=1).max()) + 1
    if R >= B:
        return np.broadcast_to(np.arange(B), nz.shape), B
    order = np.argsort(~nz, axis=1, kind="stable")
    return np.ascontiguousarray(order[:, :R]), R


def row_weights(idx: np.ndarray, B: int, dtype) -> np.ndarray:
    """(I, R) weights of the kept rows in a mean over all B rows: 1 each, and the last (an all-zero
    row) also stands for the B - R rows dropped."""
    w = np.ones(idx.shape, dtype=dtype)
    w[:, -1] += B - idx.shape[1]
    return w

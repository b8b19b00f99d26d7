"""Gated-function analyses on plain arrays (paper App. B.1, Figs. 12-13): the one-hot control-bit
evaluation grid, which function each target neuron / weight belongs to, and which component
carries each function."""
from __future__ import annotations

import numpy as np

SEPARATION_THRESHOLD = 0.5  # a component "carries" a function if it is chosen on >= half its inputs


def function_grid(functions: int, low: float, high: float, points: int, replicates: int,
                  dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(grid (P,), inputs (I, functions * P, 1 + functions)): block i holds x over the grid with
    only control bit i on."""
    xs = np.linspace(low, high, points)
    x = np.zeros((functions, points, 1 + functions))
    x[:, :, 0] = xs
    x[np.arange(functions), :, 1 + np.arange(functions)] = 1.0
    x = np.broadcast_to(x.reshape(functions * points, 1 + functions), (replicates, functions * points, 1 + functions))
    return xs, np.ascontiguousarray(x, dtype=dtype)


def neuron_functions(W_in: np.ndarray, functions: int) -> np.ndarray:
    """(d_mlp,) the function each target neuron computes: the control bit it reads (rows 1..n of
    W_in (D, d_mlp)); -1 for a neuron that reads no control bit."""
    ctrl = np.abs(W_in[1:1 + functions])
    return np.where(ctrl.max(axis=0) > 0, np.argmax(ctrl, axis=0), -1)


def edge_functions(W_target: np.ndarray, neuron_fn: np.ndarray, neuron_axis: int) -> np.ndarray:
    """Function label of every weight of a target matrix (Fig. 13 colours): the function of the
    neuron the weight touches, or -1 where the target weight is zero."""
    labels = neuron_fn[None, :] if neuron_axis == 1 else neuron_fn[:, None]
    return np.where(W_target != 0, np.broadcast_to(labels, W_target.shape), -1)


def activity(mask: np.ndarray) -> np.ndarray:
    """(functions, C) fraction of a function's grid points on which each component is selected;
    mask (functions, P, C) bool."""
    return np.asarray(mask, dtype=np.float64).mean(axis=1)


def attribution_share(attr: np.ndarray) -> np.ndarray:
    """(functions, C) mean over grid points of each component's share of the attribution;
    attr (functions, P, C). Points with zero total attribution are skipped."""
    attr = np.asarray(attr, dtype=np.float64)
    tot = attr.sum(axis=-1, keepdims=True)
    share = np.divide(attr, tot, out=np.zeros_like(attr), where=tot > 0)
    n = np.maximum((tot[..., 0] > 0).sum(axis=1, keepdims=True), 1)
    return share.sum(axis=1) / n


def separated_functions(freq: np.ndarray, threshold: float = SEPARATION_THRESHOLD) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, assignment (functions,), separated (functions,) bool).

    Function i is assigned its most frequently selected component c_i; it is separated if c_i
    carries it (freq[i, c_i] >= threshold) and carries no other function (freq[j, c_i] < threshold
    for every j != i)."""
    n = freq.shape[0]
    assign = np.argmax(freq, axis=1)
    sep = np.zeros(n, dtype=bool)
    for i in range(n):
        c = assign[i]
        others = np.delete(freq[:, c], i)
        sep[i] = freq[i, c] >= threshold and bool(np.all(others < threshold))
    return int(sep.sum()), assign, sep

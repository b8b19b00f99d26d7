"""Ground-truth CI metrics the authors log for toys (notes §6). Both take one site's lower CI on a
probe batch as a plain (rows, C) matrix and return an error count (0 = the ground truth).

`identity_probe` is the probe of `identity_ci_error`: one active feature per row, value 0.75.
"""
from __future__ import annotations

import numpy as np


def identity_probe(n_features: int, value: float = 0.75, replicates: int = 1, dtype=np.float32) -> np.ndarray:
    """(I, n_features, n_features) inputs: row i has feature i at `value`, every other at 0."""
    return np.broadcast_to(value * np.eye(n_features, dtype=dtype), (replicates, n_features, n_features)).copy()


def identity_ci_error(ci: np.ndarray, tol: float = 0.1) -> int:
    """Errors of a (n_features, C) CI against "each feature has its own subcomponent".

    Columns are matched to rows by the Hungarian assignment maximising the matched CI (minimising
    -ci); errors = entries > tol off the matched diagonal (unmatched, extra columns included) +
    matched diagonal entries < 1 - tol. With fewer columns than rows, a row left without a column
    counts one error (its missing diagonal) besides its entries > tol."""
    from scipy.optimize import linear_sum_assignment  # lazy: the runtime imports without scipy

    ci = np.asarray(ci, dtype=np.float64)
    rows, cols = linear_sum_assignment(-ci)
    on_diag = np.zeros(ci.shape, dtype=bool)
    on_diag[rows, cols] = True
    errors = np.count_nonzero((ci > tol) & ~on_diag) + np.count_nonzero(ci[rows, cols] < 1.0 - tol)
    return int(errors + ci.shape[0] - rows.size)


def dense_ci_error(ci: np.ndarray, k: int, tol: float = 0.1) -> int:
    """Errors of a (rows, C) CI against "k subcomponents carry the site together" (a dense block).

    Columns sorted by their total CI, largest first: each of the first k needs an entry >= 1 - tol
    (one error per column that has none; a column missing because C < k counts too), and every
    entry > tol in the columns after the first k is an error."""
    ci = np.asarray(ci, dtype=np.float64)
    order = np.argsort(-ci.sum(axis=0), kind="stable")
    top, rest = ci[:, order[:k]], ci[:, order[k:]]
    missing = max(k - ci.shape[1], 0)
    return int(np.count_nonzero(top.max(axis=0, initial=-np.inf) < 1.0 - tol) + missing
               + np.count_nonzero(rest > tol))

"""Ground-truth CI metrics (VPD notes §6), for every method: `identity_ci_error` and
`dense_ci_error` of a run, against the ground truth its kind states (`KindSpec.ci_truth`).

Both error counts take importances on one-hot probes (x_f = 0.75, `causal.ONEHOT_VALUE`) as a
plain (rows, C) matrix (0 = the ground truth). What the importances are is the method's
(`RunAnalysis.probe_importance`): SPD and VPD's causal importances per matrix; APD's attributions,
normalised per probe so the largest is 1, one table for every matrix (an APD component spans them
all), which only the identity truth applies to.
"""
from __future__ import annotations

import numpy as np

from ..spec import kind_spec
from .metrics import COMPUTED


TOL = 0.1  # the authors' logging tolerance


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


def ci_errors(an) -> dict[str, np.ndarray]:
    """{"identity_ci_error", "dense_ci_error"}: (I,) error counts of the run's importances on
    one-hot probes, summed over the kind's blocks of each form (a form the kind has no block of,
    or the method cannot be judged on, is absent)."""
    truths = kind_spec(an.arch.kind).ci_truth(an.arch)
    table = an.probe_importance()  # name -> (I, F, C)
    out: dict[str, list] = {}
    for truth in truths:
        if an.importance != "causal":
            if truth.form == "identity" and "identity_ci_error" not in out:
                out["identity_ci_error"] = [identity_ci_error(t, TOL) for t in table["*"]]
            continue
        ci = np.concatenate([table[name] for name in truth.matrices], axis=-1)  # (I, F, sum C)
        errors = [identity_ci_error(t, TOL) if truth.form == "identity" else dense_ci_error(t, truth.k, TOL) for t in ci]
        key = f"{truth.form}_ci_error"
        out[key] = [a + b for a, b in zip(out[key], errors)] if key in out else errors
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _cached_errors(an) -> dict:
    if "ci_errors" not in an._cache:
        an._cache["ci_errors"] = ci_errors(an)
    return an._cache["ci_errors"]


COMPUTED.update(
    identity_ci_error=lambda an: _cached_errors(an).get("identity_ci_error"),
    dense_ci_error=lambda an: _cached_errors(an).get("dense_ci_error"),
)

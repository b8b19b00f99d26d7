"""Gated-function analyses (paper App. B.1, Figs. 12-13): the one-hot control-bit evaluation grid,
which function each target neuron / weight belongs to, and which component carries each function;
plain-array functions first, then the run-level part (`GatedAnalysis`) for attribution methods
(APD: per-sample top-k) and causal-importance methods (SPD: causal importances)."""
from __future__ import annotations

import numpy as np

from ...analysis.core import KIND_ANALYSES, KindAnalysis, _cached
from ...analysis.metrics import COMPUTED
from ...engine.data import value_range
from ...methods.apd.attributions import sample_topk_mask
from ..resid_mlp.analysis import residual_panel
from .model import true_functions

GATED_POINTS = 200  # x grid of the gated-function panels (Fig. 12)

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


def gated_separation(serves: np.ndarray) -> tuple[int, np.ndarray]:
    """(count, separated (functions,)) from serves (functions, subcomponents) bool."""
    n_serving = serves.sum(axis=0)
    sep = np.array([bool(np.any(serves[i] & (n_serving == 1))) and not np.any(serves[i] & (n_serving > 1))
                    for i in range(serves.shape[0])])
    return int(sep.sum()), sep




class GatedAnalysis(KindAnalysis):
    """Gated-network measures of a run (`an`: the method's analysis)."""

    def panel(self, name: str, P: np.ndarray) -> tuple[str, np.ndarray]:
        return residual_panel(name, P)

    def probes(self, value: float) -> tuple:
        """One-hot control bits over an x grid, one table row per function (mean over x)."""
        an = self.an
        n_f = an.arch.functions
        lo, hi = value_range(an.arch, an.exp.data)
        _, x = function_grid(n_f, lo, hi, GATED_POINTS, an.I, an.dtype)
        return (x, lambda t: t.reshape(n_f, GATED_POINTS, t.shape[-1]).mean(axis=1),
                "function (control bit on,\nmean over x)", "mean causal importance per function")

    @_cached
    def gated(self) -> dict:
        """Fig. 12 / separation: one-hot control bits over an x grid. Per function and point the
        target output, the APD top-k output (per-sample top-1 - one function is active, so one
        component should carry it - or the spec's k in per-sample mode), the full APD output and the
        true function; the selection frequency (I, functions, C) and attribution share."""
        an = self.an
        if an.importance == "causal":
            return self._causal_gated()
        arch = an.arch
        n_f, P, I, C = arch.functions, GATED_POINTS, an.I, an.C
        lo, hi = value_range(arch, an.exp.data)
        grid, x = function_grid(n_f, lo, hi, P, I, an.dtype)
        tgt = an.forward(x)
        a = an.attr(x, tgt)
        k = an.topk.k(x.shape[1]) if an.topk is not None and an.topk.mode == "sample" else 1
        mask = sample_topk_mask(a, min(k, C))
        y_t = np.asarray(tgt.y, dtype=np.float64)[..., 0].reshape(I, n_f, P)
        y_k = an.masked(x, mask)[..., 0].reshape(I, n_f, P)
        y_full = an.masked(x, None)[..., 0].reshape(I, n_f, P)
        true = None
        if "coefficients" in an.extras:
            tf = true_functions(an.extras, x).reshape(I, n_f, P, n_f)
            true = tf[:, np.arange(n_f), :, np.arange(n_f)].transpose(1, 0, 2)
        freq = np.stack([activity(mask[i].reshape(n_f, P, C)) for i in range(I)])
        share = np.stack([attribution_share(a[i].reshape(n_f, P, C)) for i in range(I)])
        sep = [separated_functions(fr) for fr in freq]
        return {"grid": grid, "target": y_t, "topk": y_k, "full": y_full, "true": true, "k": k,
                "activity": freq, "share": share,
                "separated": np.array([s[0] for s in sep]), "assignment": np.stack([s[1] for s in sep]),
                "separated_mask": np.stack([s[2] for s in sep]),
                "function_mse": np.mean((y_k - y_t) ** 2, axis=(1, 2))}

    def _causal_gated(self) -> dict:
        """Fig. 12 / separation with causal importances: one-hot control bits over an x grid."""
        an = self.an
        arch = an.arch
        n_f, P, I = arch.functions, GATED_POINTS, an.I
        lo, hi = value_range(arch, an.exp.data)
        grid, x = function_grid(n_f, lo, hi, P, I, an.dtype)
        tgt, h, g = an.causal_importances(x)
        y_t = np.asarray(tgt.y, dtype=np.float64)[..., 0].reshape(I, n_f, P)
        y_ci = an.masked(x, g, tgt, h)[..., 0].reshape(I, n_f, P)
        y_full = an.masked(x, None, tgt, h)[..., 0].reshape(I, n_f, P)
        true = None
        if "coefficients" in an.extras:
            tf = true_functions(an.extras, x).reshape(I, n_f, P, n_f)
            true = tf[:, np.arange(n_f), :, np.arange(n_f)].transpose(1, 0, 2)
        activity = np.concatenate([(g[n] > an.ci_active).reshape(I, n_f, P, an.C).mean(axis=2) for n in an.names],
                                  axis=-1)  # (I, functions, L C)
        seps = [gated_separation(a >= SEPARATION_THRESHOLD) for a in activity]
        return {"grid": grid, "target": y_t, "topk": y_ci, "full": y_full, "true": true, "activity": activity,
                "separated": np.array([s[0] for s in seps]), "separated_mask": np.stack([s[1] for s in seps]),
                "function_mse": np.mean((y_ci - y_t) ** 2, axis=(1, 2))}



KIND_ANALYSES["gated"] = GatedAnalysis

COMPUTED.update(
    separated_functions=lambda an: an.part.gated()["separated"],
    function_mse=lambda an: an.part.gated()["function_mse"],
)

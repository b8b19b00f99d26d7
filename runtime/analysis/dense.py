"""Ground truth of matrices that are one mechanism by design (a frozen identity inserted in a
network, SPD paper §TMS with hidden identity): the kind names them (`KindSpec.dense_matrices`).

For such a matrix W of rank r, decomposed into components P_c whose rank is at most q (1 for
SPD's subcomponents, APD's rank m), the fewest components that can hold it are k = ceil(r / q):
    dense_share = sum of the k largest ||P_c||_F^2 / sum_c ||P_c||_F^2      (1: one mechanism)
    dense_error = ||sum of those k P_c - W||_F / ||W||_F                       (0: they are W)
Each is the mean over the kind's dense matrices, per replicate.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..engine.models import layers_of
from ..spec import kind_spec

RANK_TOL = 1e-3  # singular values below this fraction of the largest do not count towards a rank


def _rank(M: np.ndarray) -> int:
    s = np.linalg.svd(M, compute_uv=False)
    return int(np.sum(s > RANK_TOL * s[0])) if s.size and s[0] > 0 else 0


def layer_weights(an: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(I, C, d_in, d_out) component weights of decomposed layer `name` and (I, d_in, d_out) the
    target's, in the layer's orientation (a tied use transposed), for any method."""
    layer = next(l for l in layers_of(an.arch) if l.name == name)
    W = np.asarray(an.target[layer.param], dtype=np.float64)
    if name in an.matrix_names():
        P = np.asarray(an.matrix_weights(name), dtype=np.float64)
        return P, (np.swapaxes(W, -1, -2) if layer.transposed else W)
    P = np.asarray(an.matrix_weights(layer.param), dtype=np.float64)  # components per parameter (APD)
    if layer.transposed:
        return np.swapaxes(P, -1, -2), np.swapaxes(W, -1, -2)
    return P, W


def dense_measures(an: Any) -> dict[str, np.ndarray]:
    """{"share": (I,), "error": (I,)} over the kind's dense matrices (module docstring)."""
    names = kind_spec(an.arch.kind).dense_matrices(an.arch)
    share, error = np.zeros(an.I), np.zeros(an.I)
    for name in names:
        P, W = layer_weights(an, name)
        for i in range(an.I):
            norms = np.sum(P[i] ** 2, axis=(1, 2))
            q = max(1, max(_rank(p) for p in P[i]))
            k = max(1, math.ceil(_rank(W[i]) / q))
            top = np.argsort(-norms)[:k]
            share[i] += norms[top].sum() / max(norms.sum(), 1e-300) / len(names)
            error[i] += np.linalg.norm(P[i][top].sum(axis=0) - W[i]) / max(np.linalg.norm(W[i]), 1e-300) / len(names)
    return {"share": share, "error": error}


def measures(an: Any) -> dict:
    """dense_measures(an), computed once per run analysis."""
    if "dense" not in an._cache:
        an._cache["dense"] = dense_measures(an)
    return an._cache["dense"]

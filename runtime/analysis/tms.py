"""TMS analyses on plain arrays (notes §7.1-7.2): best-matching component rows, MMCS / ML2R, and
the monosemantic baseline. Rows of W (F, H) are features (the paper's columns of W^T)."""
from __future__ import annotations

import numpy as np


def feature_match(P: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every feature f: (best component c*(f), cos[c*, f], ||P[c*, f]|| / ||W[f]||).

    P (C, F, H) component weights of the first TMS matrix, W (F, H) the target. A zero row (in P
    or W) gets cosine 0 and ratio 0 instead of the reference's NaN (notes §11.2)."""
    P, W = np.asarray(P, dtype=np.float64), np.asarray(W, dtype=np.float64)
    pn = np.linalg.norm(P, axis=-1)  # (C, F)
    wn = np.linalg.norm(W, axis=-1)  # (F,)
    dots = np.einsum("cfh,fh->cf", P, W)
    denom = pn * wn
    cos = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    best = np.argmax(cos, axis=0)
    f = np.arange(W.shape[0])
    ratio = np.divide(pn[best, f], wn, out=np.zeros_like(wn), where=wn > 0)
    return best, cos[best, f], ratio


def mmcs_ml2r(P: np.ndarray, W: np.ndarray) -> tuple[float, float]:
    """Mean max cosine similarity and mean L2 ratio (paper eqs. 3-4) of one replicate."""
    _, cos, ratio = feature_match(P, W)
    return float(np.mean(cos)), float(np.mean(ratio))


def monosemantic_tms(x: np.ndarray, hidden: int) -> np.ndarray:
    """The monosemantic baseline (notes §7.2): the first `hidden` features reproduced, the rest 0."""
    out = np.zeros_like(x)
    out[..., :hidden] = x[..., :hidden]
    return out

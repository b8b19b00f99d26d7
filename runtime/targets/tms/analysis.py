"""TMS analyses (notes §7.1-7.2): best-matching component rows, MMCS / ML2R, the monosemantic
baseline, and for causal-importance methods ci_error. Rows of W (F, H) are features (the paper's
columns of W^T). Plain-array functions first, then the run-level part (`TmsAnalysis`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...analysis.core import KIND_ANALYSES, KindAnalysis, _cached
from ...analysis.metrics import COMPUTED


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


MATCHED_COS = 0.99  # matched_rows: the MMCS bar of the SPD paper comparison, per row


def ci_error(g: np.ndarray, best: np.ndarray) -> float:
    """Mean over features f of sum_c |clip(g[f, c], 0, 1) - truth[f, c]|, truth[f, best[f]] = 1."""
    truth = np.zeros_like(g, dtype=np.float64)
    truth[np.arange(g.shape[0]), best] = 1.0
    return float(np.mean(np.sum(np.abs(np.clip(g, 0.0, 1.0) - truth), axis=1)))


def column_match(P: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(F,) for a matrix W (d_in, F) that writes feature f in column f (TMS's W^T), with component
    weights P (C, d_in, F): the component whose column f is most aligned with W[:, f]."""
    return feature_match(np.ascontiguousarray(np.swapaxes(P, 1, 2)), W.T)[0]


class TmsAnalysis(KindAnalysis):
    """TMS measures of a run, for any method (through `an.matrix_weights`)."""

    @_cached
    def match(self) -> dict:
        """Per replicate: best component, cosine and L2 ratio of every feature on the first matrix
        W (notes §7.1; the SPD paper's Table 1 the same on W's subcomponents)."""
        an = self.an
        P = an.matrix_weights("W")
        rows = [feature_match(P[i], an.target["W"][i]) for i in range(an.I)]
        return {"best": np.stack([r[0] for r in rows]), "cos": np.stack([r[1] for r in rows]),
                "ratio": np.stack([r[2] for r in rows])}

    @_cached
    def ci_error(self) -> np.ndarray:
        """(I,) ci_error of a causal-importance method over the feature-indexed matrices W and W^T:
        for each, the ground-truth importance on x_f's one-hot input is 1 for the component that
        best matches feature f (as in MMCS: for W^T, column f of W^T) and 0 for every other."""
        an = self.an
        g = an.onehot_ci()
        best_w = self.match()["best"]
        P = an.matrix_weights("W.T", np.float64)
        out = np.zeros(an.I)
        for i in range(an.I):
            W = np.asarray(an.target["W"][i], dtype=np.float64)
            out[i] = 0.5 * (ci_error(g["W"][i], best_w[i]) + ci_error(g["W.T"][i], column_match(P[i], W.T)))
        return out

    def feature_components(self, name: str | None = None) -> np.ndarray | None:
        """MMCS's match on W (components spanning both uses, or W's own subcomponents); for W^T's
        subcomponents, ci_error's column match."""
        an = self.an
        if an.importance != "causal" or name == "W":
            return self.match()["best"]
        if name != "W.T":
            return None
        P = an.matrix_weights("W.T")
        return np.stack([column_match(P[i], np.asarray(an.target["W"][i], dtype=np.float64).T) for i in range(an.I)])

    def panel(self, name: str, P: np.ndarray) -> tuple[str, np.ndarray]:
        return f"{name}: rows = features ({P.shape[1]}), columns = hidden ({P.shape[2]})", P

    def monosemantic(self, x: np.ndarray, lab: np.ndarray) -> np.ndarray:
        return monosemantic_tms(x, self.an.arch.hidden)


KIND_ANALYSES["tms"] = TmsAnalysis


def _part(an: Any) -> TmsAnalysis:
    return an.part


COMPUTED.update(
    mmcs=lambda an: _part(an).match()["cos"].mean(axis=1),
    ml2r=lambda an: _part(an).match()["ratio"].mean(axis=1),
    matched_rows=lambda an: (_part(an).match()["cos"] >= MATCHED_COS).sum(axis=1).astype(np.float64),
    ci_error=lambda an: _part(an).ci_error(),
)

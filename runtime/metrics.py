"""Metrics of a finished run (per replicate). Extended by the analysis module."""
from __future__ import annotations

import numpy as np

from . import apd
from .spec import TmsTarget

LOSS_METRICS = ("faithfulness", "minimality", "act_recon", "simplicity", "sparsity", "output_recon", "total")


def mmcs_ml2r(P: np.ndarray, W: np.ndarray) -> tuple[float, float]:
    """P (C, F, H) component weights of the first TMS matrix, W (F, H) target (paper eqs. 3-4).
    Zero rows get cosine 0 (the reference would give NaN)."""
    pn = np.linalg.norm(P, axis=-1)  # (C, F)
    wn = np.linalg.norm(W, axis=-1)  # (F,)
    dots = np.einsum("cfh,fh->cf", P, W)
    cos = np.divide(dots, pn * wn, out=np.zeros_like(dots), where=(pn * wn) > 0)
    best = np.argmax(cos, axis=0)
    f = np.arange(W.shape[0])
    ratio = np.divide(pn[best, f], wn, out=np.zeros_like(wn), where=wn > 0)
    return float(np.mean(cos[best, f])), float(np.mean(ratio))


def evaluate(result) -> dict:
    """name -> list of per-replicate values, for every metric in the report that is computable."""
    exp = result.experiment
    wanted = set(exp.report.metrics or ())
    for e in exp.report.expect:
        wanted.add(e.metric)
    out: dict[str, list] = {}
    last = result.decomposition.history[-1] if result.decomposition.history else {}
    for name in LOSS_METRICS:
        if name in wanted and name in last:
            out[name] = last.get(f"{name}/replicates", [last[name]])
    if isinstance(result.arch, TmsTarget) and ({"mmcs", "ml2r"} & wanted):
        vals = [mmcs_ml2r(apd.component_weights(result.decomposition.comps, "W", result.decomposition.C)[r],
                          result.target["W"][r]) for r in range(exp.replicates)]
        out["mmcs"] = [v[0] for v in vals]
        out["ml2r"] = [v[1] for v in vals]
    return out

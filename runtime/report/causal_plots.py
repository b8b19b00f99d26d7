"""The causal-importance tables of the SPD paper's Figs. 8, 12 and 13, for every method with causal
importances (SPD, VPD; the other plots are drawn by the shared builders through the analysis
interface, and by the kinds' builders)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.causal import ONEHOT_VALUE, permutation_order
from .plots import register_plot
from .plots_common import figure, integer_ticks, save, suptitle

MAX_COLUMNS = 120  # subcomponents shown per table (the first in the paper's order)


def plot_causal_importance(tables: list[tuple[str, np.ndarray]], path: str, row_label: str = "input feature (one-hot)",
                           title: str = "") -> str:
    """SPD paper Figs. 8, 12, 13: causal importance (clipped to [0, 1]) of every subcomponent
    (columns) on each input (rows), one panel per matrix; columns permuted as the paper does (each
    feature's most important subcomponent in turn, `analysis.permutation_order`)."""
    n = len(tables)
    widths = [min(t.shape[1], MAX_COLUMNS) for _, t in tables]
    fig, axes = figure(n, 1, (max(6.0, 0.09 * max(widths) + 3.0), sum(max(2.2, 0.09 * t.shape[0] + 1.3) for _, t in tables)))
    im = None
    for ax, (label, t), w in zip(axes[:, 0], tables, widths):
        t = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
        order = permutation_order(t)[:w]
        im = ax.imshow(t[:, order], cmap="Reds", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(label + ("" if w == t.shape[1] else f" (the first {w} of {t.shape[1]} subcomponents)"), fontsize=9)
        ax.set_ylabel(row_label, fontsize=8)
        ax.set_xlabel("subcomponent (permuted: each feature's most important first)", fontsize=8)
        integer_ticks(ax)
        if t.shape[0] * w <= 160:
            for (r, c), v in np.ndenumerate(t[:, order]):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v > 0.5 else "black")
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8, label="causal importance g (clipped to [0, 1])")
    suptitle(fig, title or "Causal importances on one-hot inputs")
    return save(fig, path)


# ------------------------------------------------------------------------------------------
# From a run (replicate 0)


def build_causal_importance(an: Any, path: str) -> str:
    """Causal importances on the kind's probe inputs (KindAnalysis.probes: one-hot inputs at
    x_f = ONEHOT_VALUE by default), one table per matrix (replicate 0)."""
    probes = an.part.probes(ONEHOT_VALUE)
    if probes is None:
        g = an.onehot_ci()
        tables = [(name, g[name][0]) for name in an.names]
        return plot_causal_importance(tables, path, f"input feature (x_f = {ONEHOT_VALUE:g})",
                                      f"{an.exp.name}: causal importances on one-hot inputs (replicate 0; SPD paper Figs. 8, 12, 13)")
    x, reduce, row_label, what = probes
    g = an.causal_importances(x)[2]
    tables = [(name, reduce(g[name][0])) for name in an.names]
    return plot_causal_importance(tables, path, row_label, f"{an.exp.name}: {what} (replicate 0)")


register_plot("causal_importance", build_causal_importance)

"""TMS plots: the feature polygons of paper Fig. 3 (APD) and SPD paper Fig. 1."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...report.plots import feature_order, register_plot
from ...report.plots_common import MIN_FONT, color, figure, grid_shape, hide_unused, save, suptitle


def plot_polygons(W: np.ndarray, P: np.ndarray, path: str, title: str = "", labels: list[str] | None = None) -> str:
    """Fig. 3: the 2-D rows W[f] (feature directions in the hidden space) of the target, of the sum
    of the components and of every component P[c] (C, F, 2), as arrows from the origin coloured by
    feature; the target's polygon is drawn faintly in every panel for reference."""
    W, P = np.asarray(W, dtype=float), np.asarray(P, dtype=float)
    panels = [("target W", W), ("sum of components", P.sum(axis=0))]
    panels += [(labels[c] if labels else f"component {c}", P[c]) for c in range(P.shape[0])]
    lim = 1.15 * max(float(np.abs(W).max()), float(np.abs(P.sum(axis=0)).max()), 1e-9)
    rows, cols = grid_shape(len(panels), 5)
    fig, axes = figure(rows, cols, (2.0 * cols + 0.4, 2.1 * rows + 0.7))
    order = np.argsort(np.arctan2(W[:, 1], W[:, 0]))
    ring = W[np.r_[order, order[:1]]]
    for ax, (label, M) in zip(axes.ravel(), panels):
        ax.plot(ring[:, 0], ring[:, 1], color="0.85", lw=1, zorder=0)
        for f in range(M.shape[0]):
            ax.annotate("", xy=(M[f, 0], M[f, 1]), xytext=(0, 0),
                        arrowprops={"arrowstyle": "-|>", "color": color(f), "lw": 1.5})
            ax.plot([M[f, 0]], [M[f, 1]], "o", ms=3, color=color(f), label=f"feature {f}" if label == "target W" else None)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.9", lw=0.5)
        ax.axvline(0, color="0.9", lw=0.5)
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=MIN_FONT)
    axes[0, 0].set_xlabel("hidden 0", fontsize=8)
    axes[0, 0].set_ylabel("hidden 1", fontsize=8)
    if W.shape[0] <= 10:
        axes[0, 0].legend(fontsize=MIN_FONT, loc="best")
    hide_unused(axes, len(panels))
    suptitle(fig, title or "Feature directions W[f] in the 2-D hidden space")
    return save(fig, path)


def build_polygons(an: Any, path: str) -> str:
    """Every component's rows of W, in feature order (MMCS's match); of per-matrix subcomponents
    (causal-importance methods, many of them negligible) the F matched ones and the largest other
    (F + 1 in all, at least 6)."""
    if an.arch.hidden != 2:
        raise ValueError(f"the polygons plot needs hidden = 2, the target has hidden = {an.arch.hidden}")
    P = an.matrix_weights("W")[0]
    order, feats = feature_order(an, 0, "W" if an.importance == "causal" else None)
    if an.importance == "causal":
        order, feats = order[:max(an.arch.features + 1, 6)], feats[:max(an.arch.features + 1, 6)]
    labels = [f"component {c}" + ("" if f is None else f" (feature {f})") for c, f in zip(order, feats)]
    if an.importance == "causal":
        return plot_polygons(an.target["W"][0], P[order], path, f"{an.exp.name}: feature directions of W's "
                             "subcomponents in feature order (replicate 0; SPD paper Fig. 1)", labels)
    return plot_polygons(an.target["W"][0], P[order], path,
                         f"{an.exp.name}: feature directions, components in feature order (replicate 0, paper Fig. 3)",
                         labels)


register_plot("polygons", build_polygons, kind="tms")

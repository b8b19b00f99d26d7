"""Gated-function plots: paper Fig. 12 (functions) and Fig. 13 (network per component)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...report.plots import plot_attributions, register_plot, shown_replicates
from ...report.plots_common import figure, grid_shape, hide_unused, save, suptitle
from ..resid_mlp.model import residual_dims
from .analysis import edge_functions, neuron_functions

FUNCTION_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
OTHER_COLOR = "#7b2cbf"  # purple: weight absent from the target (Fig. 13)


def _fcolor(i: int) -> str:
    return OTHER_COLOR if i < 0 else FUNCTION_COLORS[i % len(FUNCTION_COLORS)]


def plot_gated_functions(grid: np.ndarray, target: np.ndarray, apd: np.ndarray, path: str,
                         true: np.ndarray | None = None, apd_label: str = "APD (top-1)", title: str = "") -> str:
    """Fig. 12: one panel per function i (control bit i on, x over the grid): the target network
    (solid), the APD top-k output (dashed) and the true function F_i (dotted)."""
    n = target.shape[0]
    rows, cols = grid_shape(n, 4)
    fig, axes = figure(rows, cols, (3.6 * cols + 0.5, 3.0 * rows + 0.6))
    for i, ax in enumerate(axes.ravel()[:n]):
        ax.plot(grid, target[i], color=_fcolor(i), lw=2.0, label="target network")
        ax.plot(grid, apd[i], color="black", lw=1.2, ls="--", label=apd_label)
        if true is not None:
            ax.plot(grid, true[i], color="0.5", lw=1.0, ls=":", label="true F_i(x)")
        ax.set_title(f"function {i} (control bit {i} on)", fontsize=9)
        ax.set_xlabel("x")
        ax.set_ylabel("output y")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    hide_unused(axes, n)
    suptitle(fig, title or "Gated functions: target vs APD")
    return save(fig, path)


def plot_gated_network(target_layers: list[tuple[np.ndarray, np.ndarray]],
                       component_layers: list[list[tuple[np.ndarray, np.ndarray]]], functions: int, path: str,
                       title: str = "", min_fraction: float = 0.02) -> str:
    """Fig. 13: the residual network drawn per panel (target, then each component). Columns of
    residual nodes [x, alpha_0.., y] alternate with each layer's neurons; an edge is a weight, its
    width ~ sqrt|w| (one scale for all panels), its colour the function of the target neuron it touches,
    purple where the target weight is zero. Edges below min_fraction of the largest are skipped."""
    from matplotlib.collections import LineCollection

    L = len(target_layers)
    D = target_layers[0][0].shape[0]
    fns = [neuron_functions(W_in, functions) for W_in, _ in target_layers]
    labels = [(edge_functions(W_in, f, 1), edge_functions(W_out, f, 0)) for (W_in, W_out), f in zip(target_layers, fns)]
    scale = max(float(np.abs(W).max()) for pair in target_layers for W in pair) or 1.0
    y_res = np.linspace(0.95, 0.05, D)
    panels = [("target network", target_layers)] + [(f"component {c}", layers) for c, layers in enumerate(component_layers)]
    rows, cols = grid_shape(len(panels), 5)
    fig, axes = figure(rows, cols, (3.4 * cols + 0.5, 4.0 * rows + 0.6))
    names = ["x"] + [f"a{i}" for i in range(functions)] + ["y"]
    for ax, (label, layers) in zip(axes.ravel(), panels):
        segs, widths, colors = [], [], []
        for l, (W_in, W_out) in enumerate(layers):
            d = W_in.shape[1]
            y_n = np.linspace(0.98, 0.02, d)
            for (r, n), w in np.ndenumerate(W_in):
                if abs(w) >= min_fraction * scale:
                    segs.append([(2 * l, y_res[r]), (2 * l + 1, y_n[n])])
                    widths.append(w)
                    colors.append(_fcolor(labels[l][0][r, n]))
            for (n, r), w in np.ndenumerate(W_out):
                if abs(w) >= min_fraction * scale:
                    segs.append([(2 * l + 1, y_n[n]), (2 * l + 2, y_res[r])])
                    widths.append(w)
                    colors.append(_fcolor(labels[l][1][n, r]))
            ax.scatter(np.full(d, 2 * l + 1), y_n, s=8, color=[_fcolor(f) for f in fns[l]], zorder=3)
        if segs:
            lw = np.clip(4.0 * np.sqrt(np.abs(widths) / scale), 0.2, 5.0)  # sqrt: small weights stay visible
            ax.add_collection(LineCollection(segs, linewidths=lw, colors=colors, alpha=0.7))
        for col in range(L + 1):
            ax.scatter(np.full(D, 2 * col), y_res, s=14, color="black", zorder=3)
        for r, nm in enumerate(names[:D]):
            ax.text(-0.15, y_res[r], nm, ha="right", va="center", fontsize=7)
        ax.set_xlim(-0.6, 2 * L + 0.3)
        ax.set_ylim(0, 1)
        ax.set_xticks([2 * l + 1 for l in range(L)], [f"layer {l}" for l in range(L)], fontsize=7)
        ax.set_yticks([])
        ax.set_title(label, fontsize=9)
    hide_unused(axes, len(panels))
    suptitle(fig, title or "Gated network per component (colour = target function, purple = not in target)")
    return save(fig, path)


def build_gated_functions(an: Any, path: str) -> str:
    g = an.part.gated()
    true = None if g["true"] is None else g["true"][0]
    if an.importance == "causal":
        return plot_gated_functions(g["grid"], g["target"][0], g["topk"][0], path, true, "SPD (CI-masked)",
                                    f"{an.exp.name}: target vs the CI-masked SPD model per function (APD paper Fig. 12)")
    label = "APD (top-1)" if g["k"] == 1 else f"APD (top-{g['k']})"
    return plot_gated_functions(g["grid"], g["target"][0], g["topk"][0], path, true, label,
                                f"{an.exp.name}: target vs APD per function (paper Fig. 12)")


def build_attributions(an: Any, path: str) -> str:
    """APD's attributions plot of a gated network: each component's mean share of the attribution
    per function (control bit on, x over its range)."""
    g = an.part.gated()
    reps, note = shown_replicates(an, 1)
    tables = [(f"replicate {i}", g["share"][i]) for i in reps]
    return plot_attributions(tables, path, "function\n(control bit on, x over its range)",
                             f"{an.exp.name}: mean share of the attribution per component" + (f" ({note})" if note else ""),
                             value_label="share of the attribution")


def build_gated_network(an: Any, path: str) -> str:
    _, _, L = residual_dims(an.arch)
    target = [(an.target[f"layers.{l}.W_in"][0], an.target[f"layers.{l}.W_out"][0]) for l in range(L)]
    W = {n: an.matrix_weights(n)[0] for l in range(L) for n in (f"layers.{l}.W_in", f"layers.{l}.W_out")}
    comps = [[(W[f"layers.{l}.W_in"][c], W[f"layers.{l}.W_out"][c]) for l in range(L)] for c in range(an.C)]
    return plot_gated_network(target, comps, an.arch.functions, path,
                              f"{an.exp.name}: network weights per component (paper Fig. 13)")


register_plot("gated_functions", build_gated_functions, kind="gated")
register_plot("gated_network", build_gated_network, kind="gated")
register_plot("attributions", build_attributions, kind="gated", method="apd")

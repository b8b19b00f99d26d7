"""Plots of an SPD run: the causal-importance tables of the SPD paper's Figs. 8, 12 and 13, and the
SPD versions of the plots that show APD components or top-k (same names, same figures, with
subcomponents and causal importances; analysis/spd.py)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .plots_common import figure, integer_ticks, save, suptitle

MAX_COLUMNS = 120  # subcomponents shown per table (the first in the paper's order)


def plot_causal_importance(tables: list[tuple[str, np.ndarray]], path: str, row_label: str = "input feature (one-hot)",
                           title: str = "") -> str:
    """SPD paper Figs. 8, 12, 13: causal importance (clipped to [0, 1]) of every subcomponent
    (columns) on each input (rows), one panel per matrix; columns permuted as the paper does (each
    feature's most important subcomponent in turn, `analysis.spd.permutation_order`)."""
    from ..analysis.spd import permutation_order

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
    from ..analysis.core import GATED_POINTS
    from ..analysis.spd import ONEHOT_VALUE

    if an.kind == "gated":
        from ..analysis import gated as ag
        from ..engine.data import value_range

        lo, hi = value_range(an.arch, an.exp.data)
        _, x = ag.function_grid(an.arch.functions, lo, hi, GATED_POINTS, an.I, an.dtype)
        g = an.causal_importances(x)[2]
        tables = [(name, g[name][0].reshape(an.arch.functions, GATED_POINTS, an.C).mean(axis=1)) for name in an.names]
        return plot_causal_importance(tables, path, "function (control bit on,\nmean over x)",
                                      f"{an.exp.name}: mean causal importance per function (replicate 0)")
    g = an.onehot_ci()
    tables = [(name, g[name][0]) for name in an.names]
    return plot_causal_importance(tables, path, f"input feature (x_f = {ONEHOT_VALUE:g})",
                                  f"{an.exp.name}: causal importances on one-hot inputs (replicate 0; SPD paper Figs. 8, 12, 13)")


def _norm_order(P: np.ndarray) -> np.ndarray:
    return np.argsort(-np.sqrt(np.sum(P.reshape(P.shape[0], -1) ** 2, axis=1)), kind="stable")


def build_components(an: Any, path: str) -> str:
    """Each matrix's subcomponents V_c U_c, largest first (the SPD paper's Figs. 1-3). A wide residual
    MLP shows virtual weights: W_E V_c U_c for W_in (features x neurons) and (V_c U_c W_U)^T for W_out."""
    from ..engine.spd import subcomponent_weights
    from .plots_common import plot_components

    mats = []
    wide = an.kind == "resid_mlp" and an.arch.d_embed > 200
    for layer in an.layers:
        P = subcomponent_weights(an.params, layer.name)[0]  # (C, d_in, d_out)
        if wide and layer.name.endswith("W_in"):
            P = np.matmul(np.asarray(an.target["W_E"][0]), P)
            label = f"W_E {layer.name},c: features (rows) x neurons"
        elif wide and layer.name.endswith("W_out"):
            P = np.swapaxes(np.matmul(P, np.asarray(an.target["W_U"][0])), -1, -2)
            label = f"({layer.name},c W_U)^T: features (rows) x neurons"
        elif layer.name.endswith("W_out"):
            P = np.swapaxes(P, -1, -2)
            label = f"{layer.name},c^T: rows = residual stream ({layer.d_out}), columns = neurons ({layer.d_in})"
        else:
            label = f"{layer.name},c: rows = inputs ({layer.d_in}), columns = outputs ({layer.d_out})"
        mats.append((label, P))
    return plot_components(mats, path, f"{an.exp.name}: subcomponents of every matrix (replicate 0)",
                           orders=[_norm_order(P) for _, P in mats], what="subcomponents")


def build_polygons(an: Any, path: str) -> str:
    from ..engine.spd import subcomponent_weights
    from .plots_tms import plot_polygons

    if an.arch.hidden != 2:
        raise ValueError(f"the polygons plot needs hidden = 2, the target has hidden = {an.arch.hidden}")
    P = subcomponent_weights(an.params, "W")[0]
    keep = _norm_order(P)[:max(an.arch.features + 1, 6)]
    return plot_polygons(an.target["W"][0], P[np.sort(keep)], path,
                         f"{an.exp.name}: feature directions of W's largest subcomponents (replicate 0; SPD paper Fig. 1)")


def build_neuron_contributions(an: Any, path: str) -> str:
    from .plots_resid import neuron_contributions_of

    return neuron_contributions_of(an, path, "SPD paper Figs. 6, 7",
                                   "W_in subcomponent m*(f) = argmax_m max_n contrib_m[f, n], with the summed W_out")


def build_feature_response(an: Any, path: str) -> str:
    from .plots_resid import plot_feature_response

    r = an.feature_response()
    return plot_feature_response(r["feature"], r["target"][0], r["top1"][0], r["scrubbed"][0], r["anti_scrubbed"][0], path,
                                 f"{an.exp.name}: x_{r['feature']} = 1, the feature's subcomponents kept (scrubbed) "
                                 "or ablated (anti-scrubbed), half of the others ablated", model_label="SPD (CI-masked)")


def build_scrub_histogram(an: Any, path: str) -> str:
    from .plots_resid import scrub_histogram_of

    return scrub_histogram_of(an, path, ("ci_masked", "ci_masked_vs_target"),
                              f"{an.exp.name}: per-sample MSE with half of the subcomponents ablated (APD Figs. 8, 25)")


def build_component_categories(an: Any, path: str) -> str:
    from ..engine.spd_train import CI_ACTIVE
    from .plots_resid import plot_component_categories

    c = an.categories()[0]
    return plot_component_categories(c, c["features_represented"], c["dedicated_features"], an.arch.features, path,
                                     CI_ACTIVE, f"{an.exp.name}: {c['features_represented']}/{an.arch.features} features "
                                     f"represented, {c['dedicated_features']} by a dedicated W_in subcomponent",
                                     criterion="one-hot causal importance", what="W_in subcomponents")


def build_gated_functions(an: Any, path: str) -> str:
    from .plots_gated import plot_gated_functions

    g = an.gated()
    return plot_gated_functions(g["grid"], g["target"][0], g["topk"][0], path,
                                None if g["true"] is None else g["true"][0], "SPD (CI-masked)",
                                f"{an.exp.name}: target vs the CI-masked SPD model per function (APD paper Fig. 12)")


BUILDERS = {
    "causal_importance": build_causal_importance, "components": build_components, "polygons": build_polygons,
    "neuron_contributions": build_neuron_contributions, "feature_response": build_feature_response,
    "scrub_histogram": build_scrub_histogram, "component_categories": build_component_categories,
    "gated_functions": build_gated_functions,
}

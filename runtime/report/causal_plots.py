"""The causal-importance tables of the SPD paper's Figs. 8, 12 and 13, for every method with causal
importances (SPD, VPD; the other plots are drawn by the shared builders through the analysis
interface, and by the kinds' builders)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.causal import ONEHOT_VALUE
from .plots import feature_order, plot_attributions, register_plot, row_order, shown_replicates

MAX_COLUMNS = 120  # subcomponents shown per table (the first in feature order)


def plot_causal_importance(tables: list[tuple[str, np.ndarray]], path: str, row_label: str = "input feature (one-hot)",
                           title: str = "", orders: list[tuple[np.ndarray, list]] | None = None) -> str:
    """SPD paper Figs. 8, 12, 13: causal importance (clipped to [0, 1]) of every subcomponent
    (columns) on each input (rows), one panel per matrix and replicate; columns in feature order
    (`orders`; default: each input's most important subcomponent in turn, as the paper permutes)."""
    clipped = [(label, np.clip(np.asarray(t, dtype=float), 0.0, 1.0)) for label, t in tables]
    return plot_attributions(clipped, path, row_label, title or "Causal importances on one-hot inputs", orders,
                             value_label="causal importance g", cmap_name="Reds", limits=(0.0, 1.0),
                             max_columns=MAX_COLUMNS, column_label="subcomponent (in feature order)")


# ------------------------------------------------------------------------------------------
# From a run


def build_causal_importance(an: Any, path: str) -> str:
    """Causal importances on the kind's probe inputs (KindAnalysis.probes: one-hot inputs at
    x_f = ONEHOT_VALUE by default), one table per matrix and replicate, columns in feature order:
    the subcomponent the kind's metrics match to each feature first (`feature_order`), else each
    input's most important one in turn."""
    probes = an.part.probes(ONEHOT_VALUE)
    if probes is None:
        g = an.onehot_ci()
        row_label, what = f"input feature (x_f = {ONEHOT_VALUE:g})", "causal importances on one-hot inputs"
        table = lambda name, i: g[name][i]  # noqa: E731
    else:
        x, reduce, row_label, what = probes
        g = an.causal_importances(x)[2]
        table = lambda name, i: reduce(g[name][i])  # noqa: E731
    reps, note = shown_replicates(an, len(an.names))
    tables, orders = [], []
    for name in an.names:
        for i in reps:
            t = np.asarray(table(name, i), dtype=float)
            matched = an.part.feature_components(name)
            tables.append((f"{name}, replicate {i}" if an.I > 1 else name, t))
            orders.append(feature_order(an, i, name) if matched is not None else row_order(t))
    title = f"{an.exp.name}: {what} (clipped to [0, 1]; SPD paper Figs. 8, 12, 13)" + (f"; {note}" if note else "")
    return plot_causal_importance(tables, path, row_label, title, orders)


register_plot("causal_importance", build_causal_importance)

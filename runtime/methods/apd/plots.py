"""APD's own plot: the attributions of every component on one-hot inputs (a kind may register its
own view, e.g. the gated network's share per function)."""
from __future__ import annotations

from typing import Any

from ...report.plots import feature_order, plot_attributions, register_plot, shown_replicates


def build_attributions(an: Any, path: str) -> str:
    """Every replicate's attributions on one-hot inputs, components in feature order (the
    matching the kind's metrics use: the diagonal is each feature's own component)."""
    A = an.identity_attributions()
    reps, note = shown_replicates(an, 1)
    return plot_attributions([(f"replicate {i}", A[i]) for i in reps], path,
                             title=f"{an.exp.name}: attributions on one-hot inputs" + (f" ({note})" if note else ""),
                             orders=[feature_order(an, i) for i in reps])


register_plot("attributions", build_attributions, method="apd")

"""APD's own plot: the attributions of every component on one-hot inputs (a kind may register its
own view, e.g. the gated network's share per function)."""
from __future__ import annotations

from typing import Any

from ...report.plots import plot_attributions, register_plot


def build_attributions(an: Any, path: str) -> str:
    A = an.identity_attributions()
    return plot_attributions([(f"replicate {i}", A[i]) for i in range(an.I)], path,
                             title=f"{an.exp.name}: attributions on one-hot inputs")


register_plot("attributions", build_attributions, method="apd")

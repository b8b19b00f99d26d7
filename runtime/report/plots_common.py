"""Shared plotting helpers. matplotlib is imported lazily and only through its object API
(`matplotlib.figure.Figure` rendered by the Agg canvas): no pyplot, so no global backend switch and
no interference with an interactive session; `import runtime` never needs matplotlib."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

DPI = 100
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] | None = None, **subplots: Any):
    """(fig, axes 2-D array) on a constrained-layout Agg figure."""
    from matplotlib.figure import Figure

    size = size or (4.2 * ncols + 0.6, 3.2 * nrows + 0.6)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return fig, axes


def suptitle(fig: Any, text: str, fontsize: float = 12.0) -> None:
    """A figure title wrapped to the figure's width (a long experiment name otherwise runs off a
    narrow figure); explicit newlines are kept."""
    import textwrap

    per_line = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    lines = [w for part in text.split("\n") for w in textwrap.wrap(part, per_line) or [""]]
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def save(fig: Any, path: str) -> str:
    """Write a PNG and return its path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def color(i: int) -> str:
    return PALETTE[int(i) % len(PALETTE)]


def cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def positive(v: Any) -> np.ndarray:
    """Values for a log axis: non-positive and non-finite entries become NaN (gaps, not errors)."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def symmetric_limit(*arrays: np.ndarray) -> float:
    """max |value| over arrays (1.0 when all are zero), for diverging colour maps."""
    m = max((float(np.nanmax(np.abs(a))) for a in arrays if np.size(a)), default=0.0)
    return m if m > 0 and np.isfinite(m) else 1.0


def grid_shape(n: int, max_cols: int = 6) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return (n + cols - 1) // cols, cols


def hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)


def integer_ticks(ax) -> None:
    """Integer tick labels on both axes (matrix indices)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))

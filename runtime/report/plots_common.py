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
    """Write a PNG atomically (store/files.atomic_write: an exclusive temporary file beside it, then
    a rename; never through a link at `path`) and return its path."""
    from ..store.files import atomic_write

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, dpi=DPI, format="png")
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


# ------------------------------------------------------------------------------------------
# Component mosaics (plots.py and plots_spd.py)

MAX_COMPONENTS_SHOWN = 24


def mosaic(tiles: np.ndarray, cols: int, gap: int = 1) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Tiles (n, r, c) laid out on a grid with NaN gaps: (image, top-left corner of every tile)."""
    n, r, c = tiles.shape
    rows = (n + cols - 1) // cols
    img = np.full((rows * (r + gap) - gap, cols * (c + gap) - gap), np.nan)
    corners = []
    for k in range(n):
        i, j = divmod(k, cols)
        img[i * (r + gap):i * (r + gap) + r, j * (c + gap):j * (c + gap) + c] = tiles[k]
        corners.append((i * (r + gap), j * (c + gap)))
    return img, corners


def plot_components(mats: list[tuple[str, np.ndarray]], path: str, title: str = "",
                    order: np.ndarray | None = None, orders: list[np.ndarray] | None = None,
                    what: str = "components") -> str:
    """Component weight matrices as heat maps, one panel per matrix kind. `mats` holds
    (label, (C, rows, cols)); the components shown (at most MAX_COMPONENTS_SHOWN, in `order`) are
    tiled in one image per panel (a single imshow: fast at any C) with one symmetric colour scale
    (blue negative, red positive) and labelled c<index>. `orders` gives each panel its own order
    (SPD: every matrix has its own subcomponents)."""
    C = mats[0][1].shape[0]
    order = np.arange(C) if order is None else np.asarray(order)
    shown = order[:MAX_COMPONENTS_SHOWN]
    shown_per = [shown] * len(mats) if orders is None else [np.asarray(o)[:MAX_COMPONENTS_SHOWN] for o in orders]
    r, c = mats[0][1].shape[1:]
    cols = max(1, min(len(shown), 6 if c <= r else 4))
    rows = (len(shown) + cols - 1) // cols
    tile_w, tile_h = np.clip(0.06 * c, 0.7, 2.4), np.clip(0.06 * r, 0.7, 2.4)
    fig, axes = figure(len(mats), 1, (max(7.0, cols * tile_w + 2.0), len(mats) * (rows * tile_h + 0.9) + 0.6))
    cm = cmap("RdBu_r").with_extremes(bad="white")
    for ax, (label, a), shown in zip(axes[:, 0], mats, shown_per):
        img, corners = mosaic(np.asarray(a, dtype=float)[shown], cols)
        lim = symmetric_limit(a[shown])
        im = ax.imshow(img, cmap=cm, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        for (y, x), comp in zip(corners, shown):
            ax.text(x, y - 0.6, f"c{int(comp)}", fontsize=7, va="bottom", ha="left")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=9, pad=12)
        fig.colorbar(im, ax=ax, shrink=0.8, label="weight")
    # on its own line: a long experiment name plus this overran narrow figures
    more = f"\n{len(shown)} of {C} {what}, largest first" if len(shown) < C else ""
    suptitle(fig, (title or "Component weights") + more)
    return save(fig, path)

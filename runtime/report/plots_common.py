"""Shared plotting helpers. matplotlib is imported lazily and only through its object API
(`matplotlib.figure.Figure` rendered by the Agg canvas): no pyplot, so no global backend switch and
no interference with an interactive session; `import runtime` never needs matplotlib."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

DPI = 100
PAGE_WIDTH = 10.5  # inches: the report page's width at DPI (report.html's column is 1100 px); no figure is wider
MIN_FONT = 7.0  # points: the smallest text drawn (~10 px at DPI), readable at page width
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] | None = None, **subplots: Any):
    """(fig, axes 2-D array) on a constrained-layout Agg figure."""
    from matplotlib.figure import Figure

    size = size or (4.2 * ncols + 0.6, 3.2 * nrows + 0.6)
    size = (min(size[0], PAGE_WIDTH), size[1])  # wider would be scaled down on the page, its text with it
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


SAVE_HOOKS: list = []  # callables (fig, path) run on every figure before it is written (tests inspect the layout)


def save(fig: Any, path: str) -> str:
    """Write a PNG atomically (store/files.atomic_write: an exclusive temporary file beside it, then
    a rename; never through a link at `path`), after thinning tick labels that would overlap, and
    return its path."""
    from ..store.files import atomic_write

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    declutter_ticks(fig)
    for hook in SAVE_HOOKS:
        hook(fig, path)
    with atomic_write(path) as f:
        fig.savefig(f, dpi=DPI, format="png")
    return path


def renderer(fig: Any):
    """A renderer of `fig` with its layout done (constrained layout runs at draw time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def tick_labels(ax: Any, which: str) -> list:
    """The visible, non-empty tick labels of one axis of `ax` ("x" or "y")."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    return [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]


def overlapping(labels: list, r: Any, pad: float = 1.0) -> bool:
    """Whether any two of the text artists `labels` overlap (boxes grown by `pad` pixels)."""
    boxes = [t.get_window_extent(r).expanded(1.0, 1.0).padded(pad) for t in labels]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def declutter_ticks(fig: Any) -> None:
    """Hide every second (third, ...) tick label of any axis whose labels overlap, until none do
    (a dense integer axis, long category names); the ticks themselves stay."""
    r = renderer(fig)
    changed = False
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for which in ("x", "y"):
            labels = tick_labels(ax, which)
            step = 1
            while step < len(labels) and overlapping([t for t in labels if t.get_visible()], r):
                step += 1
                for k, t in enumerate(labels):
                    t.set_visible(k % step == 0)
                changed = True
    if changed:
        fig.canvas.draw()


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
# Components in feature order


def feature_first(matched: np.ndarray | None, rest_key: np.ndarray) -> tuple[np.ndarray, list[int | None]]:
    """(order of all components, the feature each position's component is matched to or None):
    feature 0's component first, then feature 1's (if not already placed), ...; then the unmatched
    components, largest `rest_key` first. `matched` (F,): the component each feature is matched to
    (None: no matching, every component by `rest_key`)."""
    C = len(rest_key)
    order: list[int] = []
    features: list[int | None] = []
    for f, c in enumerate([] if matched is None else np.asarray(matched).tolist()):
        if 0 <= c < C and c not in order:
            order.append(int(c))
            features.append(f)
    placed = set(order)
    for c in np.argsort(-np.asarray(rest_key, dtype=float), kind="stable"):
        if int(c) not in placed:
            order.append(int(c))
            features.append(None)
    return np.asarray(order), features


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


MAX_COMPONENTS_SHOWN = 24  # per panel
MAX_PANELS = 16  # replicate x matrix panels of one figure


def _tile_grid(n: int, r: int, c: int, width: float) -> tuple[int, float]:
    """(tiles per line, tile width in inches) for n tiles of r x c cells in `width` inches: as many
    per line as fit at 0.45 in (a label's width) and at least ~0.02 in per cell column."""
    min_w = max(0.45, 0.02 * c)
    cols = max(1, min(n, int(width // min_w)))
    return cols, min(width / cols, 0.9)


def plot_components(panels: list[tuple[str, np.ndarray, np.ndarray, list]], path: str, title: str = "",
                    what: str = "components", note: str = "") -> str:
    """Component weight matrices as heat maps, one panel per (replicate, matrix): `panels` holds
    (label, stack (C, rows, cols), order, matched feature per position of `order` or None). The
    components shown (the first MAX_COMPONENTS_SHOWN of `order`) are tiled left to right in one
    image per panel (a single imshow: fast at any C), on one symmetric colour scale per panel (blue
    negative, red positive), each labelled c<index> and, when matched, the feature it is matched to
    (f<feature>): in feature order a correct decomposition lights row f of the f-th tile."""
    width = PAGE_WIDTH - 1.6  # the colour bars and margins
    layout = []
    for label, a, order, feats in panels:
        shown = np.asarray(order)[:MAX_COMPONENTS_SHOWN]
        r, c = a.shape[1:]
        cols, tile_w = _tile_grid(len(shown), r, c, width)
        lines = (len(shown) + cols - 1) // cols
        tile_h = float(np.clip(tile_w * r / (c + 1), 0.45, 2.4))
        layout.append((label, a, shown, feats[:len(shown)], cols, lines * (tile_h + 0.28) + 0.45))
    fig, axes = figure(len(layout), 1, (PAGE_WIDTH, sum(h for *_, h in layout) + 0.8),
                       gridspec_kw={"height_ratios": [h for *_, h in layout]})
    cm = cmap("RdBu_r").with_extremes(bad="white")
    for ax, (label, a, shown, feats, cols, _) in zip(axes[:, 0], layout):
        img, corners = mosaic(np.asarray(a, dtype=float)[shown], cols)
        lim = symmetric_limit(a[shown])
        im = ax.imshow(img, cmap=cm, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        for (y, x), comp, f in zip(corners, shown, feats):
            ax.text(x, y - 0.6, f"c{int(comp)}" + ("" if f is None else f" f{f}"), fontsize=MIN_FONT, va="bottom",
                    ha="left")
        ax.set_xticks([])
        ax.set_yticks([])
        more = f" ({len(shown)} of {a.shape[0]} {what})" if len(shown) < a.shape[0] else ""
        ax.set_title(label + more, fontsize=9, pad=14, loc="left")
        fig.colorbar(im, ax=ax, shrink=0.9, label="weight", aspect=10 if len(layout) > 1 else 20)
    suptitle(fig, (title or "Component weights") + (f"\n{note}" if note else ""))
    return save(fig, path)

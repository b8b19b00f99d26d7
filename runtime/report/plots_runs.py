"""Plots over several runs: a sweep's metrics against its axes, and the loss curves of a directory
of runs overlaid (the pages of runtime/report/pages.py show them)."""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from .plots_common import MIN_FONT, PAGE_WIDTH, color, figure, grid_shape, hide_unused, positive, save, suptitle

MAX_GROUPS = 8  # lines per panel (combinations of the other axes); more are left out, and said so


def seed_like(path: str) -> bool:
    """Whether a sweep axis draws new random streams only (a replicate of the same setting)."""
    return path == "seed" or path.endswith(".seed")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _bound(texts: list[str], metric: str) -> float | None:
    """The value of the first expectation on `metric` among their texts (`expect mmcs >= 0.99 ...`)."""
    for t in texts:
        m = re.match(rf"expect {re.escape(metric)} (?:>=|<=|>|<|==) ([-+0-9.eE]+)", t or "")
        if m:
            try:
                return float(m.group(1))
            except ValueError:
                return None
    return None


def sweep_panels(sweep: dict) -> tuple[list[str], list[str]]:
    """(metrics, axes) a sweep's figure plots: the table's metrics with values, against every
    axis that is not a seed (against the seeds when there is nothing else)."""
    done = [r for r in sweep["points"] if r.get("metrics_per_replicate")]
    metrics = [m for m in sweep.get("table_metrics", []) if any(r["metrics_per_replicate"].get(m) for r in done)]
    paths = list(dict.fromkeys(a["path"] for a in sweep["axes"]))
    axes = [p for p in paths if not seed_like(p)] or paths
    return metrics, axes


def plot_sweep(sweep: dict, path: str, title: str = "") -> str | None:
    """Every metric (rows) against every axis (columns): at each value of the axis, the mean over
    the replicates of every point with that value (seeds pooled: a seed axis is not a setting) as a
    line with +-1 std error bars, the min-max range as a band and each replicate as a dot. Points
    that differ on another axis are separate lines. A metric's expectation bound is a dashed line.
    None when there is nothing to plot (no finished point)."""
    metrics, axes = sweep_panels(sweep)
    if not metrics or not axes:
        return None
    done = [r for r in sweep["points"] if r.get("metrics_per_replicate")]
    bounds = [e.get("text", "") for e in sweep.get("expectations", [])]
    panels = [(m, a) for m in metrics for a in axes]
    rows, cols = grid_shape(len(panels), 3 if len(axes) != 2 else 2)
    fig, grid = figure(rows, cols, (min(PAGE_WIDTH, 3.4 * cols + 0.4), 2.7 * rows + 0.8))
    for ax, (metric, axis) in zip(grid.ravel(), panels):
        others = [p for p in axes if p != axis]
        groups: dict[tuple, dict[Any, list[float]]] = {}
        for r in done:
            key = tuple(_hashable(r["values"].get(p)) for p in others)
            x = _hashable(r["values"].get(axis))
            groups.setdefault(key, {}).setdefault(x, []).extend(
                v for v in r["metrics_per_replicate"].get(metric, []) if v is not None and math.isfinite(v))
        xs_all = list(dict.fromkeys(x for g in groups.values() for x in g))
        numeric = all(_number(x) is not None for x in xs_all)
        if numeric:
            xs_all.sort(key=float)
        pos = {x: (float(x) if numeric else i) for i, x in enumerate(xs_all)}
        for gi, (key, by_x) in enumerate(list(groups.items())[:MAX_GROUPS]):
            xs = [x for x in xs_all if by_x.get(x)]
            vals = [np.asarray(by_x[x], dtype=float) for x in xs]
            px = np.array([pos[x] for x in xs], dtype=float)
            mean = np.array([v.mean() for v in vals])
            std = np.array([v.std() for v in vals])
            label = ", ".join(f"{p}={_short(k)}" for p, k in zip(others, key)) or None
            c = color(gi)
            ax.fill_between(px, [v.min() for v in vals], [v.max() for v in vals], color=c, alpha=0.15, lw=0)
            ax.errorbar(px, mean, yerr=std, color=c, lw=1.4, marker="o", ms=3.5, capsize=2, label=label)
            for x, v in zip(px, vals):
                ax.plot(np.full(v.shape, x), v, ".", color=c, ms=3, alpha=0.45)
        bound = _bound(bounds, metric)
        if bound is not None:
            ax.axhline(bound, color="0.3", ls="--", lw=0.9, label="expectation")
        if numeric and len(xs_all) > 1 and min(float(x) for x in xs_all) > 0 and \
                max(float(x) for x in xs_all) / min(float(x) for x in xs_all) >= 20:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(xs_all)), [_short(x) for x in xs_all])
        elif len(xs_all) <= 8:  # the swept values themselves
            ax.set_xticks([float(x) for x in xs_all], [_short(x) for x in xs_all])
            ax.minorticks_off()
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(axis, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(which="both", labelsize=MIN_FONT)
        ax.grid(alpha=0.3)
        if len(groups) > 1 or bound is not None:
            ax.legend(fontsize=MIN_FONT, title=(f"{len(groups) - MAX_GROUPS} more not drawn"
                                                if len(groups) > MAX_GROUPS else None), title_fontsize=MIN_FONT)
    hide_unused(grid, len(panels))
    suptitle(fig, title or f"Sweep {sweep.get('experiment', '')}: metrics against the axes (mean ± std over "
                           "replicates and seeds; band: min to max; dots: replicates)")
    return save(fig, path)


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, tuple):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return str(v)


def plot_loss_curves(curves: list[tuple[str, list[dict]]], path: str, title: str = "", key: str = "total") -> str | None:
    """The `key` loss of the decomposition of every run (label, history), overlaid on a log scale,
    one colour per run (its number in the index). None when no run logged it."""
    drawn = [(label, [(e["step"], e[key]) for e in hist if key in e and "step" in e]) for label, hist in curves]
    drawn = [(label, pts) for label, pts in drawn if pts]
    if not drawn:
        return None
    fig, axes = figure(1, 1, (PAGE_WIDTH if len(drawn) > 12 else 8.0, 4.2))
    ax = axes[0, 0]
    for i, (label, pts) in enumerate(drawn):
        steps = np.array([s for s, _ in pts], dtype=float)
        ax.plot(steps, positive([v for _, v in pts]), color=color(i), lw=1.2,
                ls=("-", "--", ":", "-.")[(i // 10) % 4], label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(f"{key} loss (log)", fontsize=8)
    ax.tick_params(which="both", labelsize=MIN_FONT)
    ax.grid(alpha=0.3)
    if len(drawn) <= 30:
        ax.legend(fontsize=MIN_FONT, ncol=max(1, (len(drawn) + 9) // 10), loc="upper right")
    suptitle(fig, title or f"{key} loss of every run")
    return save(fig, path)

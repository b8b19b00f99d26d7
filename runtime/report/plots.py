"""Plots (names of registry.PLOTS): the ones every run has, the registry of plot builders, and
`make_plots`, which draws the plots a run asks for from its analysis.

Every `plot_*` function takes plain arrays, writes one PNG and returns its path; the `build_*`
functions extract those arrays from a run's analysis. A slice registers its builders beside its
plots (`register_plot`, runtime/targets/<kind>/plots.py, runtime/methods/<method>/plots.py), for
every run, a kind, a method, or one kind decomposed by one method; the most specific one draws.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from .plots_common import (  # noqa: F401  (mosaic, plot_components: public here too)
    MAX_COMPONENTS_SHOWN, color, figure, grid_shape, hide_unused, integer_ticks, mosaic, plot_components, positive, save,
    suptitle,
)
from ..spec import METHODS, PLOTS, applies
from ..spec.registry import kinds_of

MAX_REPLICATES_SHOWN = 4


def loss_terms() -> tuple[str, ...]:
    """Curves the losses plot shows, in order: the total, then every method's loss terms."""
    out = ["total"]
    for m in METHODS.values():
        out += [t for t in m.terms() if t not in out]
    return tuple(out)


def plot_losses(history: list[dict], path: str, target_history: list[dict] | None = None, title: str = "") -> str:
    """Training curves (log y) of every logged loss term, mean over replicates (thick) and each
    replicate (thin); plus the target's training loss, the mean number of active components per
    sample and the number of components used in each logged batch (where components die)."""
    panels: list[tuple[str, list, str, bool]] = [(k, history, k, True) for k in loss_terms()
                                                 if any(k in e for e in history)]
    if any("mean_active" in e for e in history):
        panels.append(("mean_active", history, "active components / sample", False))
    if any("used_components" in e for e in history):
        panels.append(("used_components", history, "components used in the batch", False))
    if any("ci_l0" in e for e in history):
        panels.append(("ci_l0", history, "causally important subcomponents / sample", False))
    if target_history:
        panels.append(("loss_mean", target_history, "target training loss", True))
    if not panels:
        panels = [("total", [], "no history logged", True)]
    rows, cols = grid_shape(len(panels), 3)
    fig, axes = figure(rows, cols, (4.2 * cols, 3.0 * rows + 0.5))
    for ax, (key, hist, label, log) in zip(axes.ravel(), panels):
        entries = [e for e in hist if key in e]
        steps = np.array([e["step"] for e in entries], dtype=float)
        per = [e.get(f"{key}/replicates") or (e["loss"] if key == "loss_mean" and isinstance(e.get("loss"), list) else None)
               for e in entries]
        if per and all(p is not None for p in per) and len(per[0]) > 1:
            reps = np.array(per, dtype=float)
            for r in range(reps.shape[1]):
                ax.plot(steps, positive(reps[:, r]) if log else reps[:, r], color=color(r), lw=0.7, alpha=0.5)
        mean = np.array([e[key] for e in entries], dtype=float)
        ax.plot(steps, positive(mean) if log else mean, color="black", lw=1.6, label="mean over replicates")
        if log and np.isfinite(positive(mean)).any():
            ax.set_yscale("log")
        if key == "used_components":
            integer_ticks(ax)  # a count
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_ylabel("value" + (" (log)" if log else ""))
        ax.grid(alpha=0.3)
    axes.ravel()[0].legend(fontsize=8)
    hide_unused(axes, len(panels))
    suptitle(fig, title or "Training curves")
    return save(fig, path)


def plot_attributions(tables: list[tuple[str, np.ndarray]], path: str, row_label: str = "input feature (one-hot)",
                      title: str = "") -> str:
    """Attribution of every component (columns) on each one-hot input (rows), one panel per
    replicate; small tables are annotated with their values."""
    n = min(len(tables), MAX_REPLICATES_SHOWN)
    fig, axes = figure(1, n, (max(5.0, 0.35 * tables[0][1].shape[1] + 2.5) * n, max(3.0, 0.25 * tables[0][1].shape[0] + 1.5)))
    for ax, (label, t) in zip(axes.ravel(), tables[:n]):
        im = ax.imshow(t, cmap="viridis", aspect="auto", interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("component")
        ax.set_ylabel(row_label)
        integer_ticks(ax)
        if t.size <= 120:
            for (r, c), v in np.ndenumerate(t):
                ax.text(c, r, f"{v:.2g}", ha="center", va="center", fontsize=6,
                        color="white" if v < 0.5 * np.nanmax(t) else "black")
        fig.colorbar(im, ax=ax, shrink=0.8, label="attribution")
    suptitle(fig, title or "Attributions on one-hot inputs")
    return save(fig, path)


def plot_mse_by_sparsity(table: dict[str, dict[str, np.ndarray]], path: str, title: str = "") -> str:
    """Grouped bars: MSE against the labels per data distribution (training; exactly n active) and
    model (target, APD top-k, baselines); mean over replicates with their std as error bars."""
    levels = list(table)
    models = []
    for lv in levels:
        models += [k for k in table[lv] if k not in models]
    fig, axes = figure(1, 1, (1.6 * len(levels) + 3.5, 3.8))
    ax = axes[0, 0]
    w = 0.8 / max(len(models), 1)
    names = {"apd": "APD (top-k)", "spd": "SPD (CI-masked)", "target": "target", "monosemantic": "monosemantic baseline",
             "input": "output = input"}
    for j, mdl in enumerate(models):
        vals = [np.asarray(table[lv].get(mdl, [np.nan]), dtype=float) for lv in levels]
        means = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in vals])
        stds = np.array([np.nanstd(v) if np.isfinite(v).any() else 0.0 for v in vals])
        ax.bar(np.arange(len(levels)) + (j - (len(models) - 1) / 2) * w, positive(means), w, yerr=stds,
               color=color(j), label=names.get(mdl, mdl), capsize=2)
    ax.set_xticks(np.arange(len(levels)), levels)
    ax.set_xlabel("input distribution (training: all-zero samples dropped; exactly n: APD per-sample top-n)")
    ax.set_ylabel("MSE vs true labels")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "MSE by number of active features")
    return save(fig, path)


# ------------------------------------------------------------------------------------------
# From a run


# ------------------------------------------------------------------------------------------
# From a run


def _build_losses(an: Any, path: str) -> str:
    r = an.result
    return plot_losses(r.decomposition.history, path, r.target_history, f"{an.exp.name}: training curves")


def _weights_by_norm(mats: list[tuple[str, np.ndarray]]) -> np.ndarray:
    norms = sum(np.sqrt(np.sum(a.reshape(a.shape[0], -1) ** 2, axis=1)) for _, a in mats)
    return np.argsort(-norms, kind="stable")


def _norm_order(P: np.ndarray) -> np.ndarray:
    return np.argsort(-np.sqrt(np.sum(P.reshape(P.shape[0], -1) ** 2, axis=1)), kind="stable")


def component_matrices(an: Any, replicate: int = 0) -> list[tuple[str, np.ndarray]]:
    """(label, (C, rows, cols)) stacks to show per component: the kind's view for large models
    (KindAnalysis.wide_panels, e.g. a residual MLP's virtual weights), else every decomposed
    matrix's component weights as the kind labels them (KindAnalysis.panel)."""
    wide = an.part.wide_panels(replicate)
    if wide is not None:
        return wide
    return [an.part.panel(name, an.matrix_weights(name)[replicate]) for name in an.matrix_names()]


def _build_components(an: Any, path: str) -> str:
    """Components spanning every matrix (attribution methods) are ordered by their total norm;
    per-matrix subcomponents (causal-importance methods) each matrix by its own, largest first
    (the SPD paper's Figs. 1-3)."""
    mats = component_matrices(an)
    if an.importance == "causal":
        return plot_components(mats, path, f"{an.exp.name}: subcomponents of every matrix (replicate 0)",
                               orders=[_norm_order(P) for _, P in mats], what="subcomponents")
    return plot_components(mats, path, f"{an.exp.name}: component weights (replicate 0)", _weights_by_norm(mats))


def _build_mse_by_sparsity(an: Any, path: str) -> str:
    return plot_mse_by_sparsity(an.mse_by_sparsity(), path, f"{an.exp.name}: MSE by number of active features")


# (plot name, kind or None, method or None) -> builder(analysis, path) -> path
BUILDERS: dict[tuple[str, str | None, str | None], Callable[[Any, str], str]] = {}


def register_plot(name: str, builder: Callable[[Any, str], str], kind: str | None = None,
                  method: str | None = None) -> None:
    """Register the builder of plot `name` for every run (kind and method None), runs of one kind,
    of one method, or of one kind decomposed by one method."""
    BUILDERS[(name, kind, method)] = builder


def builder_for(name: str, kind: str, method: str) -> Callable[[Any, str], str] | None:
    """The most specific builder of plot `name` for this kind and method (None: none registered)."""
    for key in ((name, kind, method), (name, kind, None), (name, None, method), (name, None, None)):
        if key in BUILDERS:
            return BUILDERS[key]
    return None


register_plot("losses", _build_losses)
register_plot("components", _build_components)
register_plot("mse_by_sparsity", _build_mse_by_sparsity)


FIGURE_BYTES = 100 * 2 ** 20  # a figure and its rendering (matplotlib), measured <= 80 MiB
DENSE_COPIES = 2.5  # copies of the dense component weights the component plots make (measured ~2.2)


def memory_parts(exp: Any, arch: Any) -> list:
    """The plots' parts of a run's memory (engine/memory.py): a figure, and the copies of the
    dense component weights that the component plots sort, scale and draw."""
    from ..analysis.core import dense_weight_bytes
    from ..engine.memory import Part

    return [Part("a figure (matplotlib)", FIGURE_BYTES, ("report",)),
            Part("the component plots' copies of the dense weights", DENSE_COPIES * dense_weight_bytes(exp, arch),
                 ("report",))]


def make_plots(result: Any, out_dir: str, names: list[str] | tuple[str, ...] | None = None) -> tuple[dict, dict]:
    """Draw the requested plots (default: `exp.report.plots`) into out_dir/NAME.png.

    Returns ({name: path}, {name: error message}); a failing plot never stops the others. A plot
    whose `requires` refuses the architecture (polygons without a 2-D hidden layer) is skipped
    without an error: it is in the resolved defaults of specs that cannot draw it."""
    from ..analysis.core import analysis_for

    an = analysis_for(result)
    names = list(result.experiment.report.plots or ()) if names is None else list(names)
    method = result.experiment.decompose.method
    paths, errors = {}, {}
    for name in names:
        plot = PLOTS.get(name)
        if plot is None:
            errors[name] = "unknown plot"
            continue
        if an.kind not in kinds_of(name, "plots"):
            errors[name] = f"does not apply to a {an.kind} target"
            continue
        if not applies(name, an.kind, method, "plots"):
            errors[name] = f"does not apply to method = {method}"
            continue
        if plot.requires is not None and plot.requires(an.arch) is not None:
            continue
        build = builder_for(name, an.kind, method)
        if build is None:
            errors[name] = f"no builder is registered for a {an.kind} target decomposed by {method}"
            continue
        try:
            paths[name] = build(an, os.path.join(out_dir, f"{name}.png"))
        except Exception as e:  # one broken plot must not cost the report
            errors[name] = f"{type(e).__name__}: {e}"
            an.errors[f"plot {name}"] = errors[name]
    return paths, errors

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
    MAX_COMPONENTS_SHOWN, MAX_PANELS, MIN_FONT, PAGE_WIDTH, color, feature_first, figure, grid_shape, hide_unused,
    integer_ticks, mosaic, plot_components, positive, save, suptitle,
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
    replicate (thin); plus the target's training loss, k/B (components selected per sample of the
    training batch, all-zero samples included; not the `mean_active` metric) and the number of
    components used in each logged batch (where components die)."""
    panels: list[tuple[str, list, str, bool]] = [(k, history, k, True) for k in loss_terms()
                                                 if any(k in e for e in history)]
    k_key = next((k for k in ("k_per_sample", "mean_active") if any(k in e for e in history)), None)
    if k_key is not None:  # logs written before k_per_sample was named carry it as mean_active
        panels.append((k_key, history, "k/B: components selected per sample (training batch)", False))
    if any("used_components" in e for e in history):
        panels.append(("used_components", history, "components used in the batch", False))
    if any("ci_l0" in e for e in history):
        panels.append(("ci_l0", history, "causally important subcomponents / sample", False))
    if target_history:
        panels.append(("loss_mean", target_history, "target training loss", True))
    if not panels:
        panels = [("total", [], "no history logged", True)]
    rows, cols = grid_shape(len(panels), 3)
    fig, axes = figure(rows, cols, (3.4 * cols + 0.3, 2.8 * rows + 0.6))
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
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("value" + (" (log)" if log else ""), fontsize=8)
        ax.tick_params(which="both", labelsize=MIN_FONT)
        ax.grid(alpha=0.3)
    axes.ravel()[0].legend(fontsize=8)
    hide_unused(axes, len(panels))
    suptitle(fig, title or "Training curves")
    return save(fig, path)


def row_order(t: np.ndarray) -> tuple[np.ndarray, list[int | None]]:
    """Column order of a table (rows, C) when no matching is given: each row's largest column in
    turn (a row whose largest is taken adds nothing), then the rest, largest column sum first."""
    t = np.nan_to_num(np.asarray(t, dtype=float))
    return feature_first(np.argmax(t, axis=1) if t.size else None, t.sum(axis=0))


def plot_attributions(tables: list[tuple[str, np.ndarray]], path: str, row_label: str = "input feature (one-hot)",
                      title: str = "", orders: list[tuple[np.ndarray, list]] | None = None,
                      value_label: str = "attribution", cmap_name: str = "viridis", limits: tuple | None = None,
                      max_columns: int | None = None, column_label: str = "component (in feature order)") -> str:
    """Attribution of every component (columns) on each input (rows), one panel per replicate
    (small multiples, one colour scale), the columns in feature order: `orders` per table (order,
    matched feature per column; default `row_order`), so a correct decomposition is a diagonal.
    Columns are labelled with the component index; small tables carry their values. Also draws
    other per-input tables of components (SPD's causal importances): `limits` fixes the colour
    scale, `max_columns` shows only the first columns of each order."""
    from matplotlib.ticker import MaxNLocator

    orders = orders or [row_order(t) for _, t in tables]
    if max_columns is not None:
        orders = [(np.asarray(o)[:max_columns], list(f)[:max_columns]) for o, f in orders]
    rows_n, C = tables[0][1].shape[0], len(orders[0][0])
    panel_w = float(np.clip(0.16 * C + 1.4, 2.4, PAGE_WIDTH - 1.0))
    cols = max(1, min(len(tables), int((PAGE_WIDTH - 0.9) // panel_w)))
    grid_rows = (len(tables) + cols - 1) // cols
    panel_h = float(np.clip(0.16 * rows_n + 1.3, 2.2, 6.0))
    fig, axes = figure(grid_rows, cols, (min(PAGE_WIDTH, cols * panel_w + 0.9), grid_rows * panel_h + 0.7))
    finite = [np.asarray(t, dtype=float)[np.isfinite(t)] for _, t in tables]
    lo, hi = limits or (min((float(v.min()) for v in finite if v.size), default=0.0),
                        max((float(v.max()) for v in finite if v.size), default=1.0))
    im = None
    for ax, (label, t), (order, feats) in zip(axes.ravel(), tables, orders):
        t = np.asarray(t, dtype=float)[:, order]
        im = ax.imshow(t, cmap=cmap_name, vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(column_label, fontsize=8)
        ax.set_ylabel(row_label, fontsize=8)
        ax.set_xticks(np.arange(t.shape[1]), [str(int(c)) for c in order], fontsize=MIN_FONT,
                      rotation=90 if t.shape[1] > 12 else 0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(axis="y", labelsize=MIN_FONT)
        if t.size <= 120:
            for (r, c), v in np.ndenumerate(t):
                ax.text(c, r, f"{v:.2g}", ha="center", va="center", fontsize=MIN_FONT,
                        color="white" if v < lo + 0.5 * (hi - lo) else "black")
    hide_unused(axes, len(tables))
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=value_label)
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


def _build_losses(an: Any, path: str) -> str:
    r = an.result
    return plot_losses(r.decomposition.history, path, r.target_history, f"{an.exp.name}: training curves")


def _norms(P: np.ndarray) -> np.ndarray:
    """(C,) Frobenius norm of every component of a stack (C, ...)."""
    return np.sqrt(np.sum(np.asarray(P, dtype=np.float64).reshape(P.shape[0], -1) ** 2, axis=1))


def _norm_order(P: np.ndarray) -> np.ndarray:
    return np.argsort(-_norms(P), kind="stable")


def feature_order(an: Any, replicate: int, name: str | None = None,
                  mats: list[tuple[str, np.ndarray]] | None = None) -> tuple[np.ndarray, list[int | None]]:
    """(components of `replicate` in feature order, the feature matched to each or None): the
    component the kind's metrics match to feature 0 first, then feature 1's, ... (the kind's
    `feature_components`), then the unmatched ones, largest first. `name`: one decomposed matrix's
    subcomponents (causal-importance methods); else components spanning every matrix, sized by
    their norm over `mats` (default: every matrix)."""
    matched = an.part.feature_components(name)
    if name is not None:
        key = _norms(an.matrix_weights(name)[replicate])
    else:
        stacks = mats if mats is not None else [(n, an.matrix_weights(n)[replicate]) for n in an.matrix_names()]
        key = sum(_norms(P) for _, P in stacks)
    return feature_first(None if matched is None else matched[replicate], key)


def component_matrices(an: Any, replicate: int = 0) -> list[tuple[str, np.ndarray]]:
    """(label, (C, rows, cols)) stacks to show per component: the kind's view for large models
    (KindAnalysis.wide_panels, e.g. a residual MLP's virtual weights), else every decomposed
    matrix's component weights as the kind labels them (KindAnalysis.panel)."""
    wide = an.part.wide_panels(replicate)
    if wide is not None:
        return wide
    return [an.part.panel(name, an.matrix_weights(name)[replicate]) for name in an.matrix_names()]


def shown_replicates(an: Any, per_replicate: int) -> tuple[range, str]:
    """(the replicates a figure shows, a note if not all): every one, unless their panels
    (`per_replicate` each) would pass MAX_PANELS."""
    n = max(1, min(an.I, MAX_PANELS // max(per_replicate, 1)))
    return range(n), ("" if n == an.I else f"the first {n} of {an.I} replicates")


def _build_components(an: Any, path: str) -> str:
    """Every replicate's components in feature order (the matching the kind's metrics use), one
    panel per replicate and matrix. Components spanning every matrix (attribution methods) share
    one order; per-matrix subcomponents (causal-importance methods) each matrix its own."""
    causal = an.importance == "causal"
    names = an.matrix_names()
    first = component_matrices(an, 0)
    reps, note = shown_replicates(an, len(first))
    panels = []
    for i in reps:
        mats = first if i == 0 else component_matrices(an, i)
        one = None if causal else feature_order(an, i, mats=mats)
        for k, (label, P) in enumerate(mats):
            if causal:
                order, feats = feature_order(an, i, names[k]) if len(mats) == len(names) else \
                    feature_first(None, _norms(P))
            else:
                order, feats = one
            panels.append((f"replicate {i}: {label}" if an.I > 1 else label, P, order, feats))
    what = "subcomponents" if causal else "components"
    return plot_components(panels, path, f"{an.exp.name}: {what} in feature order (c = {what[:-1]}, "
                                         f"f = the feature it is matched to; then the rest, largest first)",
                           what=what, note=note)


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

"""Residual-MLP plots: paper Figs. 6-8, 10, 14-25 and the component categories (APD), and their
SPD versions (SPD paper Figs. 6-7: W_in subcomponents, causal importances)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...report.plots import register_plot
from ...report.plots_common import MIN_FONT, cmap, color, figure, integer_ticks, positive, save, suptitle, symmetric_limit
from .analysis import CATEGORY_CUTOFF, log_bins
from .model import residual_dims

SCRUB_COLORS = {"topk": "#1f77b4", "scrubbed": "#e377c2", "anti_scrubbed": "#2ca02c", "random": "#ff7f0e"}
SCRUB_LABELS = {"topk": "APD (top-k)", "scrubbed": "scrubbed", "anti_scrubbed": "anti-scrubbed",
                "random": "random half ablated", "ci_masked": "SPD (CI-masked)"}
SCRUB_COLORS["ci_masked"] = SCRUB_COLORS["topk"]


def plot_neuron_contributions(target: np.ndarray, rows: np.ndarray, components: np.ndarray, path: str,
                              layer_sizes: tuple[int, ...] = (), title: str = "",
                              component_label: str = "dominant APD component c*(f) = argmax_c max_n contrib_c[f, n]") -> str:
    """Figs. 6 / 10: neuron contributions of the first features. `target` (n, N) rows of the target,
    `rows` (n, N) the same features' rows of their dominant components `components` (n,).
    One colour scale for both panels; dotted lines separate the MLP layers."""
    n, N = target.shape
    lim = symmetric_limit(target, rows)
    fig, axes = figure(2, 1, (max(8.0, min(16.0, 0.16 * N + 3.5)), 0.32 * n * 2 + 2.2), sharex=True)
    panels = [("target model: (W_U[f] W_out) * (W_in W_E[f])", target, [f"f{f}" for f in range(n)]),
              (component_label, rows,
               [f"f{f} (c{int(c)})" for f, c in enumerate(components)])]
    im = None
    for ax, (label, M, ticks) in zip(axes[:, 0], panels):
        im = ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        ax.set_yticks(np.arange(n), ticks, fontsize=7)
        ax.set_ylabel("input feature")
        ax.set_title(label, fontsize=9)
        integer_ticks(ax)
        edge = 0
        for size in layer_sizes[:-1]:
            edge += size
            ax.axvline(edge - 0.5, color="black", ls=":", lw=1)
    axes[1, 0].set_xlabel("neuron" + (" (layers concatenated, layer 0 first)" if len(layer_sizes) > 1 else ""))
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8, label="contribution")
    suptitle(fig, title or f"Neuron contributions, first {n} features")
    return save(fig, path)


def plot_feature_response(feature: int, target: np.ndarray, top1: np.ndarray, scrubbed: np.ndarray,
                          anti: np.ndarray, path: str, title: str = "", lines: int = 20,
                          model_label: str = "APD (top-1)") -> str:
    """Figs. 7 / 24: MLP output (output minus x W_E W_U) at every output index for the one-hot
    input x_feature = 1. Scrubbed / anti-scrubbed runs: `lines` individual runs (thin), mean +- std
    (band); target and APD top-1 as references."""
    F = target.shape[-1]
    idx = np.arange(F)
    fig, axes = figure(1, 1, (9.0, 4.2))
    ax = axes[0, 0]
    for runs, key in ((scrubbed, "scrubbed"), (anti, "anti_scrubbed")):
        c = SCRUB_COLORS[key]
        for r in runs[:lines]:
            ax.plot(idx, r, color=c, lw=0.4, alpha=0.25)
        mu, sd = runs.mean(axis=0), runs.std(axis=0)
        ax.fill_between(idx, mu - sd, mu + sd, color=c, alpha=0.2)
        ax.plot(idx, mu, color=c, lw=1.5, label=f"{SCRUB_LABELS[key]} (mean +- std of {len(runs)})")
    ax.plot(idx, target, color="#1f77b4", lw=1.8, label="target model")
    ax.plot(idx, top1, color="black", lw=1.0, ls="--", label=model_label)
    ax.axvline(feature, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("output index")
    ax.set_ylabel("MLP output (output - x W_E W_U)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"Output for one-hot input x_{feature} = 1, half of the components ablated")
    return save(fig, path)


def plot_scrub_histogram(losses: dict[str, np.ndarray], path: str, monosemantic: float | None = None,
                         high: float | None = None, title: str = "") -> str:
    """Figs. 8 / 25: histograms of per-sample MSE vs the target output (50 log bins from 1e-7 to
    `high`, the zero-output loss), dashed lines at the means, grey line at the monosemantic mean.
    Samples below 1e-7 fall off the axis (counted in the legend)."""
    all_vals = np.concatenate([np.ravel(v) for v in losses.values()]) if losses else np.array([1.0])
    bins = log_bins(high if high is not None else np.nanmax(all_vals))
    fig, axes = figure(1, 1, (8.0, 4.2))
    ax = axes[0, 0]
    for key, v in losses.items():
        v = np.asarray(v, dtype=float)
        c = SCRUB_COLORS.get(key, "0.3")
        below = int(np.sum(v < bins[0]))
        ax.hist(v, bins=bins, histtype="step", color=c, lw=1.4,
                label=SCRUB_LABELS.get(key, key) + (f" ({below} below 1e-7)" if below else ""))
        ax.axvline(float(np.mean(v)), color=c, ls="--", lw=1.2)
    if monosemantic is not None and np.isfinite(monosemantic) and monosemantic > 0:
        ax.axvline(monosemantic, color="0.5", lw=1.5, label="monosemantic baseline (mean)")
    ax.set_xscale("log")
    ax.set_xlabel("MSE vs target output (per sample)")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    ax.set_title(title or "Ablating half of the components: scrubbed vs anti-scrubbed")
    return save(fig, path)


def plot_target_response(feature: int, onehot_out: np.ndarray, onehot_labels: np.ndarray, sweep_x: np.ndarray,
                         sweep_out: np.ndarray, sweep_labels: np.ndarray, path: str, title: str = "") -> str:
    """Figs. 14-15 / 19-20: the target's outputs vs the true labels. Top: one-hot input
    x_feature = 1 (all outputs) and the sweep of x_feature (output `feature`). Bottom: the same for
    every feature (colour = active feature; labels red)."""
    F = onehot_out.shape[0]
    fig, axes = figure(2, 2, (11.0, 7.5))
    idx = np.arange(F)
    ax = axes[0, 0]
    ax.plot(idx, onehot_out[feature], "o", ms=3, label="target output")
    ax.plot(idx, onehot_labels[feature], "x", ms=4, color="red", label="true label")
    ax.set(xlabel="output index", ylabel="output", title=f"one-hot input x_{feature} = 1")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(sweep_x, sweep_out[feature], label=f"target output {feature}")
    ax.plot(sweep_x, sweep_labels[feature], color="red", ls="--", label="true label")
    ax.set(xlabel=f"x_{feature} (other inputs 0)", ylabel=f"output {feature}", title=f"response to x_{feature}")
    ax.legend(fontsize=8)
    cm = cmap("viridis")
    ax = axes[1, 0]
    for f in range(F):
        ax.plot(idx, onehot_out[f], "o", ms=1.5, color=cm(f / max(F - 1, 1)))
    ax.plot(np.repeat(idx[None], F, 0).ravel(), onehot_labels.ravel(), "_", ms=4, color="red", label="true labels")
    ax.set(xlabel="output index", ylabel="output", title="all one-hot inputs (colour = active feature)")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    for f in range(F):
        ax.plot(sweep_x, sweep_out[f], lw=0.6, color=cm(f / max(F - 1, 1)))
    ax.plot(sweep_x, sweep_labels.mean(axis=0), color="red", ls="--", lw=1.5, label="true label (mean)")
    ax.set(xlabel="x_f (other inputs 0)", ylabel="output f", title="response of every feature (colour = feature)")
    ax.legend(fontsize=8)
    suptitle(fig, title or "Target model vs true labels")
    return save(fig, path)


def plot_per_feature_loss(target: np.ndarray, top1: np.ndarray, topk: np.ndarray | None, path: str,
                          topk_label: str = "batch top-k", title: str = "") -> str:
    """Figs. 16-17 / 21-22: MSE vs the true labels per feature on single-feature samples, features
    sorted by the target's loss. Top: APD with per-sample top-1; bottom: APD with batch top-k."""
    order = np.argsort(np.where(np.isfinite(target), target, np.inf), kind="stable")
    F = len(target)
    panels = [("APD, per-sample top-1", top1)] + ([(f"APD, {topk_label}", topk)] if topk is not None else [])
    fig, axes = figure(len(panels), 1, (min(16.0, 0.12 * F + 5), 3.0 * len(panels) + 0.8), sharex=True, sharey=True)
    x = np.arange(F)
    for ax, (label, v) in zip(axes[:, 0], panels):
        ax.bar(x - 0.2, target[order], 0.4, color="#1f77b4", label="target model")
        ax.bar(x + 0.2, v[order], 0.4, color="#ff7f0e", label=label)
        ax.set_ylabel("MSE w.r.t. true labels")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    step = max(1, F // 25)
    axes[-1, 0].set_xticks(x[::step], [str(int(f)) for f in order[::step]], fontsize=MIN_FONT)
    axes[-1, 0].set_xlabel("input feature (sorted by the target's loss)")
    suptitle(fig, title or "Per-feature loss on single-feature samples")
    return save(fig, path)


def plot_active_components(top1_mse: np.ndarray, n_active: np.ndarray, path: str, title: str = "") -> str:
    """Figs. 18 / 23: per feature, the mean number of active components under batch top-k (y)
    against the MSE of per-sample top-1 vs the target output (x), on single-feature samples."""
    fig, axes = figure(1, 1, (6.0, 4.5))
    ax = axes[0, 0]
    ok = np.isfinite(top1_mse) & np.isfinite(n_active)
    ax.scatter(positive(top1_mse[ok]), n_active[ok], s=14, alpha=0.8)
    for f in np.flatnonzero(ok):
        if len(top1_mse) <= 30:
            ax.annotate(str(f), (top1_mse[f], n_active[f]), xytext=(3, 3), textcoords="offset points", fontsize=MIN_FONT)
    if np.isfinite(positive(top1_mse[ok])).any():
        ax.set_xscale("log")
    ax.set_xlabel("MSE of APD top-1 vs target output")
    ax.set_ylabel("mean active components (batch top-k)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "Active components per feature vs single-component loss")
    return save(fig, path)


def plot_component_categories(counts: dict[str, int], features_represented: int, dedicated: int, n_features: int,
                              path: str, cutoff: float = 0.04, title: str = "",
                              criterion: str = "max contribution", what: str = "components") -> str:
    """Bars: components representing 0 (dead), 1 (mono), 2 (duo) or more (poly) features
    (max neuron contribution > cutoff), with feature coverage in the title."""
    keys = ("dead", "mono", "duo", "poly")
    fig, axes = figure(1, 1, (6.0, 4.0))
    ax = axes[0, 0]
    bars = ax.bar(keys, [counts[k] for k in keys], color=[color(i) for i in range(4)])
    for b, k in zip(bars, keys):
        ax.annotate(str(counts[k]), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=9)
    ax.set_ylabel(what)
    ax.set_xlabel(f"features represented ({criterion} > {cutoff:g})")
    ax.set_title(title or f"{features_represented}/{n_features} features represented, {dedicated} by a dedicated component",
                 fontsize=10)
    return save(fig, path)


# ------------------------------------------------------------------------------------------
# From a run (replicate 0; the metrics cover every replicate)


def build_neuron_contributions(an: Any, path: str) -> str:
    if an.importance == "causal":
        return neuron_contributions_of(an, path, "SPD paper Figs. 6, 7",
                                       "W_in subcomponent m*(f) = argmax_m max_n contrib_m[f, n], with the summed W_out")
    return neuron_contributions_of(an, path, "paper Figs. 6, 10")


def neuron_contributions_of(an: Any, path: str, figures: str, *legend: str) -> str:
    """The neuron-contribution plot of the first 10 features of an analysis (replicate 0), each
    with its dominant component; `legend` passes on to plot_neuron_contributions."""
    c = an.part.contributions()
    n = min(10, an.arch.features)
    dom = c["dominant"][0][:n]
    rows = c["components"][0][dom, np.arange(n)]
    _, d_mlp, layers = residual_dims(an.arch)
    return plot_neuron_contributions(c["target"][0][:n], rows, dom, path, (d_mlp,) * layers,
                                     f"{an.exp.name}: neuron contributions, first {n} features ({figures})", *legend)


def build_feature_response(an: Any, path: str) -> str:
    r = an.part.feature_response()
    if an.importance == "causal":
        return plot_feature_response(r["feature"], r["target"][0], r["top1"][0], r["scrubbed"][0], r["anti_scrubbed"][0],
                                     path, f"{an.exp.name}: x_{r['feature']} = 1, the feature's subcomponents kept "
                                     "(scrubbed) or ablated (anti-scrubbed), half of the others ablated",
                                     model_label="SPD (CI-masked)")
    return plot_feature_response(r["feature"], r["target"][0], r["top1"][0], r["scrubbed"][0], r["anti_scrubbed"][0], path,
                                 f"{an.exp.name}: x_{r['feature']} = 1, mapped component c{int(r['component'][0])} "
                                 "kept (scrubbed) or ablated (anti-scrubbed) (Figs. 7, 24)")


def build_scrub_histogram(an: Any, path: str) -> str:
    if an.importance == "causal":
        return scrub_histogram_of(an, path, ("ci_masked", "ci_masked_vs_target"),
                                  f"{an.exp.name}: per-sample MSE with half of the subcomponents ablated (APD Figs. 8, 25)")
    return scrub_histogram_of(an, path, ("topk", "topk_vs_target"),
                              f"{an.exp.name}: per-sample MSE with half of the components ablated (Figs. 8, 25)")


def scrub_histogram_of(an: Any, path: str, model: tuple[str, str], title: str) -> str:
    """The scrub histogram of an analysis's sampled losses; `model` = (label, key) of the decomposed
    model's own loss (APD's top-k, SPD's CI-masked)."""
    s = an.sampled(scrub=True)
    keep = s["active_input"][0]
    losses = {k: s[src][0][keep] for k, src in (model, ("scrubbed", "scrubbed"),
                                                  ("anti_scrubbed", "anti_scrubbed"), ("random", "random")) if src in s}
    mono = float(np.mean(s["monosemantic"][0][keep])) if keep.any() else None
    high = float(np.max(s["zero"][0])) if s["zero"][0].size else None
    return plot_scrub_histogram(losses, path, mono, high, title)


def build_target_response(an: Any, path: str) -> str:
    r = an.part.target_response()
    return plot_target_response(an.response_feature(), r["onehot_out"][0], r["onehot_labels"][0], r["sweep_x"],
                                r["sweep_out"][0], r["sweep_labels"][0], path,
                                f"{an.exp.name}: target model vs true labels (Figs. 14-15, 19-20)")


def build_per_feature_loss(an: Any, path: str) -> str:
    pf = an.part.per_feature()
    tk = an.topk
    label = f"batch top-k {tk.value:g}" if tk is not None and tk.mode == "batch" else (f"top-k ({tk.mode} {tk.value:g})" if tk else "")
    return plot_per_feature_loss(pf["target_vs_labels"][0], pf["top1_vs_labels"][0],
                                 pf["topk_vs_labels"][0] if "topk_vs_labels" in pf else None, path, label,
                                 f"{an.exp.name}: per-feature MSE, single-feature samples (Figs. 16-17, 21-22)")


def build_active_components(an: Any, path: str) -> str:
    pf = an.part.per_feature()
    if "n_components" not in pf:
        raise ValueError("needs a top-k mask (the spec has no top-k)")
    return plot_active_components(pf["top1_vs_target"][0], pf["n_components"][0], path,
                                  f"{an.exp.name}: active components per feature (Figs. 18, 23)")


def build_component_categories(an: Any, path: str) -> str:
    c = an.part.categories()[0]
    if an.importance == "causal":
        return plot_component_categories(c, c["features_represented"], c["dedicated_features"], an.arch.features, path,
                                         an.ci_active, f"{an.exp.name}: {c['features_represented']}/{an.arch.features} "
                                         f"features represented, {c['dedicated_features']} by a dedicated W_in "
                                         "subcomponent", criterion="one-hot causal importance", what="W_in subcomponents")
    return plot_component_categories(c, c["features_represented"], c["dedicated_features"], an.arch.features, path,
                                     CATEGORY_CUTOFF, f"{an.exp.name}: {c['features_represented']}/{an.arch.features} "
                                     f"features represented, {c['dedicated_features']} by a dedicated component")


for _name, _build in (("neuron_contributions", build_neuron_contributions), ("feature_response", build_feature_response),
                      ("scrub_histogram", build_scrub_histogram), ("target_response", build_target_response),
                      ("per_feature_loss", build_per_feature_loss), ("active_components", build_active_components),
                      ("component_categories", build_component_categories)):
    register_plot(_name, _build, kind="resid_mlp")

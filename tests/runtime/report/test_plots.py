"""Every plot function writes a non-empty PNG; `make_plots` draws every plot of each kind from a
hand-built run; importing the runtime needs neither matplotlib nor scipy."""
import os
import subprocess
import sys

import numpy as np
import pytest

from run_cases import gated_run, resid_run, tms_run
from runtime.report import plots
from runtime.targets.gated import plots as plots_gated
from runtime.targets.resid_mlp import plots as plots_resid
from runtime.targets.tms import plots as plots_tms
from runtime.spec import PLOTS, applies
from paths import ROOT

PNG = b"\x89PNG\r\n\x1a\n"
rng = np.random.default_rng(0)


def is_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    return head == PNG and os.path.getsize(path) > 1000


HIST = [{"step": s, "lr": 1e-3, "total": 1.0 / (s + 1), "total/replicates": [1.0 / (s + 1), 2.0 / (s + 1)],
         "faithfulness": 0.0 if s == 0 else 1e-3 / s, "k_per_sample": 1.2, "used_components": 5.0 - s // 20,
         "used_components/replicates": [5.0, 5.0 - s // 20]} for s in range(0, 50, 10)]

CASES = {
    "losses": lambda p: plots.plot_losses(HIST, p, [{"step": 0, "loss": [1.0, 2.0], "loss_mean": 1.5},
                                                    {"step": 9, "loss": [0.5, 0.2], "loss_mean": 0.35}]),
    "losses_empty": lambda p: plots.plot_losses([], p),
    "components": lambda p: plots.plot_components(
        [("W", rng.normal(size=(8, 5, 2)), np.arange(8)[::-1], [0, 1, 2, 3, 4, None, None, None])], p),
    "components_two": lambda p: plots.plot_components(
        [(name, rng.normal(size=(3, 4, 2)), np.arange(3), [None] * 3) for name in ("in", "out")], p),
    "attributions": lambda p: plots.plot_attributions([("r0", rng.random((5, 5))), ("r1", rng.random((5, 5)))], p),
    "mse_by_sparsity": lambda p: plots.plot_mse_by_sparsity(
        {"training": {"target": np.array([0.1, 0.2]), "apd": np.array([0.3, 0.1])},
         "exactly 1": {"target": np.array([0.01, 0.02]), "monosemantic": np.array([0.0, 0.0])}}, p),
    "polygons": lambda p: plots_tms.plot_polygons(rng.normal(size=(5, 2)), rng.normal(size=(4, 5, 2)), p),
    "neuron_contributions": lambda p: plots_resid.plot_neuron_contributions(
        rng.normal(size=(10, 50)), rng.normal(size=(10, 50)), np.arange(10), p, (25, 25)),
    "feature_response": lambda p: plots_resid.plot_feature_response(
        42, rng.normal(size=100), rng.normal(size=100), rng.normal(size=(30, 100)), rng.normal(size=(30, 100)), p),
    "scrub_histogram": lambda p: plots_resid.plot_scrub_histogram(
        {"topk": 10 ** rng.uniform(-8, -2, 300), "scrubbed": 10 ** rng.uniform(-6, -2, 300),
         "anti_scrubbed": 10 ** rng.uniform(-3, 0, 300), "random": np.zeros(300)}, p, 0.05, 1.0),
    "target_response": lambda p: plots_resid.plot_target_response(
        2, rng.normal(size=(6, 6)), np.eye(6) * 2, np.linspace(-1, 1, 11), rng.normal(size=(6, 11)),
        rng.normal(size=(6, 11)), p),
    "per_feature_loss": lambda p: plots_resid.plot_per_feature_loss(rng.random(20), rng.random(20), rng.random(20), p),
    "per_feature_loss_nan": lambda p: plots_resid.plot_per_feature_loss(
        np.array([0.1, np.nan, 0.3]), np.array([0.2, np.nan, 0.1]), None, p),
    "active_components": lambda p: plots_resid.plot_active_components(rng.random(20), 1 + rng.random(20), p),
    "component_categories": lambda p: plots_resid.plot_component_categories(
        {"dead": 30, "mono": 90, "duo": 8, "poly": 2}, 98, 90, 100, p),
    "gated_functions": lambda p: plots_gated.plot_gated_functions(
        np.linspace(0, 5, 30), rng.normal(size=(4, 30)), rng.normal(size=(4, 30)), p, rng.normal(size=(4, 30))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_plot_function_writes_png(tmp_path, name):
    path = CASES[name](str(tmp_path / "sub" / f"{name}.png"))
    assert path.endswith(".png") and is_png(path)


def test_gated_network_plot(tmp_path):
    r = gated_run(functions=2, neurons=3, layers=2)
    an_paths, errors = plots.make_plots(r, str(tmp_path), ["gated_network", "gated_functions"])
    assert not errors and all(is_png(p) for p in an_paths.values())


@pytest.mark.parametrize("case", [tms_run, resid_run, gated_run])
def test_make_plots_draws_every_plot_of_the_kind(tmp_path, case):
    r = case()
    paths, errors = plots.make_plots(r, str(tmp_path))
    kind = r.arch.kind
    assert errors == {}
    assert set(paths) == {k for k in PLOTS if applies(k, kind, r.experiment.decompose.method, "plots")}
    for name, p in paths.items():
        assert os.path.basename(p) == f"{name}.png" and is_png(p)


def test_make_plots_reports_inapplicable_and_failing_plots(tmp_path, monkeypatch):
    r = tms_run(I=1)

    def broken(an, path):
        raise ValueError("nope")

    monkeypatch.setitem(plots.BUILDERS, ("components", None, None), broken)
    paths, errors = plots.make_plots(r, str(tmp_path), ["losses", "components", "scrub_histogram", "bogus"])
    assert set(paths) == {"losses"}
    assert "nope" in errors["components"] and "tms" in errors["scrub_histogram"] and errors["bogus"] == "unknown plot"


def test_runtime_imports_without_matplotlib_or_scipy():
    # every module of the runtime, so a new top-level matplotlib import anywhere fails here
    code = ("import importlib, pkgutil, sys, runtime\n"
            "for m in pkgutil.walk_packages(runtime.__path__, 'runtime.'): importlib.import_module(m.name)\n"
            "bad = [m for m in ('matplotlib', 'scipy') if m in sys.modules]\n"
            "assert not bad, bad")
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_scrub_plots_work_when_the_report_did_not_ask_for_scrub_metrics(tmp_path):
    from run_cases import replace_report

    r = replace_report(resid_run(), metrics=("topk_mse",), plots=("losses",))
    paths, errors = plots.make_plots(r, str(tmp_path), ["per_feature_loss", "scrub_histogram", "active_components"])
    assert errors == {} and len(paths) == 3


def test_long_figure_titles_wrap_to_the_figure_width():
    from runtime.report.plots_common import figure, suptitle

    fig, _ = figure(1, 1, (4.0, 3.0))
    long = "tms_40_10_adopt: mean share of the attribution per component, replicate 0 of 5"
    suptitle(fig, long + "\nsecond line")
    lines = fig.get_suptitle().split("\n")
    per_line = int(4.0 * 72 / (0.55 * 12))
    assert len(lines) >= 3 and max(len(s) for s in lines) <= per_line and lines[-1] == "second line"
    assert " ".join(lines[:-1]) == long  # only wrapped, nothing dropped
    fig, _ = figure(1, 1, (12.0, 3.0))
    suptitle(fig, "short title")
    assert fig.get_suptitle() == "short title"


# ------------------------------------------------------------------------------------------
# Feature order, every replicate, readable at page width


class Figures:
    """Every figure `save` writes while installed (plots_common.SAVE_HOOKS), by file name."""

    def __init__(self, monkeypatch):
        from runtime.report import plots_common

        self.figs = {}
        monkeypatch.setattr(plots_common, "SAVE_HOOKS", [self.keep])

    def keep(self, fig, path):
        self.figs[os.path.basename(path)[:-4]] = fig


def _permuted_tms(perm, I=2):
    """tms_run whose component perm[f] holds feature f's row of W (the identity run, relabelled)."""
    from runtime.methods.apd import components as apd

    r = tms_run(I=I)
    A, B = apd.to_components(r.decomposition.comps, "W", 5)
    inv = np.argsort(perm)
    comps = apd.from_components("W", np.asarray(A)[:, inv], np.asarray(B)[:, inv])
    r.decomposition.comps.update(comps)
    r.analysis = None
    return r


def test_components_and_attributions_are_in_feature_order_for_every_replicate(tmp_path, monkeypatch):
    perm = np.array([3, 0, 4, 1, 2])  # feature f lives in component perm[f]
    r = _permuted_tms(perm)
    figs = Figures(monkeypatch)
    paths, errors = plots.make_plots(r, str(tmp_path), ["components", "attributions"])
    assert errors == {}
    comp = figs.figs["components"]
    panels = [ax for ax in comp.axes if ax.get_images()]
    assert len(panels) == 2  # one per replicate
    for ax in panels:
        labels = [t.get_text() for t in ax.texts]
        assert labels == [f"c{perm[f]} f{f}" for f in range(5)], labels
    att = figs.figs["attributions"]
    tables = [ax for ax in att.axes if ax.get_images()]
    assert len(tables) == 2 and [ax.get_title() for ax in tables] == ["replicate 0", "replicate 1"]
    for ax in tables:
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in perm]
        shown = ax.get_images()[0].get_array()
        assert np.all(np.argmax(shown, axis=1) == np.arange(5))  # the diagonal: each feature's own component


def test_feature_first_puts_matched_components_first_then_the_rest_by_size():
    from runtime.report.plots_common import feature_first

    order, feats = feature_first(np.array([2, 2, 0]), np.array([1.0, 5.0, 3.0, 4.0]))
    assert order.tolist() == [2, 0, 1, 3] and feats == [0, 2, None, None]  # feature 1 shares feature 0's
    order, feats = feature_first(None, np.array([1.0, 5.0, 3.0]))
    assert order.tolist() == [1, 2, 0] and feats == [None] * 3


def _layout_problems(fig):
    """What makes a figure hard to read at the report's page width: wider than the page, text
    smaller than MIN_FONT, tick labels that overlap on one axis."""
    from matplotlib.text import Text
    from runtime.report.plots_common import MIN_FONT, PAGE_WIDTH, overlapping, renderer, tick_labels

    out = []
    if fig.get_figwidth() > PAGE_WIDTH + 1e-9:
        out.append(f"{fig.get_figwidth():.1f} in wide")
    r = renderer(fig)
    small = {t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and t.get_fontsize() < MIN_FONT - 1e-9}
    if small:
        out.append(f"text below {MIN_FONT} pt: {sorted(small)[:5]}")
    for ax in fig.axes:
        for which in ("x", "y"):
            if ax.get_visible() and overlapping(tick_labels(ax, which), r, pad=0.0):
                out.append(f"overlapping {which} tick labels in '{ax.get_title()}'")
    return out


def test_the_layout_check_finds_overlapping_ticks_and_small_text():
    from runtime.report.plots_common import figure

    fig, axes = figure(1, 1, (3.0, 2.0))
    axes[0, 0].set_xticks(range(60), [f"label{i}" for i in range(60)], fontsize=9)
    axes[0, 0].set_title("tiny", fontsize=4)
    problems = _layout_problems(fig)
    assert any("overlapping x" in p for p in problems) and any("below" in p for p in problems)


@pytest.mark.parametrize("case", ["tms", "resid", "gated", "spd_tms", "spd_resid"])
def test_every_plot_is_readable_at_page_width(tmp_path, monkeypatch, case):
    """No figure wider than the page, no text under MIN_FONT, no overlapping tick labels after
    `save` thinned them: every plot of every kind, APD and SPD."""
    from run_cases import spd_resid_run, spd_tms_run

    run = {"tms": lambda: tms_run(I=3), "resid": resid_run, "gated": gated_run, "spd_tms": spd_tms_run,
           "spd_resid": spd_resid_run}[case]()
    figs = Figures(monkeypatch)
    paths, errors = plots.make_plots(run, str(tmp_path), sorted(k for k in PLOTS if applies(
        k, run.arch.kind, run.experiment.decompose.method, "plots")))
    assert errors == {} and figs.figs
    found = {name: _layout_problems(fig) for name, fig in figs.figs.items()}
    assert not {k: v for k, v in found.items() if v}, found


def test_the_losses_plot_names_k_per_sample_apart_from_the_mean_active_metric(tmp_path, monkeypatch):
    figs = Figures(monkeypatch)
    plots.plot_losses(HIST, str(tmp_path / "l.png"))
    titles = [ax.get_title() for ax in figs.figs["l"].axes]
    assert "k/B: components selected per sample (training batch)" in titles
    assert not any("mean_active" in t or "active components / sample" in t for t in titles)
    old = [{k.replace("k_per_sample", "mean_active"): v for k, v in e.items()} for e in HIST]  # a log written before
    plots.plot_losses(old, str(tmp_path / "old.png"))
    assert "k/B: components selected per sample (training batch)" in [ax.get_title() for ax in figs.figs["old"].axes]

"""SPD analyses (runtime/methods/spd/analysis.py on runtime/analysis/causal.py), metrics and plots on decompositions with known answers
(tests/run_cases.py: SPD's ground truth built by hand), and the run directory of an SPD run."""
import numpy as np
import pytest

from run_cases import spd_resid_run, spd_tms_run
from runtime.analysis import causal as aspd
from runtime.targets.gated import analysis as gated_analysis
from runtime.targets.resid_mlp import analysis as resid_analysis
from runtime.targets.tms import analysis as tms_analysis
from runtime.analysis.metrics import evaluate
from runtime.report import plots
from runtime.spec import PLOTS, applies


def test_permutation_order_follows_the_paper():
    g = np.array([[0.1, 0.9, 0.0, 0.3],
                  [0.8, 0.95, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 0.2]])
    # feature 0 takes 1; feature 1 the best of the rest (0); feature 2 the best left (3); then 2
    assert list(aspd.permutation_order(g)) == [1, 0, 3, 2]


def test_ci_error_and_categories_on_tables():
    g = np.array([[1.0, 0.0, 0.2], [0.0, 0.7, 0.0]])
    assert np.isclose(tms_analysis.ci_error(g, np.array([0, 1])), ((0 + 0 + 0.2) + (0 + 0.3 + 0)) / 2)
    assert np.isclose(tms_analysis.ci_error(np.array([[1.3, -0.1]]), np.array([0])), 0.0)  # clipped to [0, 1]
    c = resid_analysis.categories_from_ci(np.array([[0.9, 0.0, 0.5], [0.0, 0.9, 0.5], [0.0, 0.0, 0.05]]), aspd.CI_ACTIVE)
    assert (c["mono"], c["duo"], c["dead"], c["dedicated_features"], c["features_represented"]) == (2, 1, 0, 2, 2)
    count, sep = gated_analysis.gated_separation(np.array([[True, False, True], [False, True, True]]))
    assert count == 0 and not sep.any()  # each has its own, but both share subcomponent 2
    count, sep = gated_analysis.gated_separation(np.array([[True, False, False], [False, True, False]]))
    assert count == 2


def test_tms_ground_truth_metrics():
    r = spd_tms_run()
    m = evaluate(r)
    assert np.allclose(m["mmcs"], 1.0) and np.allclose(m["ml2r"], 1.0) and m["matched_rows"] == [5.0] * len(m["mmcs"])
    # W's causal importances are exactly the truth; W^T's are all 0 (its truth row sums miss 1)
    assert np.allclose(m["ci_error"], 0.5)
    assert np.allclose(m["alive_subcomponents"], 5)
    an = r.analysis
    s = an.sampled()
    x_nonzero = s["active_input"]
    # ci_l0 counts exactly the active features (only W's subcomponents are ever important)
    assert np.all(s["n_components"][x_nonzero] >= 1)
    # W^T's subcomponents are never important, so the CI-masked model outputs ReLU(b) = 0
    assert np.allclose(m["ci_masked_mse"], s["zero"].mean(axis=1))
    g = an.onehot_ci()
    assert np.allclose(g["W"][:, :, :5], np.eye(5)[None]) and np.all(g["W"][:, :, 5:] == 0)


def test_resid_ground_truth_metrics():
    r = spd_resid_run(F=5)
    m = evaluate(r)
    assert m["dedicated_features"] == [5.0] and m["mono_components"] == [5.0] and m["poly_components"] == [0.0]
    assert np.isclose(m["scrubbed_loss"][0], 0.0, atol=1e-12)  # the active features' subcomponents suffice
    assert m["anti_scrubbed_loss"][0] > 0.01
    assert m["scrub_ratio"][0] > 1e6


@pytest.mark.parametrize("case", [spd_tms_run, spd_resid_run])
def test_every_spd_plot_is_drawn(tmp_path, case):
    r = case()
    paths, errors = plots.make_plots(r, str(tmp_path))
    assert errors == {}
    assert set(paths) == {k for k in PLOTS if applies(k, r.arch.kind, "spd", "plots")}
    assert "causal_importance" in paths and "attributions" not in paths


def test_apd_only_plots_are_refused(tmp_path):
    paths, errors = plots.make_plots(spd_tms_run(), str(tmp_path), ["attributions"])
    assert not paths and "method = spd" in errors["attributions"]


def test_run_directory_round_trip(tmp_path):
    from runtime.store.rundir import load_run, save_arrays

    r = spd_resid_run(F=4, I=2)
    save_arrays(r, str(tmp_path))
    (tmp_path / "spec.json").write_text(__import__("runtime").spec.to_json(r.experiment))
    back = load_run(str(tmp_path))
    assert back.decomposition.method == "spd"
    for k, v in r.decomposition.comps.items():
        assert np.array_equal(back.decomposition.comps[k], v), k
    V, U = back.components("layers.0.W_in", 1)
    assert V.shape == (4, 4) and U.shape == (4, 4)
    assert evaluate(back)["dedicated_features"] == [4.0, 4.0]
    keys = set(np.load(tmp_path / "decomposition.npz").files)
    assert {"layers.0.W_in.V", "layers.0.W_in.U", "layers.0.W_in.ci.w_in", "layers.0.W_out.ci.b_out"} <= keys

"""Metrics on constructed cases with known answers (`metrics.evaluate` and the TMS math)."""
import math

import numpy as np
import pytest

from run_cases import gated_run, replace_report, resid_run, tms_run
from runtime.analysis import metrics
from runtime.targets.resid_mlp import analysis as resid_analysis
from runtime.targets.tms.analysis import feature_match, mmcs_ml2r
from runtime.spec import METRICS, Expectation


def test_mmcs_ml2r_of_exact_rows_is_one():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(5, 2))
    P = np.zeros((5, 5, 2))
    P[np.arange(5), np.arange(5)] = W  # component c = row c of W (the paper's Z^(c))
    assert mmcs_ml2r(P, W) == pytest.approx((1.0, 1.0))
    best, cos, ratio = feature_match(P, W)
    assert list(best) == list(range(5))


def test_ml2r_halves_with_halved_components_and_mmcs_stays_one():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(6, 3))
    P = np.zeros((8, 6, 3))
    P[np.arange(6), np.arange(6)] = 0.5 * W
    assert mmcs_ml2r(P, W) == pytest.approx((1.0, 0.5))


def test_zero_rows_give_no_nan():
    W = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # a zero target row
    P = np.zeros((2, 3, 2))  # component 1 entirely zero
    P[0] = W
    mmcs, ml2r = mmcs_ml2r(P, W)
    assert np.isfinite(mmcs) and np.isfinite(ml2r)
    assert mmcs == pytest.approx(2 / 3)  # the zero row has no direction: cosine 0
    assert ml2r == pytest.approx(2 / 3)


def test_evaluate_tms_perfect_and_halved_per_replicate():
    r = tms_run(I=3)
    out = metrics.evaluate(r)
    assert out["mmcs"] == pytest.approx([1.0] * 3)
    assert out["ml2r"] == pytest.approx([1.0] * 3)
    assert out["matched_rows"] == [5.0] * 3
    out = metrics.evaluate(tms_run(I=2, scale=0.5))
    assert out["ml2r"] == pytest.approx([0.5, 0.5])
    assert out["mmcs"] == pytest.approx([1.0, 1.0])
    assert out["matched_rows"] == [5.0, 5.0]  # shrinkage does not unmatch a row


def test_evaluate_tms_zero_component_no_nan():
    out = metrics.evaluate(tms_run(I=2, zero_component=1))
    assert all(np.isfinite(out["mmcs"])) and all(np.isfinite(out["ml2r"]))
    assert out["mmcs"][0] == pytest.approx(0.8)  # feature 1 has no matching component
    assert out["matched_rows"][0] == 4.0
    assert out["dead_components"][0] >= 1  # the zero component is never selected


def test_evaluate_returns_requested_names_in_metric_order_with_replicate_lists():
    r = replace_report(tms_run(I=2), metrics=("ml2r", "faithfulness", "topk_mse"),
                       expect=(Expectation("mmcs", ">=", 0.9),))
    out = metrics.evaluate(r)
    assert list(out) == [k for k in METRICS if k in {"ml2r", "faithfulness", "topk_mse", "mmcs"}]
    assert all(isinstance(v, list) and len(v) == 2 for k, v in out.items() if k != "faithfulness")
    assert out["faithfulness"] == [1.0]  # from the history (single value when not per replicate)


def test_loss_metrics_per_replicate_from_history():
    hist = [{"step": 5, "total": 2.0, "total/replicates": [1.0, 3.0]}]
    assert metrics.loss_metric(hist, "total") == [1.0, 3.0]
    assert metrics.loss_metric(hist, "minimality") is None
    assert metrics.loss_metric([], "total") is None


def test_tms_sampled_metrics_of_a_perfect_decomposition():
    out = metrics.evaluate(tms_run(I=2))
    # components are exact rows and top-k at 0.5 per sample covers the (rare) active features
    assert all(v < 1e-2 for v in out["topk_mse"])
    assert all(0 < v <= 5 for v in out["mean_active"])


def test_resid_metrics_of_a_perfect_decomposition():
    out = metrics.evaluate(resid_run())
    assert out["dedicated_features"] == [4.0]
    assert out["mono_components"] == [4.0] and out["duo_components"] == [0.0] and out["poly_components"] == [0.0]
    assert out["scrubbed_loss"][0] < 1e-12
    assert out["anti_scrubbed_loss"][0] > 1e-3
    assert out["scrub_ratio"][0] > 1e6
    # one neuron per feature, identity embedding: the canonical decomposition is the same perfect one
    assert out["canonical_scrubbed_loss"][0] < 1e-12 and out["canonical_anti_scrubbed_loss"][0] > 1e-3
    assert out["target_loss"][0] < 1e-12  # y = x + ReLU(x) exactly
    assert out["per_feature_loss_top1"][0] < 1e-12
    assert out["per_feature_loss_topk"][0] < 1e-3
    assert out["dead_components"] == [0.0]


def test_gated_metrics_of_a_perfect_and_a_merged_decomposition():
    out = metrics.evaluate(gated_run())
    assert out["separated_functions"] == [2.0]
    assert out["function_mse"][0] < 1e-20
    out = metrics.evaluate(gated_run(swap=True))
    assert out["separated_functions"] == [0.0]  # one component carries both functions


def test_failing_metric_is_left_out_and_recorded(monkeypatch):
    from runtime.analysis.core import analysis_for

    def boom(an):
        raise RuntimeError("analysis bug")

    monkeypatch.setitem(metrics.COMPUTED, "ml2r", boom)
    r = tms_run(I=1)
    with pytest.warns(RuntimeWarning, match="ml2r"):
        out = metrics.evaluate(r)
    assert "ml2r" not in out and "mmcs" in out
    assert "analysis bug" in analysis_for(r).errors["ml2r"]


def test_scrub_ratio_edge_cases():
    class Fake:
        def __init__(self, s, a):
            self._s = {"scrubbed": np.array([s]), "anti_scrubbed": np.array([a]), "active_input": np.ones((1, 1), bool)}

        def sampled(self, scrub=False):
            return {k: (v[:, None] if v.ndim == 1 else v) for k, v in self._s.items()}

    assert resid_analysis._scrub_ratio()(Fake(0.0, 1.0))[0] == math.inf
    assert np.isnan(resid_analysis._scrub_ratio()(Fake(0.0, 0.0))[0])
    assert resid_analysis._scrub_ratio()(Fake(0.5, 1.0))[0] == pytest.approx(2.0)
    assert resid_analysis._scrub_ratio("canonical_")(Fake(0.5, 1.0)) is None  # no canonical entries: not computed

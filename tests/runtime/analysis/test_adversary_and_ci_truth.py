"""The measures every method gets (runtime/analysis/adversary.py, ci_truth.py) on decompositions with
known answers (tests/run_cases.py), and through a real VPD run: the evaluation adversary's
adv_recon / clean_recon / stoch_recon, identity_ci_error and dense_ci_error."""
import dataclasses

import numpy as np

from run_cases import replace_report, resid_run, spd_resid_run, spd_tms_run
from runtime.analysis.ci_truth import ci_errors
from runtime.analysis.core import analysis_for
from runtime.analysis.metrics import evaluate
from runtime.pipeline import runner
from runtime.spec import EvalAdversary, Experiment, Report, Training
from runtime import LayerwiseCausalImportance, TmsTarget, VpdDecompose

ADV = ("adv_recon", "clean_recon", "stoch_recon")


def _metrics(result, names):
    return evaluate(replace_report(result, metrics=tuple(names)))


def test_ci_truth_of_the_ground_truth_decompositions():
    # APD: component f = neuron f of the identity residual MLP; its attributions on the probe of
    # feature f are on f alone
    assert _metrics(resid_run(F=4), ["identity_ci_error"])["identity_ci_error"] == [0.0]
    # one component zeroed (its W_in column): its feature's probe has no attribution: one missing diagonal
    run = resid_run(F=4)
    comps = {k: v.copy() for k, v in run.decomposition.comps.items()}
    comps["layers.0.W_in.B"][:, 2] = comps["layers.0.W_out.B"][:, 2] = 0.0  # (rank 1: row c of B is component c's)
    run = dataclasses.replace(run, decomposition=dataclasses.replace(run.decomposition, comps=comps))
    assert _metrics(run, ["identity_ci_error"])["identity_ci_error"] == [1.0]
    # SPD: W's subcomponent f is important exactly on x_f (0 errors); W^T's never are: 5 missing diagonals
    run = spd_tms_run(I=2, F=5, extra=2)
    assert _metrics(run, ["identity_ci_error"])["identity_ci_error"] == [5.0, 5.0]
    per_matrix = analysis_for(run).probe_importance()
    assert set(per_matrix) == {"W", "W.T"} and per_matrix["W"].shape == (2, 5, 7)
    # residual MLP: W_in identity (0 errors), W_out one dense block of d_mlp = F subcomponents (0 errors)
    m = _metrics(spd_resid_run(F=4), ["identity_ci_error", "dense_ci_error"])
    assert m == {"identity_ci_error": [0.0], "dense_ci_error": [0.0]}


def test_apd_has_no_dense_error_and_its_identity_error_is_on_normalised_attributions():
    run = resid_run(F=4)
    errors = ci_errors(analysis_for(run))
    assert set(errors) == {"identity_ci_error"} and errors["identity_ci_error"].tolist() == [0.0]
    table = analysis_for(run).probe_importance()["*"]
    assert table.shape == (1, 4, 4) and np.allclose(table.max(axis=-1), 1.0)


def test_the_adversary_cannot_break_what_is_all_selected():
    """APD, exact components, top-k keeping every component: the masks are 1 whatever the sources,
    so adversarial = clean = stochastic = 0; with batch top-k 0.3 (~0.7 features per sample are
    active and positive, so their neuron fires) some needed components are left out: the clean
    reconstruction is not 0; the loss grows as a missing component is scaled down, so the adversary
    ends where the clean model is (those sources at 0) and random sources restore part of it."""
    from runtime import TopK

    def with_topk(value):
        run = resid_run(F=4)
        return dataclasses.replace(run, experiment=dataclasses.replace(
            run.experiment, decompose=dataclasses.replace(run.experiment.decompose, topk=TopK("batch", value))))

    m = _metrics(with_topk(4.0), ADV)
    for name in ADV:
        assert np.allclose(m[name], 0.0, atol=1e-24), (name, m[name])
    m = _metrics(with_topk(0.3), ADV)
    assert m["clean_recon"][0] > 1e-6 and abs(m["adv_recon"][0] - m["clean_recon"][0]) < 1e-12
    assert m["stoch_recon"][0] < 0.9 * m["clean_recon"][0]
    # SPD: every subcomponent of W important where needed, W^T's never (g = 0): the sources alone set
    # W^T's masks, so clean (sources 0: W^T off) and the adversary's reconstruction differ from the exact 0
    m = _metrics(spd_tms_run(), ADV)
    assert all(v > 1e-6 for v in m["clean_recon"]) and all(v > 1e-6 for v in m["adv_recon"])


def _vpd_run(steps, adversary_steps):
    exp = Experiment(name="v", seed=0, replicates=2, target=TmsTarget(features=5, hidden=2),
                     train=Training(steps=300, batch=256),
                     decompose=VpdDecompose(components=6, steps=steps, batch=128, log_every=50,
                                            causal_importance=LayerwiseCausalImportance(widths=(8,))),
                     report=Report(metrics=ADV + ("identity_ci_error", "mmcs"), plots=(),
                                   adversary=EvalAdversary(steps=adversary_steps)))
    return runner.run(exp)


def test_a_vpd_run_reports_every_measure_and_the_attack_climbs_from_its_start():
    start, attacked = _vpd_run(60, 0), _vpd_run(60, 20)  # the same run; the attack from the same random start
    for name in ADV + ("identity_ci_error", "mmcs"):
        assert len(attacked.metrics[name]) == 2 and all(np.isfinite(attacked.metrics[name])), name
    assert start.metrics["clean_recon"] == attacked.metrics["clean_recon"]
    assert all(a >= s for a, s in zip(attacked.metrics["adv_recon"], start.metrics["adv_recon"]))
    assert attacked.metrics["adv_recon"] != start.metrics["adv_recon"]

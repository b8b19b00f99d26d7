"""End-to-end runs through the Python API and the run directory (small configs, seconds)."""
import json
import os

import numpy as np

from runtime.pipeline import runner
from runtime.store.rundir import load_run
from runtime.store.files import load_npz, load_target
from runtime.spec import Data, Decompose, Expectation, Experiment, FileTarget, Optimizer, Report, Schedule, Training
from runtime import Attribution, GatedTarget, ApdLosses as Losses, ResidMlpTarget, TmsTarget, TopK
from run_cases import tms_experiment


def test_short_tms_run_recovers_the_features(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.run(tms_experiment())
    assert result.metrics["mmcs"][0] > 0.95
    assert os.listdir(tmp_path) == []  # the in-memory API writes nothing
    A, B = result.components("W")
    assert A.shape == (5, 5, 3) and B.shape == (5, 3, 2)
    # faithfulness: the components sum to the target's weights
    np.testing.assert_allclose(np.einsum("cdm,cme->de", A, B), result.target["W"][0], atol=2e-2)
    assert result.decomposition.history[-1]["step"] == 400
    assert result.target_history[-1]["loss_mean"] < result.target_history[0]["loss_mean"]


def test_run_accepts_plain_python_values():
    from runtime.spec import to_dict

    result = runner.run(to_dict(tms_experiment(steps=20)), with_metrics=False)
    assert result.experiment.decompose.steps == 20
    assert result.metrics == {}


def test_float64_run_keeps_float64_everywhere():
    result = runner.run(tms_experiment(steps=20, dtype="float64"))
    assert all(v.dtype == np.float64 for v in result.decomposition.comps.values())
    assert all(v.dtype == np.float64 for v in result.target.values())
    r32 = runner.run(tms_experiment(steps=20))
    assert all(v.dtype == np.float32 for v in r32.decomposition.comps.values())


def test_run_directory_layout_and_reload(tmp_path):
    out = tmp_path / "run"
    exp = tms_experiment(steps=50, replicates=2, expect=(Expectation("faithfulness", "<=", 10.0),))
    summary = runner.run_to_dir(exp, str(out), spec_text="# spec text\n")
    assert summary["status"] == "ok"
    for name in ("spec.apd", "spec.json", "metrics.jsonl", "summary.json", "target.npz", "decomposition.npz",
                 "replicates/1/target.npz", "replicates/1/decomposition.npz"):
        assert (out / name).exists(), name
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    dec = [e for e in lines if e["phase"] == "decompose"]
    assert {"faithfulness", "minimality", "simplicity", "total", "lr"} <= set(dec[-1])
    assert [e["step"] for e in dec] == [0, 50]  # every log_every (100) steps and the last
    assert any(e["phase"] == "target" for e in lines)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["versions"]["numpy"] == np.__version__
    assert on_disk["seeds"]["experiment"]["seed"] == 0
    arch, params, _, meta = load_target(str(out / "target.npz"))
    assert arch == TmsTarget(features=5, hidden=2) and set(params) == {"W", "b"}
    assert params["W"].shape == (5, 2)
    comps = load_npz(str(out / "decomposition.npz"))
    assert comps["W.A"].shape == (5, 5, 3) and comps["W.B"].shape == (5, 3, 2)
    loaded = load_run(str(out))
    assert loaded.experiment == runner.run(exp, with_metrics=False).experiment
    for r in range(2):
        A, B = loaded.components("W", r)
        A0 = load_npz(str(out / ("decomposition.npz" if r == 0 else "replicates/1/decomposition.npz")))["W.A"]
        np.testing.assert_array_equal(A, A0)
    assert len(loaded.decomposition.history) == len(dec)


def test_failed_expectation_sets_status(tmp_path):
    exp = tms_experiment(steps=10, expect=(Expectation("mmcs", ">=", 1.0),))
    summary = runner.run_to_dir(exp, str(tmp_path / "run"))
    assert summary["status"] == "expectations_failed"
    assert summary["expectations"][0]["passed"] is False


def test_resid_and_gated_runs_end_to_end():
    resid = Experiment(
        replicates=2, target=ResidMlpTarget(features=6, d_embed=10, d_mlp=4, layers=2, in_bias=True),
        train=Training(steps=30, batch=64, optimizer=Optimizer("adamw", 3e-3, weight_decay=0.01), schedule=Schedule("cosine")),
        data=Data(probability=0.2),
        decompose=Decompose(components=8, topk=TopK("batch", 1.0), loss=Losses(act_recon=1.0, simplicity=1.0, simplicity_p=0.9),
                            unit_norm=True, steps=20, batch=32, log_every=10),
        report=Report(metrics=("faithfulness",), plots=()))
    r = runner.run(resid)
    A, B = r.components("layers.1.W_out", 1)
    assert A.shape == (8, 4, 4) and B.shape == (8, 4, 10)
    np.testing.assert_allclose(np.linalg.norm(r.decomposition.comps["layers.0.W_in.A"], axis=1), 1.0, rtol=1e-2)
    gated = Experiment(target=GatedTarget(functions=2, neurons=4, layers=2), data=Data(probability=0.3),
                       decompose=Decompose(components=2, topk=TopK("batch", 0.3), attribution=Attribution("gradient", "apd"),
                                           loss=Losses(faithfulness=0.1, minimality=5, simplicity=5), steps=10, batch=64),
                       report=Report(metrics=("faithfulness",), plots=()))
    g = runner.run(gated)
    assert g.experiment.train is None and "coefficients" in g.extras
    assert np.isfinite(g.metrics["faithfulness"][0])


def test_decomposing_a_saved_target(tmp_path):
    first = tms_experiment(steps=5)
    runner.run_to_dir(first, str(tmp_path / "a"), report=False)
    import dataclasses

    again = dataclasses.replace(first, target=FileTarget(str(tmp_path / "a" / "target.npz")), replicates=2)
    r = runner.run(again)
    saved = load_target(str(tmp_path / "a" / "target.npz"))[1]["W"]
    for k in range(2):
        np.testing.assert_array_equal(r.target["W"][k], saved)
    assert r.experiment.train is None

"""decompose.restarts: R inits per replicate trained together, the best held-out top-k MSE kept."""
import dataclasses
import json
import os

import numpy as np
import pytest

from runtime.pipeline import restarts, runner
from runtime.store.rundir import RunResult, load_run
from runtime.engine import seeding
from runtime.engine.data import sample_inputs
from runtime.engine.decompose import Decomposition, decompose
from runtime.spec import Decompose, Experiment, Optimizer, Report, Schedule, SpecValidationError, Training, check
from runtime import ApdLosses as Losses, TmsTarget, TopK
from paths import ROOT


def tiny(restarts_=2, replicates=2, steps=60):
    return check(Experiment(
        name="tiny", seed=3, replicates=replicates, target=TmsTarget(features=5, hidden=2),
        train=Training(steps=200, batch=256),
        decompose=Decompose(components=5, topk=TopK("batch", 0.211), loss=Losses(simplicity=0.7),
                            optimizer=Optimizer("adam", 3e-2), schedule=Schedule("constant", warmup=0.05),
                            steps=steps, batch=256, log_every=20, restarts=restarts_),
        report=Report(metrics=("mmcs", "topk_mse", "minimality"), plots=())))


def test_choose_takes_the_lowest_score_per_replicate():
    score = np.array([3.0, 1.0, 2.0,   # replicate 0 -> restart 1
                      0.5, np.nan, 0.5,  # replicate 1 -> restart 0 (NaN never wins, ties -> first)
                      np.nan, np.nan, 7.0])  # replicate 2 -> restart 2
    assert restarts.choose(score, 3, 3).tolist() == [1, 3, 8]


def test_expand_repeats_the_target_replicate_major():
    exp = tiny(restarts_=3, replicates=2)
    target = {"W": np.arange(2 * 5 * 2, dtype=float).reshape(2, 5, 2)}
    wide, wt, we = restarts.expand(exp, target, {"e": np.array([[1.0], [2.0]])})
    assert wide.replicates == 6 and wt["W"].shape == (6, 5, 2)
    for i in range(2):
        for r in range(3):
            np.testing.assert_array_equal(wt["W"][i * 3 + r], target["W"][i])
    assert we["e"][:, 0].tolist() == [1, 1, 1, 2, 2, 2]


def test_take_slices_components_and_history():
    comps = {"W.A": np.arange(4)[:, None, None] * np.ones((4, 2, 3)), "W.B": np.ones((4, 3, 2))}
    hist = [{"step": 0, "lr": 0.1, "minimality": 9.0, "minimality/replicates": [1.0, 2.0, 3.0, 4.0]}]
    dec = Decomposition(None, 1, 3, comps, hist)
    out = restarts.take(dec, np.array([1, 2]))
    assert out.comps["W.A"][:, 0, 0].tolist() == [1.0, 2.0]
    assert out.history[0]["minimality/replicates"] == [2.0, 3.0]
    assert out.history[0]["minimality"] == pytest.approx(2.5)  # the mean over the kept instances
    one = restarts.take(dec, np.array([3]))
    assert one.history[0]["minimality"] == 4.0 and "minimality/replicates" not in one.history[0]


def test_run_keeps_the_best_restart_of_a_wide_run():
    exp = tiny(restarts_=2, replicates=2)
    result = runner.run(exp)
    sel = result.selection
    assert sel["restarts"] == 2 and len(sel["scores"]) == 2 and len(sel["chosen"]) == 2
    assert sel["chosen"] == [int(np.argmin(s)) for s in sel["scores"]]

    # The same wide model trained by hand: the kept components are its chosen instances.
    arch, target, extras, _ = runner.build_target(exp)
    wide, wt, _ = restarts.expand(exp, target, extras)
    rng = seeding.stream(exp.decompose.seed, "apd_data")
    dec = decompose(wide, arch, wt, lambda b: sample_inputs(arch, exp.data, 4, b, rng, np.float32),
                    seeding.stream(exp.decompose.seed, "apd_init"))
    for i, r in enumerate(sel["chosen"]):
        np.testing.assert_array_equal(result.decomposition.comps["W.A"][i], dec.comps["W.A"][2 * i + r])
    # the scores are held-out top-k MSEs: recompute them from the hand-trained wide model
    res = RunResult(wide, arch, wt, {}, dec, [], {}, [], {}, {})
    np.testing.assert_allclose(np.reshape(restarts.scores(res), (2, 2)), sel["scores"], rtol=1e-6)
    assert result.decomposition.history[-1]["minimality/replicates"] == [
        dec.history[-1]["minimality/replicates"][2 * i + r] for i, r in enumerate(sel["chosen"])]
    assert len(result.metrics["mmcs"]) == 2


def test_one_restart_is_the_plain_run():
    a = runner.run(tiny(restarts_=1))
    assert a.selection is None
    b = runner.run(dataclasses.replace(tiny(restarts_=1)))
    np.testing.assert_array_equal(a.decomposition.comps["W.A"], b.decomposition.comps["W.A"])


def test_run_directory_records_the_choice_and_reloads_the_kept_history(tmp_path):
    exp = tiny(restarts_=2, replicates=1)
    summary = runner.run_to_dir(exp, str(tmp_path), report=False)
    assert summary["restarts"]["chosen"][0] in (0, 1)
    with open(tmp_path / "summary.json") as f:
        assert json.load(f)["restarts"] == json.loads(json.dumps(summary["restarts"]))
    phases = [json.loads(line).get("phase") for line in open(tmp_path / "metrics.jsonl")]
    assert "restarts" in phases and "decompose" in phases
    loaded = load_run(str(tmp_path))
    assert len(loaded.decomposition.history) == phases.count("decompose") == 4  # steps 0, 20, 40, 60
    assert loaded.selection == summary["restarts"]


def test_restarts_must_be_positive():
    with pytest.raises(SpecValidationError, match="decompose.restarts"):
        tiny(restarts_=0)


def test_the_language_sets_restarts(tmp_path):
    import apdspec

    spec = apdspec.load(os.path.join(ROOT, "specs", "quickstart.apd"),
                        ["decompose.restarts=3"])
    assert spec.experiment.decompose.restarts == 3
    with pytest.raises(apdspec.SpecError) as e:
        apdspec.load(os.path.join(ROOT, "specs", "quickstart.apd"),
                     ["decompose.restarts=0"])
    assert "restarts" in str(e.value) and "<override 1>:1:" in str(e.value)


def test_the_report_states_the_restarts(tmp_path):
    from runtime.report.document import render

    exp = tiny(restarts_=2, replicates=1)
    summary = runner.run_to_dir(exp, str(tmp_path), report=False)
    render(str(tmp_path))
    text = open(tmp_path / "report.md").read()
    assert f"kept restart per replicate: {summary['restarts']['chosen'][0]}" in text


def test_lp_restarts_are_chosen_by_the_final_total_loss_and_say_so():
    exp = tiny(restarts_=2, replicates=1, steps=20)
    dc = dataclasses.replace(exp.decompose, topk=None, loss=Losses(minimality=None, simplicity=1.0, sparsity=1.0))
    exp = check(dataclasses.replace(exp, decompose=dc, report=Report(metrics=("mmcs",), plots=())))
    result = runner.run(exp)
    assert result.selection["criterion"] == "final total loss (no top-k: the Lp formulation)"
    assert "top-k" not in result.selection["criterion"].replace("no top-k", "")
    from apdspec.summary import summary_lines

    line = next(l for l in summary_lines(exp) if l.split()[0] == "decompose")
    assert "lowest final total loss kept" in line and "top-k MSE" not in line

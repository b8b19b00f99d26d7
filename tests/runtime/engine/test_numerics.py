"""Divergence is stopped and named: NaN/inf in a loss term, a gradient or Adam's moments ends the
run with the term, replicate and step, and the CLI exits 1 with a hint instead of a traceback."""
import dataclasses
import json
import os

import numpy as np
import pytest

from apdspec.cli import main
from runtime.engine import decompose as D
from runtime.engine.decompose import NonFiniteError
from runtime.methods.apd.train import LossProblem
from runtime.pipeline import runner
from run_cases import tms_experiment

from paths import ROOT  # noqa: E402  (the repository)
QUICK = os.path.join(ROOT, "tests", "specs", "quick.apd")  # a smoke run: its problems do not fail it


def test_the_first_non_finite_term_is_named_with_its_replicate():
    D.first_non_finite({"faithfulness": np.array([1.0, 2.0]), "minimality": np.array([0.5, 0.25])}, 3)
    with pytest.raises(NonFiniteError) as info:
        D.first_non_finite({"faithfulness": np.array([1.0, 2.0]), "minimality": np.array([0.5, np.inf]),
                             "total": np.array([np.nan, 1.0])}, 7)
    e = info.value
    assert (e.what, e.replicate, e.step, e.value) == ("minimality", 1, 7, np.inf)
    assert str(e) == "minimality is inf in replicate 1 at step 7"


def test_replicate_sums_see_one_bad_entry():
    a = np.ones((3, 4, 5), dtype=np.float32)
    a[2, 1, 3] = np.nan
    s = D.replicate_sums(a)
    assert s.tolist()[:2] == [20.0, 20.0] and np.isnan(s[2])


def test_lr_1e3_stops_the_cli_with_the_term_and_step(tmp_path, capsys):
    out = str(tmp_path / "run")
    code = main(["run", QUICK, "-s", "decompose.optimizer=adam(lr=1e3)", "-s", "decompose.steps=120",
                 "--out", out, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "the run diverged: Adam's second moment of W.A is inf in replicate 0 at step 50" in err
    assert "hint: the optimisation diverged: lower decompose.optimizer's lr" in err and "Traceback" not in err
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "error" and "NonFiniteError" in summary["error"]


def test_a_nan_loss_term_names_the_step_it_appeared(monkeypatch):
    real = LossProblem.step_grads

    def poisoned(self, comps, x, record, need_grad=True):
        out = real(self, comps, x, record, need_grad)
        if self_steps[0] == 5:
            record["minimality"] = np.array([np.nan])
        self_steps[0] += 1
        return out

    self_steps = [0]
    monkeypatch.setattr(LossProblem, "step_grads", poisoned)
    with pytest.raises(NonFiniteError) as info:
        runner.run(tms_experiment(steps=20), with_metrics=False)
    assert (info.value.what, info.value.replicate, info.value.step) == ("minimality", 0, 5)


def test_restarts_name_the_replicate_and_restart(monkeypatch):
    exp = tms_experiment(steps=10)
    exp = dataclasses.replace(exp, replicates=2, decompose=dataclasses.replace(exp.decompose, restarts=3))

    def diverging(*a, **kw):
        raise NonFiniteError("faithfulness", 4, 9, float("nan"))  # instance 4 = replicate 1, restart 1

    monkeypatch.setattr(runner, "decompose", diverging)
    with pytest.raises(NonFiniteError) as info:
        runner.run(exp, with_metrics=False)
    e = info.value
    assert (e.replicate, e.restart, e.step) == (1, 1, 9)
    assert str(e) == "faithfulness is nan in replicate 1 (restart 1) at step 9"


def test_a_diverged_run_keeps_its_last_checkpoint_and_says_so(tmp_path, capsys):
    out = str(tmp_path / "run")
    code = main(["run", QUICK, "-s", "decompose.optimizer=adam(lr=1e3)", "-s", "decompose.steps=120",
                 "--checkpoint-every", "20", "--out", out, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and f"note: the last checkpoint before it is kept: {out}/checkpoints/step-000000040.npz" in err


def test_a_diverged_target_is_named_with_its_own_hint(tmp_path, capsys, monkeypatch):
    from runtime.engine import train_target as T

    real = T.replicate_loss
    calls = [0]

    def poisoned(*a):
        calls[0] += 1
        per = real(*a)
        return per * np.nan if calls[0] == 7 else per

    monkeypatch.setattr(T, "replicate_loss", poisoned)
    code = main(["run", QUICK, "-s", "target.train.steps=20", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "the run diverged: the target's training loss is nan in replicate 0 at step 6" in err
    assert "hint: the target's training diverged: lower target.train.optimizer's lr" in err

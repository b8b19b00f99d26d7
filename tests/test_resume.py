"""Checkpoints and exact resume: 2N steps straight give the same arrays, bit for bit, as N steps,
an interruption with a checkpoint, and N more from it (TMS, residual MLP, gated, restarts, revive);
and through the CLI, a real SIGINT / SIGTERM, exit 130 / 143 and `apdspec run --resume`."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from runtime.engine.decompose import Interrupted
from runtime.pipeline import runner
from runtime.spec import (Attribution, Data, Decompose, Experiment, FaithfulnessWarmup, GatedTarget, Losses, Optimizer,
                          Report,
                          ResidMlpTarget, Revive, Schedule, TmsTarget, TopK, Training)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.path.join(ROOT, "specs", "quickstart.apd")
NO_REPORT = Report(metrics=(), plots=())


def tms(**dc):
    return Experiment(name="t", seed=1, replicates=2, target=TmsTarget(features=5, hidden=2),
                      train=Training(steps=30, batch=256),
                      decompose=Decompose(**{**dict(components=5, topk=TopK("batch", 0.211), loss=Losses(simplicity=0.7),
                                                    optimizer=Optimizer("adam", 3e-2), schedule=Schedule("cosine", warmup=0.1),
                                                    steps=40, batch=128, log_every=5), **dc}),
                      report=NO_REPORT)


def resid():
    return Experiment(replicates=2, target=ResidMlpTarget(features=6, d_embed=10, d_mlp=4, layers=2, in_bias=True),
                      train=Training(steps=20, batch=64), data=Data(probability=0.2),
                      decompose=Decompose(components=8, topk=TopK("batch", 1.0),
                                          loss=Losses(act_recon=1.0, simplicity=1.0, simplicity_p=0.9),
                                          unit_norm=True, steps=40, batch=32, log_every=5),
                      report=NO_REPORT)


def gated():
    return Experiment(target=GatedTarget(functions=2, neurons=4, layers=2), data=Data(probability=0.3),
                      decompose=Decompose(components=2, topk=TopK("batch", 0.3), attribution=Attribution("gradient", "apd"),
                                          loss=Losses(faithfulness=0.1, minimality=5, simplicity=5), steps=40, batch=64,
                                          log_every=5),
                      report=NO_REPORT)


def spd(**dc):
    return Experiment(name="s", seed=2, replicates=2, target=TmsTarget(features=5, hidden=2, hidden_layers=1),
                      train=Training(steps=30, batch=256),
                      decompose=Decompose(**{**dict(method="spd", components=6, optimizer=Optimizer("adam", 3e-3),
                                                    schedule=Schedule("cosine", warmup=0.1), steps=40, batch=128,
                                                    log_every=5, loss=Losses(importance_warmup=0.2)), **dc}),
                      report=NO_REPORT)


def spd_resid():
    return Experiment(replicates=2, target=ResidMlpTarget(features=6, d_embed=10, d_mlp=4, layers=2, in_bias=True),
                      train=Training(steps=20, batch=64), data=Data(probability=0.2),
                      decompose=Decompose(method="spd", components=7, mask_samples=2, steps=40, batch=32, log_every=5),
                      report=NO_REPORT)


CASES = {
    "spd": spd(),
    "spd_resid": spd_resid(),
    "spd_restarts": spd(restarts=2),
    "spd_warmup": spd(faithfulness_warmup=FaithfulnessWarmup(steps=30)),
    "tms": tms(),
    "resid_mlp": resid(),
    "gated": gated(),
    "restarts": tms(restarts=3),
    "revive": tms(components=7, revive=Revive(every=10, until=30, window=4)),
}


def _interrupted_then_resumed(exp, at: int, every: int):
    saved = []
    calls = [0]

    def stop():
        calls[0] += 1
        return signal.SIGINT if calls[0] == at else None  # asked after step at-1: stop before step `at`

    with pytest.raises(Interrupted) as info:
        runner.run(exp, with_metrics=False, checkpoint=lambda a, s: saved.append((a, s)), checkpoint_every=every,
                   stop=stop)
    assert info.value.step == at and saved[-1][1]["step"] == at
    return runner.run(exp, with_metrics=False, resume=saved[-1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_n_steps_then_resume_equals_2n_straight(name):
    exp = CASES[name]
    straight = runner.run(exp, with_metrics=False)
    resumed = _interrupted_then_resumed(exp, at=exp.decompose.steps // 2, every=7)
    a, b = straight.decomposition, resumed.decomposition
    assert a.comps.keys() == b.comps.keys()
    for k in a.comps:
        assert np.array_equal(a.comps[k], b.comps[k]), k
    assert a.history == b.history
    assert a.revivals == b.revivals
    if straight.selection is not None:
        assert straight.selection == resumed.selection


def test_checkpoints_alone_do_not_change_the_run():
    exp = tms()
    saved = []
    with_ckpt = runner.run(exp, with_metrics=False, checkpoint=lambda a, s: saved.append(s["step"]), checkpoint_every=10)
    plain = runner.run(exp, with_metrics=False)
    assert saved == [10, 20, 30, 40]  # 40: before the last (evaluation-only) iteration
    for k in plain.decomposition.comps:
        assert np.array_equal(plain.decomposition.comps[k], with_ckpt.decomposition.comps[k])


def _cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT, APDSPEC_PROGRESS="0")
    return subprocess.Popen([sys.executable, "-m", "apdspec", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_and_resume_finishes_the_run_exactly(tmp_path, sig, code):
    steps = ["-s", "decompose.steps=3000", "-s", "target.train.steps=50"]
    straight = tmp_path / "straight"
    p = _cli(["run", QUICK, *steps, "--out", str(straight), "--quiet"])
    assert p.wait(timeout=300) == 0, p.stderr.read()
    out = tmp_path / "run"
    p = _cli(["run", QUICK, *steps, "--out", str(out), "--quiet", "--checkpoint-every", "100"])
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("step-*.npz")) if (out / "checkpoints").exists() else True:
        assert time.time() < deadline and p.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    p.send_signal(sig)
    assert p.wait(timeout=120) == code
    err = p.stderr.read()
    assert f"resume with: apdspec run --resume {out}" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["next_step"] < 3000
    p = _cli(["run", "--resume", str(out), "--quiet"])
    assert p.wait(timeout=300) == 0, p.stderr.read()
    a = np.load(straight / "decomposition.npz")
    b = np.load(out / "decomposition.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k
    strip = lambda path: [json.loads(l) for l in open(path)]  # noqa: E731
    assert strip(straight / "metrics.jsonl") == strip(out / "metrics.jsonl")
    assert json.loads((out / "summary.json").read_text())["status"] == "ok"
    assert not (out / "checkpoints").exists()  # a finished run keeps none


def test_resume_errors_are_one_line(tmp_path, capsys):
    from apdspec.cli import main

    assert main(["run", "--resume", str(tmp_path)]) == 1
    assert "cannot resume" in capsys.readouterr().err
    (tmp_path / "spec.json").write_text(runner.to_json(tms()))
    assert main(["run", "--resume", str(tmp_path)]) == 1
    assert "holds no checkpoint to resume from" in capsys.readouterr().err
    assert main(["run", QUICK, "--resume", str(tmp_path)]) == 2
    assert main(["run"]) == 2


def test_an_interrupted_sweep_resumes_its_running_point_from_its_checkpoint(tmp_path, monkeypatch):
    import contextlib

    from runtime.pipeline import sweep
    from runtime.spec import Sweep, SweepAxis

    exp = dataclasses.replace(tms(), sweep=Sweep(axes=(SweepAxis("seed", (0, 1)),)))
    straight = sweep.run_sweep(exp, str(tmp_path / "a"), report=False)
    calls = [0]

    @contextlib.contextmanager
    def stop_once():
        def stop():
            calls[0] += 1
            return signal.SIGTERM if calls[0] == 17 else None  # in the first point, before its step 17
        yield stop

    monkeypatch.setattr(runner, "_signals_stop", stop_once)
    with pytest.raises(Interrupted):
        sweep.run_sweep(exp, str(tmp_path / "b"), report=False)
    assert list((tmp_path / "b" / "seed=0" / "checkpoints").glob("step-*.npz"))
    monkeypatch.undo()
    resumed = sweep.run_sweep(exp, str(tmp_path / "b"), report=False)
    assert [p["status"] for p in resumed["points"]] == ["ok", "ok"] == [p["status"] for p in straight["points"]]
    for label in ("seed=0", "seed=1"):
        a, b = np.load(tmp_path / "a" / label / "decomposition.npz"), np.load(tmp_path / "b" / label / "decomposition.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    summary = json.loads((tmp_path / "b" / "seed=0" / "summary.json").read_text())
    assert summary["resumed_from"].startswith("checkpoints/step-")

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
from runtime.spec import Data, Decompose, Experiment, Optimizer, Report, Schedule, Training
from runtime import Knots, LayerwiseCausalImportance, VpdLosses
from runtime import SpdLosses, Attribution, FaithfulnessWarmup, GatedTarget, ApdLosses as Losses, ResidMlpTarget, Revive, TmsTarget, TopK

from paths import ROOT  # noqa: E402  (the repository)
QUICK = os.path.join(ROOT, "tests", "specs", "quick.apd")  # a smoke run: its problems do not fail it
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
                                                    log_every=5, loss=SpdLosses(importance_warmup=0.2)), **dc}),
                      report=NO_REPORT)


def spd_resid():
    return Experiment(replicates=2, target=ResidMlpTarget(features=6, d_embed=10, d_mlp=4, layers=2, in_bias=True),
                      train=Training(steps=20, batch=64), data=Data(probability=0.2),
                      decompose=Decompose(method="spd", components=7, mask_samples=2, steps=40, batch=32, log_every=5),
                      report=NO_REPORT)


def vpd(**dc):
    return Experiment(name="v", seed=3, replicates=2, target=TmsTarget(features=5, hidden=2),
                      train=Training(steps=30, batch=256),
                      decompose=Decompose(**{**dict(method="vpd", components=6, steps=40, batch=64, log_every=5,
                                                    causal_importance=LayerwiseCausalImportance(widths=(8,)),
                                                    faithfulness_warmup=FaithfulnessWarmup(10, 1e-2, 0.0),
                                                    loss=VpdLosses(frequency=Knots(((0, 1e-4), (0.5, 4e-4)), ("cosine",)))),
                                             **dc}),
                      report=NO_REPORT)


CASES = {
    "vpd": vpd(),
    "vpd_resid": Experiment(replicates=2, target=ResidMlpTarget(features=6, d_embed=10, d_mlp=4, layers=2),
                            train=Training(steps=20, batch=64), data=Data(probability=0.2),
                            decompose=Decompose(method="vpd", components=7, steps=40, batch=32, log_every=5,
                                                faithfulness_warmup=None, routing="all"),
                            report=NO_REPORT),
    "vpd_restarts": vpd(restarts=2),
    "vpd_no_adversary": vpd(adversary=None),
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
    decomposing = [False]  # stop() is asked in target training too; count the decomposition's asks

    def stop():
        calls[0] += decomposing[0]
        return signal.SIGINT if calls[0] == at else None  # asked after step at-1: stop before step `at`

    with pytest.raises(Interrupted) as info:
        runner.run(exp, with_metrics=False, checkpoint=lambda a, s: saved.append((a, s)), checkpoint_every=every,
                   stop=stop, on_target=lambda *built: decomposing.__setitem__(0, True))
    assert info.value.step == at and info.value.phase == "decompose" and saved[-1][1]["step"] == at
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
            # in the first point, before its decomposition step 17 (after one ask per target-training step)
            return signal.SIGTERM if calls[0] == exp.train.steps + 17 else None
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


def test_a_signal_in_target_training_stops_it_and_resume_starts_over_exactly():
    exp = tms()
    straight = runner.run(exp, with_metrics=False)
    asked = [0]

    def stop():
        asked[0] += 1
        return signal.SIGTERM if asked[0] == 12 else None

    with pytest.raises(Interrupted) as info:
        runner.run(exp, with_metrics=False, stop=stop)
    assert (info.value.phase, info.value.step) == ("target", 11)
    again = runner.run(exp, with_metrics=False)
    for k in straight.decomposition.comps:
        assert np.array_equal(straight.decomposition.comps[k], again.decomposition.comps[k])


def _stop_at(monkeypatch, ask: int, signum=signal.SIGINT):
    """Make run_to_dir's signal flag fire at its `ask`-th question (one per training step)."""
    import contextlib

    calls = [0]

    @contextlib.contextmanager
    def stop_at():
        def stop():
            calls[0] += 1
            return signum if calls[0] == ask else None
        yield stop

    monkeypatch.setattr(runner, "_signals_stop", stop_at)


def _same_run(a, b):
    for name in ("decomposition.npz", "target.npz"):
        x, y = np.load(a / name), np.load(b / name)
        assert sorted(x.files) == sorted(y.files)
        assert all(np.array_equal(x[k], y[k]) for k in x.files), name
    lines = lambda p: [json.loads(l) for l in open(p)]  # noqa: E731
    assert lines(a / "metrics.jsonl") == lines(b / "metrics.jsonl")


def test_run_dir_keeps_the_trained_target_and_a_resume_does_not_train_it_again(tmp_path, monkeypatch):
    from runtime.store import checkpoint

    exp = tms()
    runner.run_to_dir(exp, str(tmp_path / "a"), report=False)
    _stop_at(monkeypatch, exp.train.steps + 25)
    with pytest.raises(Interrupted):
        runner.run_to_dir(exp, str(tmp_path / "b"), report=True, checkpoint_every=10)
    b = tmp_path / "b"
    assert (b / "checkpoints" / "target.npz").exists() and checkpoint.latest(str(b)).endswith("step-000000025.npz")
    report = (b / "report.md").read_text()
    assert "Interrupted by signal 2 before step 25 of the decomposition" in report and "--resume" in report
    monkeypatch.undo()
    trained = []
    monkeypatch.setattr(runner, "build_target", lambda *a, **k: trained.append(1))
    summary = runner.run_to_dir(exp, str(b), report=False, resume=True)
    assert trained == [] and summary["status"] == "ok" and summary["resumed_from"] == "checkpoints/step-000000025.npz"
    _same_run(tmp_path / "a", b)
    assert not (b / "checkpoints").exists()


def test_resume_before_the_first_checkpoint_starts_from_the_saved_target_or_from_scratch(tmp_path, monkeypatch):
    exp = tms()
    runner.run_to_dir(exp, str(tmp_path / "a"), report=False)
    # killed (kill -9) in the decomposition before its first checkpoint: the saved target is reused
    _stop_at(monkeypatch, exp.train.steps + 3)
    with pytest.raises(Interrupted):
        runner.run_to_dir(exp, str(tmp_path / "b"), report=False, checkpoint_every=10)
    for p in (tmp_path / "b" / "checkpoints").glob("step-*.npz"):
        p.unlink()  # what a kill -9 would have left: the target, no decomposition checkpoint
    monkeypatch.undo()
    summary = runner.run_to_dir(exp, str(tmp_path / "b"), report=False, resume=True)
    assert summary["resumed_from"] == "checkpoints/target.npz"
    _same_run(tmp_path / "a", tmp_path / "b")
    # stopped in target training: nothing saved yet, the resume starts over
    _stop_at(monkeypatch, 5, signal.SIGTERM)
    with pytest.raises(Interrupted) as info:
        runner.run_to_dir(exp, str(tmp_path / "c"), report=True)
    assert info.value.phase == "target"
    s = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert (s["status"], s["phase"], s["signal"]) == ("interrupted", "target", signal.SIGTERM)
    assert "of target training; the trained target is not saved yet" in (tmp_path / "c" / "report.md").read_text()
    monkeypatch.undo()
    summary = runner.run_to_dir(exp, str(tmp_path / "c"), report=False, resume=True)
    assert summary["resumed_from"] == "the start (no checkpoint yet)"
    _same_run(tmp_path / "a", tmp_path / "c")


def test_checkpoint_interval_and_count_are_spec_options(tmp_path):
    from runtime.store import checkpoint

    exp = tms(checkpoint_every=15, checkpoint_keep=1)
    saved = []
    orig = checkpoint.save
    try:
        checkpoint.save = lambda d, a, s, keep: saved.append((s["step"], keep)) or orig(d, a, s, keep)
        runner.run_to_dir(exp, str(tmp_path / "r"), report=False)
    finally:
        checkpoint.save = orig
    assert saved == [(15, 1), (30, 1)]


def test_run_refuses_an_out_that_holds_a_run_and_points_at_resume(tmp_path, capsys):
    from apdspec.cli import main

    tiny = ["-s", "decompose.steps=20", "-s", "target.train.steps=20", "--quiet"]
    out = str(tmp_path / "r")
    assert main(["run", QUICK, *tiny, "--out", out]) == 0
    capsys.readouterr()
    before = open(os.path.join(out, "summary.json")).read()
    assert main(["run", QUICK, *tiny, "--out", out]) == 1
    assert "already holds a finished run (status ok); choose another --out, or pass --force" in capsys.readouterr().err
    assert open(os.path.join(out, "summary.json")).read() == before  # nothing was touched
    os.unlink(os.path.join(out, "summary.json"))  # as after a kill -9
    assert main(["run", QUICK, *tiny, "--out", out]) == 1
    assert f"did not finish; continue it with: apdspec run --resume {out}" in capsys.readouterr().err
    assert main(["run", QUICK, *tiny, "--out", out, "--force"]) == 0
    assert main(["run", out]) == 2  # a run directory given as the spec: the hint says --resume
    assert f"hint: continue it with: apdspec run --resume {out}" in capsys.readouterr().err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is gone too
        return f.read().split(")")[-1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def _parallel_sweep_running(out, steps: int):
    """A --jobs 2 sweep of two quickstart points, once both have a checkpoint: (process, worker pids)."""
    p = _cli(["run", QUICK, "-s", f"decompose.steps={steps}", "-s", "target.train.steps=50", "-s", "seed=grid(0, 1)",
              "--jobs", "2", "--checkpoint-every", "50", "--out", str(out), "--quiet"])
    deadline = time.time() + 180
    while not all(list((out / f"seed={s}" / "checkpoints").glob("step-*.npz")) for s in (0, 1)):
        assert time.time() < deadline and p.poll() is None, "no checkpoints appeared"
        time.sleep(0.05)
    return p, _children(p.pid)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc")
def test_sigterm_to_a_parallel_sweeps_driver_stops_its_workers_with_checkpoints(tmp_path):
    """`kill PID` reaches only the driver of a --jobs 2 sweep: it passes the signal on, each worker
    checkpoints its point and stops, none is left running, and --resume finishes both points."""
    out = tmp_path / "sweep"
    p, workers = _parallel_sweep_running(out, 8000)
    assert workers
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 143
    assert f"apdspec run --resume {out}" in p.stderr.read()
    deadline = time.time() + 30
    while any(_alive(w) for w in workers):
        assert time.time() < deadline, "a worker outlived its driver"
        time.sleep(0.05)
    for s in (0, 1):
        summary = json.loads((out / f"seed={s}" / "summary.json").read_text())
        assert summary["status"] == "interrupted", summary
    p = _cli(["run", "--resume", str(out), "--quiet"])
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert [json.loads((out / f"seed={s}" / "summary.json").read_text())["status"] for s in (0, 1)] == ["ok", "ok"]


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc")
def test_workers_of_a_killed_sweep_driver_checkpoint_and_stop(tmp_path):
    """kill -9 of the driver: its workers notice they were orphaned, checkpoint and stop (they would
    otherwise train on and write into a directory a new sweep may be using)."""
    out = tmp_path / "sweep"
    p, workers = _parallel_sweep_running(out, 100000)
    p.kill()
    p.wait(timeout=30)
    deadline = time.time() + 60
    while any(_alive(w) for w in workers):
        assert time.time() < deadline, "a worker outlived its killed driver"
        time.sleep(0.05)
    for s in (0, 1):
        summary = json.loads((out / f"seed={s}" / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["next_step"] < 100000, summary

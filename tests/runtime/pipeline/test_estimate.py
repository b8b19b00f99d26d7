"""The wall-time estimate of `apdspec check` (runtime/pipeline/estimate.py). Its accuracy against
real runs is a benchmark (benchmarks/estimate_vs_measured.py, docs/results.md), not a test: here,
what is timed and how it is extrapolated."""
import dataclasses
import os

import numpy as np
import pytest

import apdspec
from apdspec.cli import main
from runtime.engine import models
from runtime.pipeline import estimate as E
from runtime.spec import FileTarget
from runtime import TmsTarget
from runtime.store.files import save_target

from paths import ROOT  # noqa: E402  (the repository)
QUICK = os.path.join(ROOT, "tests", "specs", "quick.apd")  # the old quickstart: 1000 steps, one replicate


def test_time_steps_warms_up_then_times_within_the_budget():
    calls = []
    sec, n, _ = E._time_steps(lambda: calls.append(1), budget_s=0.0)
    assert n == 2 and len(calls) == 3  # one warm-up, then at least two timed
    calls.clear()
    sec, n, _ = E._time_steps(lambda: calls.append(1), budget_s=10.0)
    assert n == E.MAX_STEPS and len(calls) == E.MAX_STEPS + 1 and sec < 0.01


def test_contention_is_wall_over_cpu_time():
    import time

    _, _, busy = E._time_steps(lambda: sum(range(20000)), budget_s=0.05)  # computing: wall ~ CPU
    _, _, idle = E._time_steps(lambda: time.sleep(0.01), budget_s=0.05)  # waiting: wall >> CPU
    # (no absolute bound on `busy`: on a loaded machine a computing process also waits for a core)
    assert idle > 5 and idle > 2 * busy


def test_estimate_extrapolates_the_timed_steps_to_the_spec():
    exp = apdspec.load(QUICK, ["decompose.steps=3000", "target.train.steps=2000"]).experiment
    e = E.estimate(exp, budget_s=0.3)
    assert e.steps == 3000 and e.target_steps == 2000 and 2 <= e.timed_steps <= E.MAX_STEPS
    assert e.parts["decompose"] == pytest.approx(e.step_ms / 1e3 * 3000)
    assert e.parts["target"] == pytest.approx(e.target_step_ms / 1e3 * 2000)
    assert e.parts["finish"] == pytest.approx(E.finish_seconds(exp.target) * e.contention) and e.contention >= 1
    assert e.total_s == pytest.approx(sum(e.parts.values()))
    assert "(3,000 steps x" in e.describe() and "target ~" in e.describe()


def test_restarts_and_replicates_are_in_the_timed_step():
    one = apdspec.load(QUICK, ["decompose.batch=4096"]).experiment
    wide = dataclasses.replace(one, replicates=4, decompose=dataclasses.replace(one.decompose, restarts=4))
    from runtime.pipeline.bench import step_runner

    runner, _, target, _ = step_runner(wide)
    assert runner.exp.replicates == 16 and target["W"].shape[0] == 16
    # 16 instances do more work per step than 1 (medians of a few steps; generous margin for noise)
    assert E.estimate(wide, 0.5).step_ms > 2 * E.estimate(one, 0.5).step_ms


def test_a_loaded_target_is_not_trained(tmp_path):
    arch = TmsTarget(5, 2)
    save_target(tmp_path / "t.npz", arch, models.init_target(arch, 1, np.random.default_rng(0)))
    exp = dataclasses.replace(apdspec.load(QUICK).experiment, target=FileTarget(str(tmp_path / "t.npz")), train=None)
    e = E.estimate(exp, budget_s=0.2)
    assert e.parts["target"] == 0 and e.target_step_ms is None and "target ~" not in e.describe()


def test_check_prints_the_estimate_unless_told_not_to(capsys):
    assert main(["check", QUICK]) == 0
    out = capsys.readouterr().out
    assert "  time        ~" in out and "decomposition ~" in out and "(1,000 steps x" in out
    assert main(["check", QUICK, "--no-estimate"]) == 0
    assert "time" not in capsys.readouterr().out


def test_check_estimates_every_point_of_a_sweep(capsys):
    assert main(["check", QUICK, "-s", "decompose.steps=grid(100, 50_000)"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.strip().startswith("time"))
    assert "for 2 points" in line and " to ~" in line  # the points differ in length


@pytest.mark.parametrize("s, text", [(3.0, "3 s"), (45.2, "45 s"), (150, "2.5 min"), (1500, "25 min"), (9000, "2.5 h")])
def test_durations_read_naturally(s, text):
    assert E.duration(s) == text

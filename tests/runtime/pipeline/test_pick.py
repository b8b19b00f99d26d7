"""pipeline/pick.py: restarts as separate runs, the best run kept per replicate by held-out score."""
import dataclasses
import json

import numpy as np
import pytest

from runtime.pipeline import pick, restarts, runner
from runtime.spec import Decompose, FileTarget, Optimizer, Report, check
from runtime import CausalImportance
from runtime.store.files import save_target
from runtime.store.rundir import load_run
from test_restarts import tiny


def _runs(tmp_path, exp, seeds=(11, 12, 13)):
    """One finished run per decompose.seed, all on the target of the first (loaded from a file)."""
    dirs = []
    first = str(tmp_path / "run0")
    runner.run_to_dir(dataclasses.replace(exp, decompose=dataclasses.replace(exp.decompose, seed=seeds[0])), first,
                      report=False)
    base = load_run(first)
    tfile = str(tmp_path / "target.npz")
    save_target(tfile, base.arch, base.target)
    dirs.append(first)
    for n, s in enumerate(seeds[1:], 1):
        e = dataclasses.replace(exp, target=FileTarget(path=tfile), train=None,
                                decompose=dataclasses.replace(exp.decompose, seed=s))
        d = str(tmp_path / f"run{n}")
        runner.run_to_dir(check(e), d, report=False)
        dirs.append(d)
    return dirs


def _spd_exp():
    e = tiny(restarts_=1, replicates=3, steps=40)
    return check(dataclasses.replace(e, decompose=Decompose(
        method="spd", components=6, steps=40, batch=64, log_every=10, optimizer=Optimizer("adam", 1e-2),
        causal_importance=CausalImportance(hidden=2)), report=Report(metrics=("mmcs", "ml2r"), plots=())))


@pytest.mark.parametrize("make", [lambda: tiny(restarts_=1, replicates=3), _spd_exp], ids=["apd", "spd"])
def test_pick_keeps_the_lowest_held_out_score_per_replicate(tmp_path, make):
    dirs = _runs(tmp_path, make())
    out = str(tmp_path / "best")
    summary = pick.pick_runs(dirs, out, report=False)
    sel = summary["restarts"]
    runs = [load_run(d) for d in dirs]
    # every run scored on the first run's held-out batches: its own score for the first run, and
    # for the others the score they get when their seed is set to the first run's
    base_seed = runs[0].experiment.decompose.seed
    own = [restarts.scores(runs[0])]
    for r in runs[1:]:
        as_first = dataclasses.replace(r, experiment=dataclasses.replace(
            r.experiment, decompose=dataclasses.replace(r.experiment.decompose, seed=base_seed)), analysis=None)
        own.append(restarts.scores(as_first))
    np.testing.assert_allclose(np.array(sel["scores"]), np.stack(own, axis=1), rtol=1e-12)
    assert sel["chosen"] == [int(np.argmin(s)) for s in sel["scores"]]
    assert sel["decompose_seeds"] == [11, 12, 13] and len(sel["runs"]) == 3
    picked = load_run(out)
    for i, c in enumerate(sel["chosen"]):
        for k, v in picked.decomposition.comps.items():
            np.testing.assert_array_equal(v[i], runs[c].decomposition.comps[k][i])
        key = "total/replicates"
        assert picked.decomposition.history[-1][key][i] == runs[c].decomposition.history[-1][key][i]
    # the metrics are those of the kept decompositions, replicate by replicate
    for name in ("mmcs",):
        want = [runs[c].metrics[name][i] for i, c in enumerate(sel["chosen"])]
        np.testing.assert_allclose(summary["metrics"][name], want, rtol=1e-6)
    with open(f"{out}/summary.json") as f:
        assert json.load(f)["picked_from"] == sel["runs"]


def test_pick_report_names_the_source_runs(tmp_path):
    dirs = _runs(tmp_path, tiny(restarts_=1, replicates=2), seeds=(1, 2))
    pick.pick_runs(dirs, str(tmp_path / "best"))
    text = (tmp_path / "best" / "report.md").read_text()
    assert "kept run per replicate" in text and "run0" in text and "run1" in text


def test_pick_refuses_runs_it_cannot_compare(tmp_path):
    exp = tiny(restarts_=1, replicates=2)
    dirs = _runs(tmp_path, exp, seeds=(1, 2))
    other = str(tmp_path / "other")
    runner.run_to_dir(dataclasses.replace(exp, decompose=dataclasses.replace(exp.decompose, seed=3, steps=40)), other,
                      report=False)
    with pytest.raises(pick.PickError, match=r"other: its decompose .*\(steps: 40 here, 60 in the first run\)"):
        pick.pick_runs([dirs[0], other], str(tmp_path / "x"), report=False)
    retrained = str(tmp_path / "retrained")  # same settings, its own (different) trained target
    runner.run_to_dir(dataclasses.replace(exp, train=dataclasses.replace(exp.train, seed=9),
                                          decompose=dataclasses.replace(exp.decompose, seed=4)), retrained,
                      report=False)
    with pytest.raises(pick.PickError, match="target array"):
        pick.pick_runs([dirs[0], retrained], str(tmp_path / "x"), report=False)
    with pytest.raises(pick.PickError, match="same init twice"):
        pick.pick_runs([dirs[0], dirs[0]], str(tmp_path / "x"), report=False)
    with pytest.raises(pick.PickError, match="one of the runs"):
        pick.pick_runs(dirs, dirs[1], report=False)
    with pytest.raises(pick.PickError, match="no summary.json"):
        pick.pick_runs([dirs[0], str(tmp_path / "missing")], str(tmp_path / "x"), report=False)
    with pytest.raises(pick.PickError, match="at least two"):
        pick.pick_runs(dirs[:1], str(tmp_path / "x"), report=False)


def test_pick_command_line(tmp_path, capsys):
    dirs = _runs(tmp_path, tiny(restarts_=1, replicates=1), seeds=(1, 2))
    code = pick.main([*dirs, "--out", str(tmp_path / "best"), "--no-report"])
    assert code == 0  # status ok: the tiny spec has no expectations
    assert "kept run per replicate" in capsys.readouterr().out
    assert pick.main([dirs[0], "--out", str(tmp_path / "b2")]) == 2
    assert "at least two" in capsys.readouterr().err


def test_apdspec_pick(tmp_path, capsys):
    from apdspec.cli import main as apdspec

    dirs = _runs(tmp_path, tiny(restarts_=1, replicates=2), seeds=(1, 2))
    # the picked runs are short: their diagnostics find problems, and the verdict says so (exit 1)
    assert apdspec(["pick", *dirs, "--out", str(tmp_path / "best")]) == 1
    out = capsys.readouterr().out
    assert "kept run per replicate" in out and "mmcs" in out and (tmp_path / "best" / "report.md").exists()
    assert "  PROBLEM  " in out and out.splitlines()[-1].startswith(f"{tmp_path / 'best'}: problems (")
    assert apdspec(["pick", dirs[0], dirs[0], "--out", str(tmp_path / "b2")]) == 2  # a user mistake: no traceback
    err = capsys.readouterr().err
    assert "apdspec pick:" in err and "same init twice" in err and "Traceback" not in err


def test_replicates_meeting_applies_every_per_replicate_clause():
    from runtime.analysis.expectations import replicates_meeting
    from runtime.spec import Expectation

    exp = dataclasses.replace(tiny(restarts_=1), report=Report(expect=(
        Expectation("mmcs", ">=", 0.99), Expectation("ml2r", ">=", 0.97, at_least=2),
        Expectation("ml2r", "<=", 0.0, reduce="mean"))))  # a reduction says nothing per replicate
    metrics = {"mmcs": [0.995, 0.98, float("nan"), 0.999], "ml2r": [1.0, 1.0, 1.0, 0.96]}
    assert replicates_meeting(exp, metrics) == [True, False, False, False]
    assert replicates_meeting(exp, {"mmcs": [1.0]}) is None  # a metric the clauses need is missing
    assert replicates_meeting(tiny(restarts_=1), metrics) is None  # no clause


def test_choice_against_expectations_counts_replicates():
    from runtime.analysis.expectations import choice_against_expectations

    sel = {"chosen": [0, 0, 1], "per_run": [{"meets": [True, False, False]}, {"meets": [False, False, True]}]}
    assert choice_against_expectations(sel).endswith("met by some run on 2 of 3 replicates, by the kept run on 2")
    sel["chosen"] = [1, 0, 0]
    assert choice_against_expectations(sel).endswith("by the kept run on 0")
    sel["per_run"][1]["meets"] = None
    assert choice_against_expectations(sel) is None


def test_pick_shows_every_run_against_the_expectations(tmp_path, capsys):
    from apdspec.cli import main as apdspec
    from runtime.spec import Expectation

    exp = tiny(restarts_=1, replicates=3)
    exp = check(dataclasses.replace(exp, report=dataclasses.replace(
        exp.report, expect=(Expectation("mmcs", ">=", 0.9), Expectation("topk_mse", "<=", 0.05)))))
    dirs = _runs(tmp_path, exp, seeds=(1, 2))
    assert apdspec(["pick", *dirs, "--out", str(tmp_path / "best")]) in (0, 1)
    printed = capsys.readouterr().out
    with open(tmp_path / "best" / "summary.json") as f:
        sel = json.load(f)["restarts"]
    meets = []
    for d, run in zip(dirs, sel["per_run"]):
        with open(f"{d}/summary.json") as f:
            m = json.load(f)["metrics"]
        assert run["metrics"] == {"mmcs": m["mmcs"], "topk_mse": m["topk_mse"]}
        meets.append([a >= 0.9 and b <= 0.05 for a, b in zip(m["mmcs"], m["topk_mse"])])
        assert run["meets"] == meets[-1]
    some = sum(a or b for a, b in zip(*meets))
    kept = sum(meets[c][i] for i, c in enumerate(sel["chosen"]))
    sentence = f"met by some run on {some} of 3 replicates, by the kept run on {kept}"
    assert sentence in printed
    report = (tmp_path / "best" / "report.md").read_text()
    assert "## Runs picked from" in report and sentence in report and report.count("**kept: score") == 3


def test_pick_from_a_sweep_over_decompose_seed(tmp_path):
    from runtime.pipeline import sweep
    from runtime.spec import Sweep, SweepAxis

    exp = dataclasses.replace(tiny(restarts_=1, replicates=2), sweep=Sweep((SweepAxis("decompose.seed", (5, 6)),)))
    sweep.run_sweep(exp, str(tmp_path / "s"), report=False)
    summary = pick.pick_runs([str(tmp_path / "s")], str(tmp_path / "best"), report=False)
    points = [str(tmp_path / "s" / p["label"]) for p in sweep.load_sweep(str(tmp_path / "s"))["points"]]
    assert summary["restarts"]["decompose_seeds"] == [5, 6] and summary["picked_from"] == points
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sweep.json").write_text("[]")
    with pytest.raises(pick.PickError, match="bad: its sweep.json cannot be read"):
        pick.pick_runs([str(tmp_path / "bad"), points[0]], str(tmp_path / "x"), report=False)

"""Sweeps: expansion into points, running them (serial, parallel, resumed), sweep.json/sweep.md, CLI."""
import dataclasses
import itertools
import json
import os
import re
import sys

import numpy as np
import pytest

import apdspec
from apdspec.cli import main
from runtime.pipeline import runner, sweep
from runtime.spec import Decompose, Expectation, Experiment, Optimizer, Report, SpecValidationError, Sweep, SweepAxis, Training, check
from runtime import ApdLosses as Losses, TmsTarget, TopK

from paths import ROOT  # noqa: E402  (the repository)
QUICK = os.path.join(ROOT, "tests", "specs", "quick.apd")  # a smoke run: its problems do not fail it
SAFE = re.compile(r"^[A-Za-z0-9._+=,-]+$")
TINY = ["target.train.steps=20", "decompose.steps=10", "decompose.log_every=5", "report.plots=[]"]


def tiny(axes=(SweepAxis("seed", (0, 1)),), replicates=1, expect=()):
    """A TMS 5-2 experiment of a few steps (well under a second per point)."""
    return Experiment(
        name="tiny", replicates=replicates, target=TmsTarget(features=5, hidden=2),
        train=Training(steps=20, batch=64, log_every=10),
        decompose=Decompose(components=5, topk=TopK("batch", 0.211), loss=Losses(simplicity=0.7),
                            optimizer=Optimizer("adam", 3e-2), steps=10, batch=64, log_every=5),
        report=Report(metrics=("mmcs", "ml2r", "faithfulness"), plots=(), expect=expect, eval_batches=1),
        sweep=Sweep(tuple(axes)))


def summary_of(out, label):
    with open(os.path.join(out, label, "summary.json")) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------
# points()


def test_grid_times_zip_groups_in_listed_order():
    axes = (SweepAxis("seed", (0, 1, 2)), SweepAxis("decompose.steps", (100, 200), 0),
            SweepAxis("decompose.loss.simplicity", (0.5, 1.0)), SweepAxis("decompose.batch", (64, 128), 0))
    pts = sweep.points(tiny(axes))
    assert len(pts) == 3 * 2 * 2  # the zip group counts once
    assert [p.index for p in pts] == list(range(12))
    expected = [{"seed": s, "decompose.steps": st, "decompose.batch": b, "decompose.loss.simplicity": c}
                for s, (st, b), c in itertools.product((0, 1, 2), ((100, 64), (200, 128)), (0.5, 1.0))]
    assert [p.values for p in pts] == expected  # first axis slowest, zipped axes together
    assert pts[0].label == "seed=0,decompose.steps=100,decompose.batch=64,decompose.loss.simplicity=0.5"


def test_points_set_nested_fields_and_pass_check():
    axes = (SweepAxis("train.steps", (20, 30)), SweepAxis("decompose.topk.value", (0.2, 0.3), 1),
            SweepAxis("decompose.optimizer.lr", (1e-3, 1e-2), 1), SweepAxis("target.hidden", (2, 3)))
    pts = sweep.points(tiny(axes))
    assert len(pts) == 8 and len({p.label for p in pts}) == 8
    assert [p.experiment for p in sweep.points(check(tiny(axes)))] == [p.experiment for p in pts]  # resolved too
    for p in pts:
        e, v = p.experiment, p.values
        assert SAFE.match(p.label), p.label
        assert e.train.steps == v["train.steps"] and e.decompose.topk == TopK("batch", v["decompose.topk.value"])
        assert e.decompose.optimizer.lr == v["decompose.optimizer.lr"] and e.target.hidden == v["target.hidden"]
        assert e.decompose.rank == v["target.hidden"] + 1  # derived from each point's target
        assert e.sweep is None and check(e) == e
    assert "decompose.optimizer.lr=0.001" in pts[0].label


def test_seed_sweep_of_a_resolved_spec_moves_every_derived_seed():
    spec = apdspec.load(QUICK, ["seed=seeds(3)"])
    assert spec.experiment.decompose.seed == 0  # resolved: the seeds are filled in
    pts = sweep.points(spec.experiment)
    assert [(p.experiment.seed, p.experiment.train.seed, p.experiment.decompose.seed) for p in pts] == \
        [(0, 0, 0), (1, 1, 1), (2, 2, 2)]
    assert [p.label for p in pts] == ["seed=0", "seed=1", "seed=2"]
    # an explicit decompose seed that differs from the derived one stays fixed
    fixed = dataclasses.replace(tiny(), decompose=dataclasses.replace(tiny().decompose, seed=7))
    assert [p.experiment.decompose.seed for p in sweep.points(check(fixed))] == [7, 7]
    assert [p.experiment.train.seed for p in sweep.points(check(fixed))] == [0, 1]


def test_long_or_colliding_labels_get_an_index_prefix():
    lrs = tuple(1e-3 + i * 1e-9 for i in range(3))
    long_axes = (SweepAxis("decompose.optimizer.lr", lrs), SweepAxis("decompose.loss.simplicity", (0.123456789,) * 1),
                 SweepAxis("decompose.loss.faithfulness", (0.987654321,)), SweepAxis("decompose.loss.minimality", (1.5,)),
                 SweepAxis("train.optimizer.weight_decay", (0.0123456789,)))
    pts = sweep.points(tiny(long_axes))
    labels = [p.label for p in pts]
    assert all(len(s) <= sweep.MAX_LABEL and SAFE.match(s) for s in labels)
    assert [s[:5] for s in labels] == ["p000_", "p001_", "p002_"] and len(set(labels)) == 3
    assert sweep._labels([{"x": "a/b"}, {"x": "a_b"}]) == ["p000_x=a_b", "p001_x=a_b"]  # sanitised, then unique


def test_no_sweep_is_one_base_point_and_bad_points_are_reported():
    (p,) = sweep.points(dataclasses.replace(tiny(), sweep=None))
    assert (p.label, p.values, p.experiment.seed) == ("base", {}, 0)
    with pytest.raises(SpecValidationError) as info:
        sweep.points(tiny((SweepAxis("decompose.batch", (64, 2)),)))
    (issue,) = info.value.issues
    assert issue.path == "decompose.topk" and "sweep point decompose.batch=2" in issue.message
    with pytest.raises(SpecValidationError, match="names no field"):
        sweep.points(tiny((SweepAxis("decompose.stepz", (1, 2)),)))


def test_replace_path_brings_back_a_none_object():
    e = Experiment(decompose=Decompose(topk=None))
    assert sweep.replace_path(e, "decompose.topk.value", 2.0).decompose.topk == TopK("batch", 2.0)
    assert sweep.replace_path(e, "data.values", [0.0, 2.0]).data.values == (0.0, 2.0)
    with pytest.raises(ValueError):
        sweep.replace_path(e, "decompose.nope", 1)


# ------------------------------------------------------------------------------------------
# run_sweep()


def test_run_sweep_writes_tables_matching_each_point(tmp_path):
    out = str(tmp_path / "s")
    exp = tiny(replicates=2, expect=(Expectation("faithfulness", "<=", 10.0, text="expect faithfulness <= 10"),
                                     Expectation("mmcs", ">=", 1.0, text="expect mmcs >= 1")))
    seen = []
    result = sweep.run_sweep(exp, out, report=False, spec_text="# the spec\n", on_point=seen.append)
    with open(os.path.join(out, "sweep.json")) as f:
        data = json.load(f)
    assert data == json.loads(json.dumps(result))
    assert data["format"] == "apdspec-sweep/1" and data["status"] == "expectations_failed"
    assert data["axes"] == [{"path": "seed", "values": [0, 1], "group": None}]
    assert [r["label"] for r in seen] == ["seed=0", "seed=1"]
    assert open(os.path.join(out, "spec.apd")).read() == "# the spec\n"
    for rec in data["points"]:
        s = summary_of(out, rec["label"])
        assert rec["status"] == s["status"] == "expectations_failed" and rec["resumed"] is False
        assert rec["metrics_per_replicate"] == s["metrics"]
        for name, values in s["metrics"].items():
            assert len(values) == 2 and rec["metrics"][name] == pytest.approx(np.mean(values), rel=1e-12)
        assert [e["passed"] for e in rec["expectations"]] == [True, False]
        assert rec["wall_time_s"] == s["wall_time_s"]
    per = [r["metrics_per_replicate"]["mmcs"] for r in data["points"]]
    assert per[0] != per[1]  # the seeds really differ
    assert [(e["text"], e["passed_points"], e["points"]) for e in data["expectations"]] == [
        ("expect faithfulness <= 10", 2, 2), ("expect mmcs >= 1", 0, 2)]
    md = open(os.path.join(out, "sweep.md")).read()
    assert "| point | seed | status | faithfulness | mmcs | ml2r | wall time (s) |" in md  # expected metrics first
    f0, m0 = data["points"][0]["metrics"]["faithfulness"], data["points"][0]["metrics"]["mmcs"]
    n0 = len(data["points"][0]["problems"])  # the problems its diagnostics found, beside the status
    assert n0 > 0 and data["points"][0]["problems"] == [d["text"] for d in summary_of(out, "seed=0")["diagnostics"]
                                                        if d["severity"] == "problem"]
    assert f"| seed=0 | 0 | expectations_failed, {n0} problem{'s' if n0 > 1 else ''} | {f0:.4g} | {m0:.4g} |" in md
    assert "| expect mmcs >= 1 | 0 of 2 |" in md and "| expect faithfulness <= 10 | 2 of 2 |" in md


def test_a_failing_point_is_an_error_and_the_others_run(tmp_path, monkeypatch):
    real = runner.run

    def run(exp, **kw):
        if exp.seed == 1:
            raise FloatingPointError("boom")
        return real(exp, **kw)

    monkeypatch.setattr(runner, "run", run)
    out = str(tmp_path / "s")
    result = sweep.run_sweep(tiny((SweepAxis("seed", (0, 1, 2)),)), out, report=False)
    assert [r["status"] for r in result["points"]] == ["ok", "error", "ok"]
    assert result["points"][1]["error"] == "FloatingPointError: boom" and result["status"] == "error"
    assert summary_of(out, "seed=2")["status"] == "ok"
    md = open(os.path.join(out, "sweep.md")).read()
    assert "## Errors" in md and "- `seed=1`: FloatingPointError: boom" in md


def test_resume_reuses_finished_points_only(tmp_path, monkeypatch):
    out = str(tmp_path / "s")
    exp = tiny((SweepAxis("seed", (0, 1, 2)),))
    first = sweep.run_sweep(exp, out, report=False)
    calls = []
    real = runner.run_to_dir
    monkeypatch.setattr(runner, "run_to_dir", lambda e, d, **kw: calls.append(d) or real(e, d, **kw))
    again = sweep.run_sweep(exp, out, report=False)
    assert calls == [] and all(r["resumed"] for r in again["points"])
    assert [r["metrics"] for r in again["points"]] == [r["metrics"] for r in first["points"]]
    assert "3 points reused from an earlier run" in open(os.path.join(out, "sweep.md")).read()
    # an unfinished point (status error) and a point whose spec changed run again
    s1 = summary_of(out, "seed=1")
    with open(os.path.join(out, "seed=1", "summary.json"), "w") as f:
        json.dump(dict(s1, status="error"), f)
    changed = dataclasses.replace(exp, decompose=dataclasses.replace(exp.decompose, steps=11))
    sweep.run_sweep(exp, out, report=False)
    assert calls == [os.path.join(out, "seed=1")]
    calls.clear()
    sweep.run_sweep(changed, out, report=False)
    assert len(calls) == 3


def test_parallel_jobs_give_the_serial_results(tmp_path):
    exp = tiny((SweepAxis("seed", (0, 1)), SweepAxis("decompose.loss.simplicity", (0.5, 1.0))))
    serial = sweep.run_sweep(exp, str(tmp_path / "a"), report=False)
    parallel = sweep.run_sweep(exp, str(tmp_path / "b"), report=False, jobs=2)
    assert [r["label"] for r in parallel["points"]] == [r["label"] for r in serial["points"]]
    assert [r["metrics_per_replicate"] for r in parallel["points"]] == \
        [r["metrics_per_replicate"] for r in serial["points"]]
    assert all(r["status"] == "ok" for r in parallel["points"])


def test_scheduler_without_dask_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(sweep.DistributedUnavailable, match=r"pip install 'apdspec\[distributed\]'"):
        sweep.run_sweep(tiny(), str(tmp_path / "s"), report=False, scheduler="tcp://127.0.0.1:8786")


def test_dask_scheduler_runs_the_points(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        result = sweep.run_sweep(tiny(), str(tmp_path / "s"), report=False, scheduler=cluster.scheduler_address)
    assert [r["status"] for r in result["points"]] == ["ok", "ok"]
    assert result["points"][1]["metrics_per_replicate"] == summary_of(str(tmp_path / "s"), "seed=1")["metrics"]


# ------------------------------------------------------------------------------------------
# CLI


def _spec(tmp_path, expect):
    p = tmp_path / "sw.apd"
    p.write_text(f'use "{QUICK}"\nexperiment sw {{\n  report {{ {expect} }}\n}}\n')
    return str(p)


def test_cli_runs_a_sweep_and_resumes(tmp_path, capsys):
    spec, out = _spec(tmp_path, "expect faithfulness <= 10"), str(tmp_path / "o")
    # --jobs 1: points finish in order, so the lines' order is fixed
    args = ["run", spec, "--out", out, "--quiet", "--jobs", "1", "-s", "seed=seeds(2)", *sum((["-s", s] for s in TINY), [])]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"output    {out}" and text.splitlines()[1].startswith("sweep     2 points (")
    assert re.search(r"^\[1/2\] seed=0  ok  faithfulness [0-9.e-]+  mmcs [0-9.]+ .*expectations 1/1", text, re.M)
    assert re.search(r"^\[2/2\] seed=1  ok ", text, re.M)
    assert "  faithfulness <= 10: passed at 2 of 2 points" in text
    assert f"table: {os.path.join(out, 'sweep.md')}" in text and f"{out}: ok" in text
    assert sorted(os.listdir(out)) == ["plots", "seed=0", "seed=1", "spec.apd", "spec.json", "spec.original.apd",
                                       "sweep.html", "sweep.json", "sweep.md"]
    assert f"page: {os.path.join(out, 'sweep.html')}" in text
    assert "seed = [0, 1]" in open(os.path.join(out, "spec.apd")).read()
    assert open(os.path.join(out, "spec.original.apd")).read() == open(spec).read()  # as written, no overrides
    assert main(args) == 0
    assert "[1/2] seed=0  ok (reused)" in capsys.readouterr().out
    # --resume DIR resumes a sweep too: point seed=1 is gone (as if the sweep had been stopped in it)
    import shutil

    shutil.rmtree(os.path.join(out, "seed=1"))
    assert main(["run", "--resume", out, "--quiet", "--jobs", "1"]) == 0
    text = capsys.readouterr().out
    assert "[1/2] seed=0  ok (reused)" in text and re.search(r"^\[2/2\] seed=1  ok  faithfulness", text, re.M)
    assert json.load(open(os.path.join(out, "sweep.json")))["spec_files"][0]["path"] == os.path.abspath(spec)


def test_cli_exit_codes(tmp_path, monkeypatch, capsys):
    tiny_args = [*sum((["-s", s] for s in TINY), []), "--quiet"]
    failing = _spec(tmp_path, "expect mmcs >= 1")
    assert main(["run", failing, "--out", str(tmp_path / "a"), "-s", "seed=seeds(2)", *tiny_args]) == 1
    assert f"{tmp_path / 'a'}: expectations_failed" in capsys.readouterr().out
    # a point that cannot be checked: exit 2 before anything runs, the error at the sweep value
    assert main(["run", QUICK, "--out", str(tmp_path / "b"), "-s", "decompose.batch=grid(256, 2)", *tiny_args]) == 2
    err = capsys.readouterr().err
    assert "<override 1>:1:27: error: sweep point decompose.batch=2: decompose.topk: batch top-k" in err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "b")
    # a point that raises: the others still run, exit 1 (--jobs 1: the patch lives in this process)
    real = runner.run
    monkeypatch.setattr(runner, "run", lambda e, **kw: real(e, **kw) if e.seed == 0 else 1 / 0)
    assert main(["run", QUICK, "--out", str(tmp_path / "c"), "-s", "seed=seeds(2)", "--jobs", "1", *tiny_args]) == 1
    text = capsys.readouterr().out
    assert "[1/2] seed=0  ok" in text and "[2/2] seed=1  error  ZeroDivisionError" in text
    # --scheduler without dask: a clear message, exit 1
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    assert main(["run", QUICK, "--out", str(tmp_path / "d"), "-s", "seed=seeds(2)", "--scheduler", "tcp://x:1",
                 *tiny_args]) == 1
    assert "pip install 'apdspec[distributed]'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # --jobs and --scheduler exclude each other
        main(["run", QUICK, "--jobs", "2", "--scheduler", "tcp://x:1"])
    assert info.value.code == 2


def test_cli_keeps_a_seed_the_spec_sets_while_sweeping_seed(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["run", QUICK, "--out", out, "--quiet", "-s", "seed=seeds(2)", "-s", "decompose.seed=0",
                 *sum((["-s", s] for s in TINY), [])]) == 0
    with open(os.path.join(out, "seed=1", "spec.json")) as f:
        spec = json.load(f)
    assert (spec["seed"], spec["train"]["seed"], spec["decompose"]["seed"]) == (1, 1, 0)


def test_cli_check_and_run_report_invalid_points_at_the_sweep_value(tmp_path, capsys):
    spec = tmp_path / "bad.apd"
    spec.write_text(f'use "{QUICK}"\nexperiment bad {{\n  sweep {{\n    seed = seeds(2)\n'
                    f'    decompose.steps = grid(10, 0)\n  }}\n}}\n')
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{spec}:5:32: error: sweep point seed=0,decompose.steps=0: decompose.steps: must be > 0, "
                          "got 0\n    5 |     decompose.steps = grid(10, 0)\n      |" + " " * 32 + "^\nhint: ")
    assert err.endswith(f"{spec}: 1 error\n") and "Traceback" not in err
    out = str(tmp_path / "o")
    assert main(["run", str(spec), "--out", out]) == 2
    assert capsys.readouterr().err == err[: err.index(f"{spec}: 1 error")].rstrip("\n") + "\n"
    assert not os.path.exists(out)


# ------------------------------------------------------------------------------------------
# apdspec report on a sweep directory


def test_report_rerenders_sweep_md_and_with_points_each_report(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "s")
    axes = (SweepAxis("data.values", ((0.0, 1.0), (0.0, 2.0))),)  # tuple values: lists once read back
    sweep.run_sweep(tiny(axes, expect=(Expectation("mmcs", ">=", 1.0, text="mmcs >= 1"),)), out)
    md_path = os.path.join(out, "sweep.md")
    written = open(md_path).read()
    assert "[data.values=0.0_1.0](data.values=0.0_1.0/report.md) | [0, 1] |" in written
    os.remove(md_path)
    assert main(["report", out]) == 0
    page = [os.path.join(out, "plots", "sweep.png"), os.path.join(out, "sweep.html")]
    assert capsys.readouterr().out.splitlines() == [md_path, *page]  # sweep.md and the page by default
    assert open(md_path).read() == written
    # --points: every finished point's report too (here one was lost), then sweep.md
    report = os.path.join(out, "data.values=0.0_2.0", "report.md")
    os.remove(report)
    os.remove(md_path)
    assert main(["report", out, "--points"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert report in printed and printed[-3:] == [md_path, *page] and os.path.exists(report)
    assert open(md_path).read() == written
    # a point whose report fails: named, the others and sweep.md still rendered, exit 1
    from runtime.report import document as report_module

    real = report_module.render
    monkeypatch.setattr(report_module, "render",
                        lambda d, **kw: 1 / 0 if d.endswith("0.0_1.0") else real(d, **kw))
    assert main(["report", out, "--points"]) == 1
    captured = capsys.readouterr()
    assert "point data.values=0.0_1.0: the report failed: ZeroDivisionError" in captured.err
    assert report in captured.out and captured.out.splitlines()[-3:] == [md_path, *page]


def test_report_refuses_a_foreign_sweep_json(tmp_path, capsys):
    (tmp_path / "sweep.json").write_text('{"format": "something-else/9"}')
    assert main(["report", str(tmp_path)]) == 2
    assert "is not an apdspec-sweep/1 file" in capsys.readouterr().err
    (tmp_path / "sweep.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2


def test_runtime_reexports_the_sweep_entry_points():
    import runtime

    assert runtime.run_sweep is sweep.run_sweep and runtime.points is sweep.points


def test_cli_runs_one_sweep_point_per_core_by_default(tmp_path, monkeypatch, capsys):
    seen = []
    real = sweep.run_sweep
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **kw: seen.append(kw["jobs"]) or real(*a, **{**kw, "jobs": 1}))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    tiny_args = [*sum((["-s", s] for s in TINY), []), "--quiet"]
    assert main(["run", QUICK, "--out", str(tmp_path / "a"), "-s", "seed=seeds(3)", *tiny_args]) == 0
    assert "sweep     3 points, 2 at a time (" in capsys.readouterr().out and seen == [2]  # min(points, cores)
    assert main(["run", QUICK, "--out", str(tmp_path / "b"), "-s", "seed=seeds(3)", "--jobs", "3", *tiny_args]) == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert main(["run", QUICK, "--out", str(tmp_path / "c"), "-s", "seed=seeds(2)", *tiny_args]) == 0
    assert seen == [2, 3, 2]

"""What `apdspec run` says at the start and at the end: the output directory first, a banner with the
estimated time before the first step; every failed expectation and every problem the diagnostics
found on the terminal, exit 1 (a smoke run only lists its problems); expectations dropped from the
command line; an interrupted run's expectations listed as not evaluated."""
import json
import os
import subprocess
import sys

from apdspec.cli import _verdict, main
from paths import ROOT
from runtime.analysis.diagnostics import diagnose
from runtime.report.document import expectations_section
from runtime.spec import Expectation, Report, check

QUICKSTART = os.path.join(ROOT, "specs", "quickstart.apd")  # states the paper's bars, 3 replicates x 4 inits
TEST_SPEC = os.path.join(ROOT, "tests", "specs", "quick.apd")  # a smoke run
TINY = ["-s", "target.train.steps=30", "-s", "decompose.steps=20", "-s", "decompose.restarts=1", "-s",
        "report.plots=[]", "-s", "report.eval_batches=1", "--quiet"]


def _summary(out):
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def test_failed_expectations_and_problems_are_on_the_terminal_and_exit_1(tmp_path, capsys):
    out = str(tmp_path / "q")
    assert main(["run", QUICKSTART, *TINY, "--out", out]) == 1
    text = capsys.readouterr().out
    summary = _summary(out)
    problems = [d["text"] for d in summary["diagnostics"] if d["severity"] == "problem"]
    assert summary["status"] == "expectations_failed" and problems  # 20 steps reach no bar
    assert "FAIL  mmcs >= 0.99 for at least 3 replicates" in text
    for p in problems:
        assert f"  PROBLEM  {p}" in text
    assert text.rstrip().splitlines()[-1] == (
        f"{out}: expectations_failed (2 of 2 expectations failed; {len(problems)} problem"
        f"{'s' if len(problems) != 1 else ''} found by the diagnostics (listed above and in the report))")


def test_dropped_expectations_leave_the_problems_to_fail_the_run(tmp_path, capsys):
    out = str(tmp_path / "q")
    # one replicate: below the quickstart's `for at least 3 replicates` unless the expectations are dropped
    assert main(["run", QUICKSTART, *TINY, "-s", "replicates=1", "--out", out]) == 2
    assert "cannot hold with replicates = 1" in capsys.readouterr().err
    assert main(["run", QUICKSTART, *TINY, "-s", "replicates=1", "-s", "report.expect = none", "--out", out]) == 1
    text = capsys.readouterr().out
    summary = _summary(out)
    assert summary["status"] == "ok" and summary["expectations"] == [] and "PROBLEM" in text
    assert text.rstrip().splitlines()[-1].startswith(f"{out}: problems (")
    assert "expect " not in open(os.path.join(out, "spec.apd")).read()  # the run's resolved spec has none


def test_a_smoke_run_lists_its_problems_and_exits_0(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert main(["run", TEST_SPEC, *TINY, "--out", out]) == 0
    text = capsys.readouterr().out
    summary = _summary(out)
    assert summary["smoke"] is True and any(d["severity"] == "problem" for d in summary["diagnostics"])
    assert "PROBLEM" in text and text.rstrip().splitlines()[-1].startswith(f"{out}: ok: a smoke run, not a result (")
    assert "**A smoke run**" in open(os.path.join(out, "report.md")).read()


def test_the_output_directory_comes_first_and_the_banner_before_the_first_step(tmp_path):
    out = str(tmp_path / "b")
    env = dict(os.environ, PYTHONPATH=ROOT, APDSPEC_PROGRESS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "apdspec", "run", TEST_SPEC, "-s", "target.train.steps=30", "-s",
                        "decompose.steps=20", "-s", "report.plots=[]", "--out", out],
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert r.returncode == 0, r.stdout
    lines = r.stdout.splitlines()
    assert lines[0] == f"output    {out}"
    assert lines[1].startswith(f"spec      {TEST_SPEC} (experiment quickstart: tms target, apd (C = 5, m = 3, 20 steps), "
                               "1 replicate)")
    assert lines[2] == "smoke     a smoke run: it checks that everything runs, its numbers are not a result"
    assert lines[3].startswith("estimate  ~") and "decomposition ~" in lines[3]
    first_step = next(i for i, line in enumerate(lines) if "step " in line and "steps/s" in line)
    assert first_step > 3


def test_verdicts_and_exit_codes():
    failed = {"text": "expect mmcs >= 0.99", "passed": False}
    problem = {"severity": "problem", "text": "shrinkage"}
    note = {"severity": "note", "text": "fine"}
    assert _verdict({"status": "ok", "diagnostics": [note]}) == ("ok", 0)
    assert _verdict({"status": "ok", "diagnostics": [problem]}) == (
        "problems (1 problem found by the diagnostics (listed above and in the report); expectations met)", 1)
    assert _verdict({"status": "expectations_failed", "expectations": [failed, dict(failed, passed=True)]}) == (
        "expectations_failed (1 of 2 expectations failed)", 1)
    assert _verdict({"status": "ok", "smoke": True, "diagnostics": [problem]})[1] == 0
    assert _verdict({"status": "expectations_failed", "smoke": True, "expectations": [failed]})[1] == 1
    assert _verdict({"status": "error"}) == ("error", 1) and _verdict({}) == ("error", 1)


def test_a_problem_with_a_metric_whose_expectation_passed_is_a_note():
    from run_cases import tms_experiment

    exp = check(tms_experiment(replicates=5))
    metrics = {"mmcs": [0.999, 0.999, 0.999, 0.999, 0.95], "ml2r": [0.9, 0.9, 0.9, 0.9, 0.05]}  # one replicate split
    passed = [{"metric": "mmcs", "passed": True}, {"metric": "ml2r", "passed": True}]
    before = diagnose(exp, exp.target, metrics, [])
    after = diagnose(exp, exp.target, metrics, [], expectations=passed)
    assert {s for s, t in before if "MMCS" in t or "ML2R" in t} == {"problem"}
    assert [s for s, t in after if "MMCS" in t or "ML2R" in t] == ["note", "note"]
    assert all("expectation on" in t for s, t in after if "MMCS" in t or "ML2R" in t)
    failed = [{"metric": "mmcs", "passed": False}, {"metric": "ml2r", "passed": True}]
    assert [s for s, t in diagnose(exp, exp.target, metrics, [], expectations=failed) if "MMCS" in t] == ["problem"]


def test_an_interrupted_run_lists_its_expectations_as_not_evaluated():
    from run_cases import tms_experiment

    exp = check(tms_experiment(replicates=2, expect=(Expectation("mmcs", ">=", 0.99, "all", 2, "expect mmcs >= 0.99 "
                                                                 "for at least 2 replicates"),)))
    sec = expectations_section([], exp, "interrupted")
    text = " ".join(b.text for b in sec.blocks) + str([b.items for b in sec.blocks])
    assert "not evaluated: the run was interrupted before its metrics were computed" in text
    assert "expect mmcs >= 0.99 for at least 2 replicates" in text and "states no expectations" not in text
    none = expectations_section([], check(tms_experiment()), "interrupted")
    assert none.blocks[0].text == "The spec states no expectations."
    assert Report().smoke is False


def test_an_interrupted_run_s_report_says_its_expectations_were_not_evaluated(tmp_path):
    from run_cases import tms_experiment
    from runtime.report import render
    from runtime.spec import to_json

    exp = check(tms_experiment(replicates=2, expect=(Expectation("mmcs", ">=", 0.99, "all", 2, ""),)))
    (tmp_path / "spec.json").write_text(to_json(exp))
    (tmp_path / "summary.json").write_text(json.dumps({"status": "interrupted", "signal": 15, "phase": "decompose",
                                                       "next_step": 7, "resume": f"apdspec run --resume {tmp_path}"}))
    render(str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert "1 expectation, not evaluated: the run was interrupted before its metrics were computed." in text
    assert "| not evaluated | `expect mmcs >= 0.99 for 2 replicates` |" in text

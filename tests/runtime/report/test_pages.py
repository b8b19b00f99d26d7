"""Pages over several runs: a sweep's page (every metric against every axis) and the index of a
directory of runs, as static HTML opened in headless Chromium (every image loads, no console error)."""
import json
import os
import re

import pytest

from apdspec.cli import main
from browser import find_browser, open_page
from paths import ROOT
from runtime.report import plots_common
from runtime.report.pages import find_runs, settings

QUICK = os.path.join(ROOT, "tests", "specs", "quick.apd")  # a smoke run: its problems do not fail it
TINY = ["-s", "target.train.steps=20", "-s", "decompose.steps=10", "-s", "decompose.log_every=5", "-s",
        "report.eval_batches=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A directory holding a 2 x 2 sweep (seeds x simplicity, 2 replicates each) and a single run."""
    root = tmp_path_factory.mktemp("runs")
    figs = {}
    plots_common.SAVE_HOOKS.append(lambda fig, path: figs.setdefault(os.path.basename(path), fig))
    try:
        assert main(["run", QUICK, "--quiet", "--jobs", "1", "--out", str(root / "sweep"), *TINY, "-s", "replicates=2",
                     "-s", "seed=seeds(2)", "-s", "decompose.loss.simplicity=grid(0.3, 0.7)", "-s",
                     "report.plots=[]"]) == 0
        assert main(["run", QUICK, "--quiet", "--out", str(root / "one"), *TINY, "-s",
                     "report.plots=[components, losses]"]) == 0
    finally:
        plots_common.SAVE_HOOKS.pop()
    return root, figs


def test_a_sweep_page_plots_each_metric_against_each_axis(runs):
    root, figs = runs
    sweep = root / "sweep"
    assert (sweep / "sweep.html").exists() and (sweep / "plots" / "sweep.png").exists()
    fig = figs["sweep.png"]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    metrics = json.loads((sweep / "sweep.json").read_text())["table_metrics"]
    # the seed axis is pooled (replicates of a setting): one column, the simplicity
    assert [ax.get_xlabel() for ax in panels] == ["decompose.loss.simplicity"] * len(metrics)
    assert [ax.get_title() for ax in panels] == metrics
    for ax in panels:  # mean +- std at the two swept values, each pooling 2 seeds x 2 replicates
        (line,) = ax.get_lines()[:1]
        assert list(line.get_xdata()) == [0.3, 0.7]
        dots = [l for l in ax.get_lines()[1:] if l.get_marker() == "."]
        assert sum(len(d.get_xdata()) for d in dots) == 8
    md = (sweep / "sweep.md").read_text()
    assert "![every metric against every axis](plots/sweep.png)" in md and "(sweep.html)" in md
    html = (sweep / "sweep.html").read_text()
    assert html.count('<img ') == 1 and 'src="data:image/png;base64,' in html
    assert html.count('href="seed=') == 4  # every point links to its report


def test_report_on_a_directory_of_runs_writes_an_index(runs, capsys):
    root, _ = runs
    assert main(["report", str(root)]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(root / "plots" / "index_losses.png"), str(root / "index.md"), str(root / "index.html")]
    md = (root / "index.md").read_text()
    rows = [line for line in md.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 5 and [r.split(" | ")[1] for r in rows] == [
        "[one](one/report.html)", "[sweep/seed=0,decompose.loss.simplicity=0.3](sweep/seed=0,decompose.loss.simplicity=0.3/report.html)",
        "[sweep/seed=0,decompose.loss.simplicity=0.7](sweep/seed=0,decompose.loss.simplicity=0.7/report.html)",
        "[sweep/seed=1,decompose.loss.simplicity=0.3](sweep/seed=1,decompose.loss.simplicity=0.3/report.html)",
        "[sweep/seed=1,decompose.loss.simplicity=0.7](sweep/seed=1,decompose.loss.simplicity=0.7/report.html)"]
    assert "| # | run | method | target | setting | status | success | time |" in md
    first = rows[0].split(" | ")
    assert first[2:4] == ["apd", "TMS 5-2"] and first[5] == "ok (smoke run)"
    assert "replicates=1" in first[4] and "seed=0" in first[4]  # what differs between the runs
    assert "no expectations" in first[6] and re.match(r"[\d.]+ s \|$", first[7])


def test_settings_name_only_the_fields_every_run_has_that_differ():
    runs = [{"spec": {"seed": s, "decompose": {"seed": s, "steps": 10, **extra}, "name": n}}
            for s, n, extra in ((0, "a", {"topk": 1}), (1, "b", {"ci": 2}))]
    assert settings(runs) == ["seed=0", "seed=1"]  # decompose.seed follows seed; topk / ci: one method's


def test_find_runs_stops_at_runs_and_sweeps(tmp_path):
    (tmp_path / "a" / "b" / "run").mkdir(parents=True)
    (tmp_path / "a" / "b" / "run" / "spec.json").write_text(json.dumps({"name": "x"}))
    (tmp_path / "a" / "b" / "run" / "inner").mkdir()
    (tmp_path / "a" / "b" / "run" / "inner" / "spec.json").write_text("{}")
    assert [os.path.relpath(r["dir"], tmp_path) for r in find_runs(str(tmp_path))] == ["a/b/run"]
    assert main(["report", str(tmp_path / "a" / "b" / "run" / "inner" / "nothing")]) == 2


def test_an_empty_directory_has_no_index(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no run directories under" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# In a browser

BROWSER = find_browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium-family browser on PATH (CI installs one: apt-get install chromium, "
                            ".ci/run; or set APDSPEC_BROWSER)")


@needs_browser
@pytest.mark.parametrize("page", ["index.html", "sweep/sweep.html", "one/report.html"])
def test_pages_load_every_image_without_console_errors(runs, page):
    root, _ = runs
    if page == "index.html" and not (root / "index.html").exists():
        assert main(["report", str(root)]) == 0
    path = root / page
    seen = open_page(BROWSER, str(path))
    count = path.read_text().count("<img ")
    assert count >= 1 and len(seen["images"]) == count
    assert all(complete and width > 0 for _, complete, width in seen["images"]), seen["images"]
    assert seen["errors"] == [], seen["errors"]


@needs_browser
def test_the_browser_check_sees_a_broken_image_and_a_console_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>t</title></head><body>'
                    '<img src="data:image/png;base64,iVBORw0KGgoAAAA"><script>console.error("boom")</script>'
                    '</body></html>')
    seen = open_page(BROWSER, str(page))
    assert [(c, w) for _, c, w in seen["images"]] in ([(True, 0)], [(False, 0)])
    assert any("boom" in e for e in seen["errors"])


def test_ci_installs_a_browser_for_these_tests():
    """Skipped without a browser: the CI script must install one."""
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "apt-get install" in ci and "chromium" in ci

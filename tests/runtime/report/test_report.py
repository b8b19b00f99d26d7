"""The report from a tiny real run (runner.run_to_dir), re-rendered from disk, with missing
metrics, and with unloadable arrays; and the paper reference table."""
import json
import os
import re
import shutil

import pytest

from runtime.report import document as report
from runtime.pipeline import runner
from runtime.spec.paper import PAPER, PaperValue
from runtime.spec import Decompose, Expectation, Experiment, Optimizer, Report, Schedule, Training
from runtime import ApdLosses as Losses, TmsTarget, TopK


def tiny_tms() -> Experiment:
    return Experiment(
        name="tiny_tms", replicates=2, target=TmsTarget(features=5, hidden=2),
        train=Training(steps=200, batch=128),
        decompose=Decompose(components=5, steps=150, batch=128, topk=TopK("batch", 0.211), log_every=50,
                            loss=Losses(simplicity=0.7), optimizer=Optimizer(lr=0.03), schedule=Schedule(warmup=0.05)),
        report=Report(paper="tms_5_2", eval_batches=2, plots=("losses", "polygons", "components"),
                      expect=(Expectation("mmcs", ">=", 0.5), Expectation("ml2r", ">=", 5.0, reduce="mean"))))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("runs") / "tiny")
    summary = runner.run_to_dir(tiny_tms(), d, spec_text="experiment tiny_tms { }\n",
                                spec_original="# as written\nuse \"base.apd\"\n")
    return d, summary


def read(path):
    with open(path) as f:
        return f.read()


def test_run_writes_plots_and_both_reports(run_dir):
    d, summary = run_dir
    paths = summary["report"]
    md, html = os.path.join(d, "report.md"), os.path.join(d, "report.html")
    assert md in paths and html in paths
    for name in ("losses", "polygons", "components"):
        p = os.path.join(d, "plots", f"{name}.png")
        assert p in paths and os.path.getsize(p) > 1000
    text = read(md)
    assert text.startswith("# tiny_tms")
    assert "**Status: expectations_failed**" in text
    assert "| **PASS** | `expect mmcs >= 0.5`" in text and "| **FAIL** | `expect mean(ml2r) >= 5`" in text
    assert "| `mmcs` |" in text and "0.998 +- 0.000" in text and "0.893 +- 0.004" in text  # paper column
    assert "## Diagnostics" in text and "## Provenance" in text
    assert "![training curves" in text and "(plots/losses.png)" in text
    assert "experiment tiny_tms { }" in text  # spec.apd text
    # both specs, each said for what it is: the file as written first, then the resolved one
    assert read(os.path.join(d, "spec.original.apd")) == "# as written\nuse \"base.apd\"\n"
    written, resolved = text.index("# as written"), text.index("experiment tiny_tms { }")
    assert "The spec file as written (`spec.original.apd`, comments kept" in text[:written]
    assert "The resolved spec the run used (`spec.apd`)" in text[written:resolved]
    assert "spec as written (`spec.apd`)" not in text
    assert "steps/s" in text and "seed" in text and "numpy" in text


def test_html_is_self_contained(run_dir):
    d, _ = run_dir
    html = read(os.path.join(d, "report.html"))
    imgs = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(imgs) == 3 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r'(src|href)="(https?:|/|plots/)', html)
    assert '<span class="pass">PASS</span>' in html and '<span class="fail">FAIL</span>' in html
    assert "<table>" in html and "&lt;" not in html.split("<body>")[0]


def test_rerender_from_disk_gives_the_same_metrics_table(run_dir, tmp_path):
    d, _ = run_dir
    copy = str(tmp_path / "copy")
    shutil.copytree(d, copy)
    shutil.rmtree(os.path.join(copy, "plots"))
    os.remove(os.path.join(copy, "report.md"))
    os.remove(os.path.join(copy, "report.html"))
    paths = report.render(copy)
    assert os.path.join(copy, "report.html") in paths
    assert os.path.exists(os.path.join(copy, "plots", "polygons.png"))

    def metrics_table(text):
        return text.split("## Metrics")[1].split("## Diagnostics")[0]

    assert metrics_table(read(os.path.join(copy, "report.md"))) == metrics_table(read(os.path.join(d, "report.md")))


def test_report_with_missing_metrics(run_dir, tmp_path):
    d, _ = run_dir
    copy = str(tmp_path / "copy")
    shutil.copytree(d, copy)
    sp = os.path.join(copy, "summary.json")
    summary = json.loads(read(sp))
    summary["metrics"] = {"mmcs": summary["metrics"]["mmcs"]}
    summary["expectations"] = []
    with open(sp, "w") as f:
        json.dump(summary, f)
    report.render(copy)
    text = read(os.path.join(copy, "report.md"))
    assert "| `mmcs` |" in text
    assert "| `ml2r` |" in text and "not computed" in text  # the paper's value is still listed
    assert "2 expectations, not evaluated: summary.json holds no verdict on them." in text  # the spec states them


def test_report_without_loadable_arrays(run_dir, tmp_path):
    d, _ = run_dir
    copy = str(tmp_path / "copy")
    shutil.copytree(d, copy)
    os.remove(os.path.join(copy, "decomposition.npz"))
    paths = report.render(copy)
    assert paths == [os.path.join(copy, "report.md"), os.path.join(copy, "report.html")]
    text = read(paths[0])
    assert "could not be loaded" in text and "| `mmcs` |" in text


def test_report_of_a_failed_run(tmp_path):
    d = str(tmp_path / "failed")
    os.makedirs(d)
    with open(os.path.join(d, "spec.json"), "w") as f:
        f.write(json.dumps({"name": "broken"}))
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"experiment": "broken", "status": "error", "error": "FloatingPointError: boom"}, f)
    report.render(d)
    text = read(os.path.join(d, "report.md"))
    assert "**Status: error**" in text and "boom" in text


def test_paper_reference_values():
    assert PAPER["tms_5_2"].value("mmcs").value == 0.998 and PAPER["tms_5_2"].value("ml2r").value == 0.893
    assert PAPER["tms_40_10"].value("mmcs").value == 0.996 and PAPER["tms_40_10"].value("ml2r").value == 0.935
    assert PAPER["gated"].value("separated_functions").agrees(4.0)
    assert not PAPER["gated"].value("separated_functions").agrees(3.0)
    assert PAPER["resid_mlp_1l"].value("scrub_ratio").agrees(float("inf"))
    assert PaperValue("ml2r", 0.893, tolerance=0.05).agrees(0.9)
    assert PaperValue("ml2r", 0.893, tolerance=0.05).agrees(float("nan")) is None
    for key in ("tms_5_2", "tms_40_10", "resid_mlp_1l", "resid_mlp_2l", "gated"):
        assert PAPER[key].claims

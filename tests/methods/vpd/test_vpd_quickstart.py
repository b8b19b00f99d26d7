"""specs/vpd_quickstart.apd: the authors' recovery test (TMS 5-5, identity_ci_error == 0) states its
bar, and runs end to end at a tiny size through the CLI (its measured result: docs/results.md)."""
import json
import os

import apdspec
from apdspec.cli import main

from paths import ROOT

SPEC = os.path.join(ROOT, "specs", "vpd_quickstart.apd")


def test_the_vpd_quickstart_states_the_recovery_test():
    e = apdspec.load(SPEC).experiment
    assert e.decompose.method == "vpd" and e.target.features == e.target.hidden == 5
    assert e.decompose.steps == 3000  # the authors' recovery test: 3000 steps
    assert [(x.metric, x.op, x.value, x.at_least) for x in e.report.expect] == [("identity_ci_error", "==", 0, None)]
    assert not e.report.smoke


def test_the_vpd_quickstart_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "run"
    tiny = ["-s", "decompose.steps=12", "-s", "target.train.steps=30", "-s", "replicates=1", "-s", "decompose.batch=64",
            "-s", "target.train.batch=64", "-s", "report.eval_batches=1", "-s", "report.expect = none",
            "-s", "report.smoke = true", "-s", "decompose.faithfulness_warmup.steps=3"]
    assert main(["run", SPEC, "--out", str(out), "--quiet", *tiny]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok"
    for name in ("identity_ci_error", "adv_recon", "clean_recon", "stoch_recon", "ci_l0", "faithfulness"):
        values = summary["metrics"][name]
        assert len(values) == 1 and values[0] is not None, name
    assert summary["metrics"]["identity_ci_error"][0] >= 0 and (out / "report.md").exists()

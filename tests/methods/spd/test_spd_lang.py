"""SPD in the language: method-exclusive keys are errors at the text that set them (both ways, through
use, overrides and sweeps), SPD ranges, metrics and plots that do not apply, explain / fmt / to_apd,
and a run through the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import apdspec
from apdspec import SpecError

from paths import ROOT  # noqa: E402  (the repository)
QUICK = os.path.join(ROOT, "specs", "spd_smoke.apd")

SPD = """experiment s {
  target tms {
    features = 5
    hidden = 2
  }
  decompose {
    method = spd
    components = 8
    steps = 100
    batch = 64
  }
}
"""


def edit(old: str, new: str, base: str = SPD) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def errors(text, overrides=(), filename="t.apd"):
    with pytest.raises(SpecError) as info:
        apdspec.loads(text, filename, overrides)
    return [(d.message, d.span.line if d.span else None, d.span.column if d.span else None, d.hint, d.notes)
            for d in info.value.diagnostics]


def test_spd_spec_loads_with_defaults():
    e = apdspec.loads(SPD).experiment
    d = e.decompose
    assert d.method == "spd" and not hasattr(d, "rank") and d.init_scale == 1.0  # rank-one: SPD has no rank
    assert d.causal_importance.hidden == 16 and d.causal_importance.activation == "gelu"
    assert "attributions" not in e.report.plots and "causal_importance" in e.report.plots
    assert "topk_mse" not in e.report.metrics and "ci_error" in e.report.metrics


@pytest.mark.parametrize("line, text, col, key", [
    ("    topk = batch(0.25)\n", "topk", 12, "decompose.topk"),
    ("    rank = 2\n", "rank", 12, "decompose.rank"),
    ("    attribution = gradient(source = apd)\n", "attribution", 19, "decompose.attribution"),
    ("    unit_norm = true\n", "unit_norm", 17, "decompose.unit_norm"),
    ("    revive = split(every = 10)\n", "revive", 14, "decompose.revive"),
    ("    loss { minimality = 1 }\n", "minimality", 25, "decompose.loss.minimality"),
    ("    loss { simplicity = schatten(0.7, p = 1) }\n", "simplicity", 34, "decompose.loss.simplicity"),
])
def test_apd_keys_in_an_spd_spec_are_errors_where_they_are_set(line, text, col, key):
    src = edit("    steps = 100\n", line + "    steps = 100\n")
    errs = errors(src)
    assert len(errs) == 1, errs
    msg, ln, column, hint, notes = errs[0]
    assert msg == f"'{key}' applies to method = apd; this decomposition is method = spd"
    assert (ln, column) == (9, col)
    assert "set decompose.method = apd" in hint
    assert notes and "'decompose.method' is set to spd here" in notes[0].message and notes[0].span.line == 7


def test_spd_keys_in_an_apd_spec_are_errors_where_they_are_set():
    src = edit("    method = spd\n", "    causal_importance = mlp(32)\n    mask_samples = 2\n"
               "    loss { importance_minimality = lp(1e-3, p = 2) }\n")
    errs = errors(src)
    assert [(m, ln, c) for m, ln, c, _, _ in errs] == [
        ("'decompose.causal_importance' applies to method = spd or vpd; this decomposition is method = apd", 7, 25),
        ("'decompose.mask_samples' applies to method = spd; this decomposition is method = apd", 8, 20),
        ("'decompose.loss.importance_minimality' applies to method = spd or vpd; this decomposition is method = apd",
         9, 39)]
    assert "has its default value (apd)" in errs[0][4][0].message


def test_method_conflicts_through_overrides_and_sweeps():
    errs = errors(SPD, ["decompose.topk=batch(1)"])
    assert errs[0][0].startswith("'decompose.topk' applies to method = apd") and errs[0][1] == 1
    errs = errors(SPD, ["decompose.method=apd", "decompose.mask_samples=2"])
    assert errs[0][0].startswith("'decompose.mask_samples' applies to method = spd")
    errs = errors(SPD + "sweep { decompose.topk.value = grid(1, 2) }\n")
    assert errs[0][0].startswith("'decompose.topk.value' applies to method = apd") and errs[0][1] == 13
    # an SPD key swept in an SPD spec is fine, and every point is an SPD experiment
    spec = apdspec.loads(SPD, overrides=["decompose.loss.importance_minimality=grid(1e-3, 3e-3)"])
    import runtime

    pts = runtime.points(spec.experiment)
    assert [p.experiment.decompose.loss.importance_minimality for p in pts] == [1e-3, 3e-3]


@pytest.mark.parametrize("old, new, line, col, msg", [
    ("    batch = 64\n", "    batch = 64\n    mask_samples = 0\n", 11, 20, "decompose.mask_samples: must be > 0"),
    ("    batch = 64\n", "    batch = 64\n    causal_importance = mlp(0)\n", 11, 29,
     "decompose.causal_importance.hidden: must be > 0"),
    ("    batch = 64\n", "    batch = 64\n    causal_importance = mlp(lower_leak = 1.5)\n", 11, 42,
     "decompose.causal_importance.lower_leak: a leak slope must be in [0, 1)"),
    ("    batch = 64\n", "    batch = 64\n    causal_importance = mlp(activation = relu)\n", 11, 42,
     "unknown value 'relu' for 'activation'"),
    ("    batch = 64\n", "    batch = 64\n    loss { importance_warmup = 2 }\n", 11, 32,
     "decompose.loss.importance_warmup: importance_warmup is a fraction"),
    ("    batch = 64\n", "    batch = 64\n    loss { stochastic_recon = none  stochastic_recon_layerwise = none }\n",
     11, 31, "decompose.loss.stochastic_recon: SPD needs a stochastic reconstruction loss"),
])
def test_spd_ranges(old, new, line, col, msg):
    errs = errors(edit(old, new))
    assert any(m.startswith(msg) and (ln, c) == (line, col) for m, ln, c, _, _ in errs), errs


def test_metrics_plots_and_expectations_of_the_other_method():
    errs = errors(SPD.replace("  }\n}\n", "  }\n  report {\n    metrics = [mmcs, topk_mse]\n    plots = [attributions]\n"
                              "    expect dead_components <= 3\n  }\n}\n"))
    msgs = [m for m, *_ in errs]
    assert "report.metrics: metric 'topk_mse' does not apply to method = spd" in msgs
    assert "report.plots: plot 'attributions' does not apply to method = spd" in msgs
    assert "expect: metric 'dead_components' does not apply to method = spd" in msgs


def test_canonical_text_explain_and_summary():
    spec = apdspec.load(os.path.join(ROOT, "specs", "spd_tms_5_2.apd"))
    assert "topk" not in spec.text and "attribution" not in spec.text and "simplicity" not in spec.text
    assert "method = spd" in spec.text and "causal_importance = mlp(" in spec.text
    assert apdspec.loads(spec.text).experiment == spec.experiment
    from apdspec.explain import explain

    lines = explain(spec, "decompose")
    assert any(line.startswith("decompose.causal_importance.hidden = 16") for line in lines)
    assert not any("topk" in line or "rank" in line for line in lines)
    from apdspec.summary import summary_lines

    text = "\n".join(summary_lines(spec.experiment))
    assert "C = 20 rank-one subcomponents per decomposed matrix" in text and "top-k" not in text
    # APD's canonical text has no SPD key either
    apd = apdspec.load(os.path.join(ROOT, "specs", "tms_5_2.apd"))
    assert "causal_importance" not in apd.text and "stochastic_recon" not in apd.text


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, APDSPEC_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "apdspec", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_short_spd_run_through_the_cli(tmp_path):
    out = tmp_path / "run"
    r = _cli("run", QUICK, "-s", "decompose.steps=60", "-s", "target.train.steps=100", "-s", "replicates=2",
             "--out", str(out), "--quiet")
    assert r.returncode in (0, 1), r.stderr  # 1 only if an expectation failed (the quickstart states none)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok", summary
    assert {"mmcs", "ml2r", "ci_error", "ci_l0"} <= set(summary["metrics"])
    assert all(len(v) == 2 for v in summary["metrics"].values())
    z = np.load(out / "decomposition.npz")
    assert z["W.V"].shape == (5, 10) and z["W.T.U"].shape == (10, 5) and z["W.ci.w_in"].shape == (10, 16)
    assert (out / "replicates" / "1" / "decomposition.npz").exists()
    assert (out / "plots" / "causal_importance.png").exists()
    report = (out / "report.md").read_text()
    assert "causal_importance" in report and "Traceback" not in report
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    dec = [row for row in rows if row["phase"] == "decompose"]
    assert dec[-1]["step"] == 60 and "importance_minimality" in dec[-1] and "ci_l0" in dec[-1]
    # the run directory re-renders from disk
    r = _cli("report", str(out))
    assert r.returncode == 0, r.stderr
    r = _cli("check", QUICK)
    assert r.returncode == 0 and "method       spd" in r.stdout

"""The shipped specs: they check clean, are canonically formatted, round-trip, and say what the paper says."""
import glob
import os

import pytest

import apdspec
from apdspec.fmt import format_text

from paths import ROOT  # noqa: E402  (the repository)
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.apd")))
NAMES = [os.path.basename(p) for p in SPECS]
PAPER_SPECS = {"tms_5_2.apd", "tms_40_10.apd", "tms_5_2_lp.apd", "resid_mlp_1l.apd", "resid_mlp_2l.apd",
               "resid_mlp_1l_topk1.apd", "resid_mlp_2l_topk1.apd", "gated.apd"}


def _load(name, overrides=()):
    return apdspec.load(os.path.join(ROOT, "specs", name), overrides)


def test_every_paper_experiment_has_a_spec():
    assert PAPER_SPECS | {"quickstart.apd"} <= set(NAMES)


@pytest.mark.parametrize("path", SPECS, ids=NAMES)
def test_spec_checks_clean(path):
    spec = apdspec.load(path)
    assert spec.experiment.name == os.path.basename(path)[:-4]
    assert os.path.abspath(path) in spec.files


@pytest.mark.parametrize("path", SPECS, ids=NAMES)
def test_spec_is_canonically_formatted(path):
    text = open(path, encoding="utf-8").read()
    assert format_text(text, path) == text


@pytest.mark.parametrize("path", SPECS, ids=NAMES)
def test_fmt_keeps_meaning_and_is_idempotent(path):
    # reformat a deliberately messy version of the spec: no indentation, no spaces around '=' in code
    text = open(path, encoding="utf-8").read()

    def mess(line):
        code, hash_, comment = line.partition("#")
        return " ".join(code.split()).replace(" = ", "=").replace(", ", ",") + "    " * bool(hash_) + hash_ + comment

    messy = "\n".join(mess(line) for line in text.splitlines()) + "\n\n\n"
    assert messy != text
    once = format_text(messy, path)
    assert format_text(once, path) == once
    assert once == text  # canonical layout is unique
    assert apdspec.loads(once, path).experiment == apdspec.loads(messy, path).experiment
    assert [c for c in once.splitlines() if "#" in c] == [c for c in text.splitlines() if "#" in c]


@pytest.mark.parametrize("path", SPECS, ids=NAMES)
def test_to_apd_round_trips(path):
    spec = apdspec.load(path)
    again = apdspec.loads(spec.text)
    assert again.experiment == spec.experiment
    assert again.text == spec.text
    assert format_text(spec.text) == spec.text


@pytest.mark.parametrize("name", sorted(PAPER_SPECS))
def test_paper_specs_carry_expectations_or_say_why_not(name):
    spec = _load(name)
    text = open(os.path.join(ROOT, "specs", name), encoding="utf-8").read()
    if "topk1" in name:
        assert spec.experiment.report.expect == () and "expect none" in text
    else:
        assert spec.experiment.report.expect
        assert spec.experiment.report.paper is not None


def test_tms_5_2_hyperparameters():
    e = _load("tms_5_2.apd").experiment
    d = e.decompose
    assert (e.target.features, e.target.hidden, e.replicates) == (5, 2, 5)
    assert (e.train.steps, e.train.batch, e.train.optimizer.name, e.train.optimizer.lr,
            e.train.optimizer.weight_decay, e.train.schedule.kind) == (5000, 1024, "adamw", 5e-3, 0.01, "linear")
    assert (d.components, d.rank, d.topk.mode, d.topk.value, int(d.topk.value * d.batch)) == (5, 3, "batch", 0.211, 432)
    assert (d.loss.faithfulness, d.loss.minimality, d.loss.simplicity, d.loss.simplicity_p) == (1, 1, 0.7, 1)
    assert (d.optimizer.name, d.optimizer.lr, d.schedule.kind, d.schedule.warmup) == ("adam", 0.03, "constant", 0.05)
    assert (d.steps, d.batch, d.attribution.source) == (20_000, 2048, "apd")
    got = [(x.metric, x.op, x.value, x.at_least) for x in e.report.expect]
    assert got == [("mmcs", ">=", 0.99, 4), ("ml2r", ">=", 0.89, 4)]


def test_tms_5_2_lp_builds_on_tms_5_2():
    base, lp = _load("tms_5_2.apd").experiment, _load("tms_5_2_lp.apd").experiment
    d = lp.decompose
    assert d.topk is None and d.loss.minimality is None and d.unit_norm
    assert (d.loss.sparsity, d.loss.sparsity_p, d.loss.simplicity, d.optimizer.lr, d.schedule.warmup) == (7, 0.9, 1, 0.3, 0.1)
    assert lp.target == base.target and lp.train == base.train and lp.data == base.data


def test_resid_and_gated_hyperparameters():
    r1 = _load("resid_mlp_1l.apd").experiment
    assert (r1.target.features, r1.target.d_embed, r1.target.d_mlp, r1.target.layers) == (100, 1000, 50, 1)
    assert (r1.decompose.components, r1.decompose.rank, r1.decompose.topk.value, r1.decompose.loss.act_recon,
            r1.decompose.loss.simplicity, r1.decompose.loss.simplicity_p, r1.decompose.unit_norm) == (130, 50, 1.28, 1, 10, 0.9, True)
    assert r1.data.values == (-1.0, 1.0) and r1.data.probability == 0.01
    r2 = _load("resid_mlp_2l.apd").experiment
    assert (r2.target.d_mlp, r2.target.layers, r2.decompose.components, r2.decompose.loss.minimality,
            r2.decompose.loss.simplicity, r2.decompose.unit_norm) == (25, 2, 200, 2, 7, False)
    t1 = _load("resid_mlp_1l_topk1.apd").experiment
    assert t1.decompose.topk.value == 1 and t1.target == r1.target
    g = _load("gated.apd").experiment
    gd = g.decompose
    assert (g.target.functions, g.target.neurons, g.target.layers, g.train) == (4, 10, 2, None)
    assert (gd.components, gd.topk.value, gd.batch, gd.steps, gd.loss.faithfulness, gd.loss.minimality,
            gd.loss.simplicity, gd.loss.simplicity_p) == (4, 0.2217, 10_000, 200_000, 0.1, 5, 5, 1)
    assert (gd.optimizer.lr, gd.schedule.kind, gd.schedule.warmup, gd.attribution.source) == (3e-3, "cosine", 0.004, "apd")
    assert [(x.metric, x.op, x.value) for x in g.report.expect] == [("separated_functions", ">=", 4)]


def test_quickstart_is_small_and_states_the_paper_s_bars():
    """Measured (docs/results.md): 15 of 15 replicates over seeds 0-4 meet both bars, 32-47 s a run."""
    e = _load("quickstart.apd").experiment
    assert e.train.steps <= 5000 and e.decompose.steps <= 5000 and e.decompose.batch <= 1024
    assert e.replicates * e.decompose.restarts <= 12 and not e.report.smoke
    bars = {(x.metric, x.op, x.value, x.at_least) for x in e.report.expect}
    assert bars == {("mmcs", ">=", 0.99, e.replicates), ("ml2r", ">=", 0.89, e.replicates)}  # tms_5_2.apd's bars
    assert {(x.metric, x.op, x.value) for x in _load("tms_5_2.apd").experiment.report.expect} == {b[:3] for b in bars}


def test_the_spd_smoke_run_says_so():
    e = _load("spd_smoke.apd").experiment
    assert e.report.smoke and e.name == "spd_smoke" and e.decompose.method == "spd"

"""The memory estimate and budget (runtime/pipeline/resources.py), and the bounded calibration of
the wall-time estimate (runtime/pipeline/estimate.py): the parts every layer states, the fields
that drive the peak and what would fit, the machine's budget, and an estimate that is not below
what a small run measures."""
import dataclasses
import os
import tracemalloc

import pytest

import apdspec
from runtime.engine.memory import PHASES, Part
from runtime.pipeline import estimate as E
from runtime.pipeline import resources as R
from runtime.pipeline.runner import build_target, finish, run
from runtime.report.document import render
from runtime.spec import KINDS, METHODS
from runtime.store.rundir import save_arrays, write_text

from paths import ROOT  # noqa: E402  (the repository)
QUICK = os.path.join(ROOT, "specs", "quickstart.apd")
RESID = os.path.join(ROOT, "specs", "resid_mlp_1l.apd")
SPECS = sorted(os.path.join(ROOT, "specs", f) for f in os.listdir(os.path.join(ROOT, "specs")) if f.endswith(".apd"))
MiB = 2 ** 20


def load(path, *sets):
    """The spec with `sets`, without its expectations (smaller sizes make some of them impossible)."""
    return apdspec.load(path, [*sets, "report.expect = none"]).experiment


def test_the_peak_is_the_largest_phase_of_the_parts_living_through_it():
    est = R.MemoryEstimate((Part("a", 10.0, PHASES), Part("b", 100.0, ("decomposition",)),
                            Part("c", 50.0, ("evaluation", "report")), Part("d", 70.0, ("report",))))
    assert est.phase_bytes("target training") == R.PROCESS_BYTES + 10
    assert est.phase_bytes("report") == R.PROCESS_BYTES + 130 and est.peak_phase == "report"
    assert est.peak == R.PROCESS_BYTES + 130 and est.peak_of(("decomposition",)) == R.PROCESS_BYTES + 110
    assert [p.what for p in est.largest_parts(2)] == ["d", "c"]
    assert est.describe().startswith(f"~{R.size_text(est.peak)} at its peak (report: d 70 B, c 50 B")


@pytest.mark.parametrize("path", SPECS, ids=os.path.basename)
def test_every_kind_and_method_states_its_parts(path):
    """Each shipped spec: the target's parts (model), the decomposition's (engine), the
    evaluation's (analysis) and the report's, each phase with something of its own."""
    exp = load(path)
    est = R.estimate_memory(exp)
    names = " | ".join(p.what for p in est.parts)
    assert "target parameters" in names and "components" in names and "per-sample records" in names
    assert "figure" in names and all(p.bytes >= 0 for p in est.parts)
    for phase in PHASES[1:]:
        assert any(phase in p.phases and p.bytes > 0 for p in est.parts), phase
    assert R.check_memory(exp, R.Budget(64 * 2 ** 30, "test")) is None  # every shipped spec fits 64 GiB


def test_each_method_and_kind_is_covered():
    """Guards the parametrisation above: the shipped specs use every registered kind and method."""
    kinds = {load(p).target.kind for p in SPECS}
    methods = {load(p).decompose.method for p in SPECS}
    assert kinds >= set(KINDS) and methods >= set(METHODS)


def test_the_estimate_follows_what_a_run_holds():
    q = load(QUICK)
    grow = lambda **kw: R.estimate_memory(dataclasses.replace(q, **kw)).peak  # noqa: E731
    base = R.estimate_memory(q).peak
    assert grow(replicates=1000) > base + 100 * MiB
    d = q.decompose
    wider = R.estimate_memory(dataclasses.replace(q, decompose=dataclasses.replace(d, batch=10 ** 6)))
    assert wider.peak > base + 500 * MiB
    report = dataclasses.replace(q.report, eval_batches=10 ** 6)
    many = R.estimate_memory(dataclasses.replace(q, report=report))
    assert many.peak_phase in ("evaluation", "report") and many.peak > 20 * 2 ** 30  # 256M samples kept
    # a float64 run holds twice the float32 arrays
    r = load(RESID, "decompose.components=600")
    r64 = dataclasses.replace(r, dtype="float64")
    part = lambda e, name: next(p.bytes for p in R.estimate_memory(e).parts if p.what == name)  # noqa: E731
    assert part(r64, "APD components") == 2 * part(r, "APD components")


def test_drivers_are_the_fields_the_peak_grows_with_and_fits_are_exact():
    exp = load(RESID, "target.d_embed=10000", "decompose.components=100000")
    found = R.drivers(exp)
    paths = [d.path for d in found]
    assert paths[0] == "decompose.components" and "target.d_embed" in paths
    assert all(d.exponent > 0.9 for d in found[:2]) and "decompose.steps" not in paths and "seed" not in paths
    limit = 16 * 2 ** 30
    v = R.largest_fitting(exp, "decompose.components", 100000, limit)
    at = lambda c: R.estimate_memory(dataclasses.replace(exp, decompose=dataclasses.replace(  # noqa: E731
        exp.decompose, components=c))).peak
    assert at(v) <= limit < at(v + 1)
    refusal = R.check_memory(exp, R.Budget(limit, "test"))
    assert refusal is not None and ("decompose.components", v) in refusal.fits
    assert refusal.estimate.peak > 2 ** 40  # > 1 TiB, as `check` used to say, evaluation and report on top


def test_a_field_at_one_is_not_named_and_nothing_fits_says_so():
    exp = load(QUICK, "replicates=1")
    assert "replicates" not in [d.path for d in R.drivers(exp)]
    tiny = R.Budget(R.PROCESS_BYTES / 2, "test")  # not even the process itself
    refusal = R.check_memory(exp, tiny)
    assert refusal is not None and refusal.fits == ()


def test_the_budget_reads_meminfo_and_a_cgroup_limit(tmp_path):
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n")
    assert R.available_memory(str(info), str(tmp_path / "none")) == (8000000 * 1024, "MemAvailable")
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "memory.max").write_text("4294967296\n")
    (cg / "memory.current").write_text("1073741824\n")
    n, source = R.available_memory(str(info), str(cg))
    assert n == 3 * 2 ** 30 and "cgroup" in source
    (cg / "memory.max").write_text("max\n")  # no limit
    assert R.available_memory(str(info), str(cg))[1] == "MemAvailable"
    b = R.machine_budget()
    assert b is None or (0 < b.bytes and "available on this machine" in b.source)
    assert R.limit_budget(4 * 2 ** 30).source == "the --max-memory limit of 4 GiB"


@pytest.mark.parametrize("n, text", [(512, "512 B"), (38.2 * 1024, "38.2 KiB"), (3.3 * 2 ** 30, "3.3 GiB"),
                                     (1.11 * 2 ** 40, "1.11 TiB"), (5000 * 2 ** 40, "5,000 TiB")])
def test_sizes_read_naturally(n, text):
    assert R.size_text(n) == text


def _traced_phases(exp, tmp_path) -> dict:
    """The traced (tracemalloc: NumPy's arrays included) peak of each phase of a real run."""
    out = {}
    tracemalloc.start()
    try:
        def phase(name, fn):
            tracemalloc.reset_peak()
            value = fn()
            out[name] = tracemalloc.get_traced_memory()[1]
            return value

        built = phase("target training", lambda: build_target(exp))
        result = phase("decomposition", lambda: run(exp, built_target=built, with_metrics=False))
        phase("evaluation", lambda: finish(result))
        save_arrays(result, str(tmp_path))
        from runtime.spec import to_json

        write_text(str(tmp_path / "spec.json"), to_json(exp))
        phase("report", lambda: render(str(tmp_path), result=result))
    finally:
        tracemalloc.stop()
    return out


@pytest.mark.parametrize("path, sets", [
    (RESID, ["target.features=40", "target.d_embed=200", "decompose.components=60", "decompose.batch=512",
             "target.train.batch=2048"]),
    (os.path.join(ROOT, "specs", "spd_tms_40_10_laptop.apd"), ["decompose.batch=1024", "target.train.batch=1024"]),
], ids=["apd-resid", "spd-tms"])
def test_the_estimate_is_not_below_a_measured_run(path, sets, tmp_path):
    """Each phase of a short run holds at most what the estimate says (benchmarks/memory.py has
    more cases and the ratios)."""
    exp = load(path, *sets, "decompose.steps=3", "target.train.steps=3", "decompose.checkpoint_every=0")
    est = R.estimate_memory(exp)
    measured = _traced_phases(exp, tmp_path)
    for phase, got in measured.items():
        assert got <= est.phase_bytes(phase) - R.PROCESS_BYTES + MiB, (phase, got, est.phase_bytes(phase))


# ------------------------------------------------------------------------------------------
# The wall-time estimate's calibration allocates a bounded slice


def test_a_large_spec_is_timed_on_a_slice_within_the_bound(monkeypatch):
    monkeypatch.setattr(E, "CALIBRATION_BYTES", R.PROCESS_BYTES + 24 * MiB)
    exp = load(RESID, "target.features=40", "target.d_embed=200", "decompose.components=400", "replicates=3")
    assert R.estimate_memory(exp).peak_of(E.TIMED_PHASES) > E.CALIBRATION_BYTES
    sliced, changed = E.calibration_slice(exp)
    assert changed and R.estimate_memory(sliced).peak_of(E.TIMED_PHASES) <= E.CALIBRATION_BYTES
    assert all(not p.startswith("target.") for p, _ in changed)  # the target's own sizes are kept
    tracemalloc.start()
    try:
        e = E.estimate(exp, budget_s=0.2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= E.CALIBRATION_BYTES - R.PROCESS_BYTES
    assert e.sliced == changed and "timed on a slice with" in e.describe() and e.parts["decompose"] > 0


def test_a_small_spec_is_timed_as_it_is():
    exp = load(QUICK)
    assert E.calibration_slice(exp) == (exp, ())
    assert E.estimate(exp, budget_s=0.1).sliced == ()


def test_a_target_too_large_to_time_says_so(monkeypatch):
    monkeypatch.setattr(E, "CALIBRATION_BYTES", R.PROCESS_BYTES + MiB)
    exp = load(RESID, "target.features=2000", "target.d_embed=1000")  # its target alone: 2 x 8 MB
    with pytest.raises(E.TooLargeToTime, match="even a slice of this spec needs"):
        E.calibration_slice(exp)


def test_many_evaluation_batches_show_in_the_time_estimate():
    """Beyond the 20 batches the kind's allowance was measured with, each evaluation batch adds the
    method's EVAL_STEPS steps (measured: APD ~0.5, SPD ~1.6)."""
    from runtime.analysis.core import ANALYSES

    exp = load(QUICK, "report.eval_batches=100000")
    e = E.estimate(exp, budget_s=0.1)
    per_batch = ANALYSES["apd"].EVAL_STEPS * e.step_ms / 1e3
    assert e.parts["finish"] == pytest.approx(E.finish_seconds(exp.target) * e.contention + 99980 * per_batch)

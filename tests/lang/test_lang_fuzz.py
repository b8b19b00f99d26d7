"""A fixed sample of the checker fuzzer's cases (benchmarks/fuzz_checker.py): only SpecError may
escape `apdspec.load`, every error is located (file, and line:col unless about a whole file), no
SpecError comes from the last-resort safety net, and fmt / explain / the canonical round trip of a
spec that loads raise nothing else either. The full 10^4-case run, with timing, is the benchmark."""
import importlib.util
import os
import sys

import pytest

import apdspec

from paths import ROOT  # noqa: E402  (the repository)
_spec = importlib.util.spec_from_file_location("fuzz_checker", os.path.join(ROOT, "benchmarks", "fuzz_checker.py"))
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_checker"] = fuzz  # its dataclasses look their module up while being defined
_spec.loader.exec_module(fuzz)

SEED = 7  # not the benchmark's default seed: the test sample differs from the benchmark run
INDICES = range(300)


@pytest.mark.parametrize("index", INDICES)
def test_fuzz_case_gives_only_located_spec_errors(index, tmp_path):
    case = fuzz.make_case(SEED, index)
    out = fuzz.run_case(case, str(tmp_path), cli=index % 10 == 0)
    assert out["status"] in ("ok", "spec_error"), (case.mutators, out["errors"])
    assert out["errors"] == [], (case.mutators, out["errors"])
    if out["status"] == "spec_error":
        assert out["located"], (case.mutators, out["first"])
        assert not out["internal"], (case.mutators, out["first"])  # a bug the safety net hid


def test_the_sample_exercises_every_mutator_and_both_outcomes(tmp_path):
    # guards the test above: the sample covers every mutation kind and includes specs that load
    used = {m for i in INDICES for m in fuzz.make_case(SEED, i).mutators}
    assert used == set(fuzz.MUTATORS)
    statuses: set[str] = set()
    for i in INDICES:  # stops at the first case of the outcome not yet seen both ways (usually < 100)
        statuses.add(fuzz.run_case(fuzz.make_case(SEED, i), str(tmp_path), cli=False)["status"])
        if statuses == {"ok", "spec_error"}:
            break
    assert statuses == {"ok", "spec_error"}


T = "  target tms { features = 5  hidden = 2 }\n"


@pytest.mark.parametrize("text, line, col, message", [
    ("experiment t {\n  seed 0\n" + T + "}\n", 2, 8, "expected '=' after 'seed'"),
    ("experiment t {\n  seed = 1e999\n" + T + "}\n", 2, 10, "too large"),
    ("experiment t {\x00}", 1, 15, "NUL character"),
    ("experiment t {\n" + "  seed = " + "(" * 200 + "1" + ")" * 200 + "\n" + T + "}\n", 2, None, ""),
    ("experiment t {\n  seed = " + "1" * 5000 + "\n" + T + "}\n", 2, None, ""),
    ("experiment t {\n" + T + "  decompose {\n    steps = 3\n\n", None, None, "'decompose' is not closed"),
])
def test_regressions_are_located_spec_errors(text, line, col, message):
    with pytest.raises(apdspec.SpecError) as info:
        apdspec.loads(text)
    d = info.value.diagnostics[0]
    assert message in d.message
    if line is not None:
        assert d.span.line == line
    if col is not None:
        assert d.span.column == col


def test_inf_in_an_integer_field_is_a_spec_error():
    base = open(os.path.join(ROOT, "specs", "quickstart.apd")).read()
    with pytest.raises(apdspec.SpecError) as info:
        apdspec.loads(base, overrides=["decompose.steps=inf"])
    assert "decompose.steps" in str(info.value) or "integer" in str(info.value)


@pytest.mark.parametrize("seed, index", [(2, 8621)])  # benchmark finds, kept as regressions
def test_benchmark_regressions(seed, index, tmp_path):
    # (2, 8621): a 2000-point sweep's canonical text had a 9000-character line, over the parser's limit
    out = fuzz.run_case(fuzz.make_case(seed, index), str(tmp_path), cli=False)
    assert out["errors"] == [] and out["status"] in ("ok", "spec_error"), out


def test_a_long_list_is_laid_out_over_lines_that_reload():
    text = ("experiment x {\n  target tms { }\n  sweep { seed = [" + ",\n".join(map(str, range(1500)))
            + "] }\n}\n")
    spec = apdspec.loads(text)
    canonical = spec.text
    assert max(len(line) for line in canonical.splitlines()) <= 100
    assert apdspec.loads(canonical).experiment == spec.experiment
    assert apdspec.format_text(canonical, "x.apd") == canonical


def test_a_derived_training_seed_error_points_at_the_target_block(tmp_path):
    # fuzz seed 3 case 1678: no experiment header, an invalid seed inherited by target.train.seed
    p = tmp_path / "s.apd"
    p.write_text("seed = -1\ntarget tms { features = 5 }\n")
    with pytest.raises(apdspec.SpecError) as info:
        apdspec.load(str(p))
    by_message = {d.message: d for d in info.value.diagnostics}
    d = by_message["target.train.seed: must be >= 0, got -1"]
    assert d.span is not None and (d.span.line, d.span.column) == (2, 1)

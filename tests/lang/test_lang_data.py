"""The data block in the language: per-feature values, groups, importances and data files; every
mistake reported at its line and column, and the data-file forms that work (no hint loop)."""
import json
import os

import numpy as np
import pytest

import apdspec
from apdspec import SpecError
from runtime.spec import Profile

HEAD = "experiment t {\n  target tms {\n    features = 5\n    hidden = 2\n  }\n"  # lines 1-5


def spec(*lines: str) -> str:
    return HEAD + "".join(f"  {line}\n" for line in lines) + "}\n"  # `lines` start at line 6


def error(text, path="t.apd", line=None, col=None, message="", hint="", note=None):
    with pytest.raises(SpecError) as info:
        apdspec.loads(text, path)
    diags = info.value.diagnostics
    d = next((d for d in diags if message in d.message and (line is None or (d.span.line, d.span.column) == (line, col))),
             None)
    assert d is not None, f"no '{message}' at {line}:{col}; got:\n{info.value.render()}"
    assert hint in d.hint, d.hint
    if note is not None:
        assert any(note == (n.span.line, n.span.column) for n in d.notes if n.span), info.value.render()
    assert "Traceback" not in info.value.render()
    return d


# -- generated data

CASES = [
    ("list too short", spec("data { probability = [0.1, 0.2] }"), 6, 24,
     "data.probability: 2 values for a target with 5 features", "give 5 values", (2, 10)),
    ("probability out of range in a list", spec("data { probability = [0.1, 0.2, 0, 0.1, 0.1] }"), 6, 24,
     "p_2 (feature 2) must be in (0, 1], got 0", "", None),
    ("zipf above 1", spec("data { probability = zipf(1.5) }"), 6, 24, "p_0 (feature 0) must be in (0, 1]", "", None),
    ("unknown zipf argument", spec("data { probability = zipf(0.1, power = 2) }"), 6, 34,
     "unknown argument 'power' to zipf()", "write zipf(first, exponent = ...)", None),
    ("zipf without its value", spec("data { probability = zipf(exponent = 2) }"), 6, 24, "zipf() needs 1 argument", "",
     None),
    ("unknown form", spec("data { probability = zipff(0.1) }"), 6, 24, "unknown per-feature form 'zipff'",
     "did you mean 'zipf'?", None),
    ("negative ratio", spec("target.train.importance = geometric(1, ratio = -0.5)"), 6, 29,
     "the geometric ratio must be > 0", "", None),
    ("importance list too long", spec("target.train.importance = [1, 0.5, 0.25, 0.1, 0.1, 0.1]"), 6, 29,
     "train.importance: 6 values for a target with 5 outputs", "", (2, 10)),
    ("anticorrelated probabilities over 1", spec("data {", "  probability = [0.6, 0.5, 0.1, 0.1, 0.1]",
                                                 "  anticorrelated = [[0, 1]]", "}"), 8, 22,
     "probabilities of anti-correlated group [0, 1] sum to 1.1", "lower data.probability", (7, 19)),
    ("a feature in two groups", spec("data {", "  synced = [[0, 1]]", "  anticorrelated = [[1, 2]]", "}"), 8, 22,
     "feature 1 is in two groups (synced and anticorrelated)", "at most one group", (7, 14)),
    ("anticorrelated index out of range", spec("data { anticorrelated = [[3, 5]] }"), 6, 27,
     "feature index 5 is out of range", "", None),
    ("groups with exactly_n_active", spec("data { mode = exactly_n_active(2)  anticorrelated = [[0, 1]] }"), 6, 55,
     "anticorrelated groups apply to at_least_zero_active data only", "", (6, 17)),
    ("per-feature with exactly_n_active", spec("data { mode = exactly_n_active(2)  probability = [0.1, 0.1, 0.1, "
                                               "0.1, 0.1] }"), 6, 52, "exactly_n_active picks its n features uniformly",
     "", None),
    ("correlated is synced", spec("data { correlated = [[0, 1]] }"), 6, 10, "unknown key 'correlated'",
     "'synced' groups", None),
]


@pytest.mark.parametrize("name,text,line,col,message,hint,note", CASES, ids=[c[0] for c in CASES])
def test_generated_data_errors(name, text, line, col, message, hint, note):
    error(text, "t.apd", line, col, message, hint, note)


def test_generated_data_forms_build_the_runtime_values():
    e = apdspec.loads(spec("target.train.importance = geometric(1, ratio = 0.9)",
                           "data {", "  probability = zipf(0.2, exponent = 1.5)", "  synced = [[0, 1]]",
                           "  anticorrelated = [[2, 3, 4]]", "}")).experiment
    assert e.data.probability == Profile("zipf", 0.2, exponent=1.5)
    assert e.train.importance == Profile("geometric", 1.0, ratio=0.9)
    assert e.data.anticorrelated == ((2, 3, 4),) and e.data.synced == ((0, 1),)
    e = apdspec.loads(spec("data { probability = [0.1, 5%, 1 / 10, 0.2, 0.3] }")).experiment
    assert e.data.probability == (0.1, 0.05, 0.1, 0.2, 0.3)
    again = apdspec.loads(apdspec.loads(spec("target.train.importance = [1, 0.5, 0.25, 0.1, 0]",
                                             "data { probability = geometric(0.3, ratio = 0.5) }")).text)
    assert again.experiment.data.probability == Profile("geometric", 0.3, ratio=0.5)
    assert again.experiment.train.importance == (1.0, 0.5, 0.25, 0.1, 0.0)


def test_per_feature_values_sweep():
    e = apdspec.loads(spec("sweep { data.probability = [0.05, [0.1, 0.1, 0.05, 0.05, 0.01], zipf(0.1)] }")).experiment
    (axis,) = e.sweep.axes
    assert axis.values == (0.05, (0.1, 0.1, 0.05, 0.05, 0.01), Profile("zipf", 0.1))
    from runtime.pipeline.sweep import points
    from runtime.spec import from_dict, to_json

    for exp in (e, from_dict(json.loads(to_json(e)))):  # the sweep as written, and read back from its JSON
        assert [p.experiment.data.probability for p in points(exp)] == list(axis.values)
    error(spec("sweep { data.probability = [0.05, [0.1, 0.1]] }"), line=6, col=37,
          message="sweep point data.probability=[0.1, 0.1]: data.probability: 2 values for a target with 5 features")


# -- data files


@pytest.fixture
def files(tmp_path):
    g = np.random.default_rng(0)
    x = (g.random((20, 5)) < 0.3) * g.random((20, 5))
    np.savez(tmp_path / "x.npz", inputs=x, labels=x)
    np.savez(tmp_path / "xy.npz", x=x, y=x[:, :3])
    np.savez(tmp_path / "narrow.npz", inputs=x[:, :4])
    np.savez(tmp_path / "strings.npz", inputs=np.array([["a"] * 5]))
    np.savez(tmp_path / "short.npz", inputs=x, labels=x[:10])
    (tmp_path / "not.npz").write_text("not a zip")
    return tmp_path


def test_every_data_file_form_works(files):
    path = str(files / "t.apd")
    want = str(files / "x.npz")
    for line in ('data file("x.npz")', 'data = file("x.npz")', 'data { file = "x.npz" }',
                 'data file("x.npz", inputs = "inputs", labels = "labels")'):
        e = apdspec.loads(spec(line), path).experiment
        assert e.data.file == want, line  # relative to the spec file's directory
    sub = files / "sub"
    sub.mkdir()
    e = apdspec.loads(spec('data file("../x.npz")'), str(sub / "t.apd")).experiment
    assert e.data.file == want
    old = os.getcwd()
    os.chdir(files)
    try:  # on the command line: relative to the current directory
        e = apdspec.loads(spec(), path, overrides=['data = file("x.npz")']).experiment
        assert e.data.file == want
        e = apdspec.loads(spec(), path, overrides=['data.file = "x.npz"']).experiment
        assert e.data.file == want
    finally:
        os.chdir(old)
    e = apdspec.loads(spec('data file("xy.npz", inputs = "x", labels = none)'), path).experiment
    assert e.data.labels is None and e.data.inputs == "x"
    text = apdspec.loads(spec('data file("x.npz")'), path).text  # the resolved spec pins the file
    assert 'file = "' + want + '"' in text and 'sha256 = "' in text
    assert apdspec.loads(text).experiment.data.sha256 is not None


def test_the_data_file_hints_lead_to_working_forms(files):
    """The issue's loop: `data file(...)` said `write data = file(...)`, which said `'data' is a block`."""
    path = str(files / "t.apd")
    apdspec.loads(spec('data file("x.npz")'), path)
    apdspec.loads(spec('data = file("x.npz")'), path)
    d = error(spec('data files("x.npz")'), path, 6, 8, "unknown data 'files'", "did you mean 'file'?")
    d = error(spec('data = "x.npz"'), path, 6, 10, "expected file(...) for 'data'", 'write data file("x.npz")')
    d = error(spec('data file("x.npz") { labels = none }'), path, 6, 3, "takes its settings as arguments, not a body",
              'data file("data.npz", labels = none)')
    d = error(spec('data { path = "x.npz" }'), path, 6, 10, "unknown key 'path' in block 'data'", 'data file("path.npz")')
    assert d is not None


FILE_CASES = [
    ("missing file", 'data file("nope.npz")', 6, 13, "cannot read data file", "np.savez", None),
    ("not an npz", 'data file("not.npz")', 6, 13, "is not a readable .npz file", "", None),
    ("inputs of the wrong width", 'data file("narrow.npz")', 6, 13,
     "data.file: 'inputs' has shape (20, 4); this target takes inputs of shape (N, 5)", "save 'inputs' as an (N, 5)",
     (2, 10)),
    ("no inputs array", 'data file("xy.npz")', 6, 8, "has no array 'inputs' (it holds 'x', 'y')",
     'inputs = "x"', None),
    ("labels of the wrong width", 'data file("xy.npz", inputs = "x", labels = "y")', 6, 13,
     "'y' has shape (20, 3); with 'x' of shape (20, 5) the labels must be (20, 5)", "labels = none", None),
    ("labels of the wrong length", 'data file("short.npz")', 6, 13, "the labels must be (20, 5)", "", None),
    ("a named labels array that is missing", 'data file("x.npz", labels = "y")', 6, 31, "has no array 'y'",
     "labels = none", None),
    ("strings", 'data file("strings.npz")', 6, 8, "has dtype <U1; inputs must be real numbers", "float32", None),
    ("a generated-data key with a file", 'data { file = "x.npz"  probability = 0.1 }', 6, 40,
     "'probability' describes generated features", "remove probability", (6, 17)),
    ("not a sha256", 'data file("x.npz", sha256 = "abc")', 6, 31, "not a sha256: 'abc'", "hexadecimal", None),
    ("another file's sha256", 'data file("x.npz", sha256 = "' + "0" * 64 + '")', 6, 31, "has changed: its sha256 is",
     "restore the recorded file", None),
    ("an empty path", 'data file("")', 6, 13, "the path is empty", "", None),
]


@pytest.mark.parametrize("name,line_text,line,col,message,hint,note", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_data_file_errors(files, name, line_text, line, col, message, hint, note):
    error(spec(line_text), str(files / "t.apd"), line, col, message, hint, note)


# -- the shipped spec


def test_the_shipped_correlated_spec_draws_its_groups_and_runs_tiny():
    from paths import ROOT
    from runtime import run
    from runtime.engine.data import sample_inputs
    from runtime.spec import resolve

    spec = apdspec.load(os.path.join(ROOT, "specs", "tms_5_2_correlated.apd"),
                        ["replicates=1", "target.train.steps=50", "decompose.steps=20", "decompose.restarts=1",
                         "decompose.batch=256"])
    e = resolve(spec.experiment)
    assert e.data.probability == (0.05, 0.05, 0.05, 0.1, 0.1)
    assert e.data.synced == ((0, 1),) and e.data.anticorrelated == ((3, 4),)
    n = 40_000
    on = sample_inputs(e.target, e.data, 1, n, np.random.default_rng(0))[0] != 0
    assert np.array_equal(on[:, 0], on[:, 1]) and not np.any(on[:, 3] & on[:, 4])
    for i, p in ((0, 1 - 0.95 ** 2), (2, 0.05), (3, 0.1), (4, 0.1)):
        assert abs(on[:, i].mean() - p) < 5 * np.sqrt(p * (1 - p) / n), i
    result = run(spec.experiment)
    assert np.isfinite(result.metrics["mmcs"][0]) and np.isfinite(result.metrics["faithfulness"][0])
    from runtime.analysis.core import analysis_for

    table = analysis_for(result).mse_by_sparsity()  # its exactly-n rows drop the groups
    assert list(table) == ["training", "exactly 1", "exactly 2", "exactly 3", "exactly 4"]
    assert all(np.isfinite(v[0]) for v in table["exactly 2"].values())

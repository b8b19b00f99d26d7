"""Composition (use), constants, command-line overrides, sweeps, file targets and provenance."""
import os

import pytest

import apdspec
from apdspec import SpecError
from apdspec.explain import explain

from paths import ROOT  # noqa: E402  (the repository)
TMS = os.path.join(ROOT, "specs", "tms_5_2.apd")

BASE = """let lr0 = 3e-2
experiment base {
  seed = 1
  target tms {
    features = 5
    hidden = 2
    train { steps = 100  batch = 64 }
  }
  decompose {
    components = 5
    topk = batch(0.25)
    optimizer = adam(lr = $lr0, weight_decay = 0.1)
    steps = 50
    batch = 32
  }
  report { expect mmcs >= 0.5 }
}
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_use_merges_and_overrides(tmp_path):
    write(tmp_path, "base.apd", BASE)
    child = write(tmp_path, "sub/child.apd", 'use "../base.apd"\n\ndecompose.topk = batch(0.5)\n'
                  "decompose.optimizer.lr = $lr0 / 3\n"
                  "experiment child {\n  target { hidden = 3 }\n  decompose { steps = 7 }\n"
                  "  report { expect ml2r >= 0.1 }\n}\n")
    spec = apdspec.load(child)
    e = spec.experiment
    assert e.name == "child" and e.seed == 1
    assert (e.target.features, e.target.hidden) == (5, 3)  # partial target block merges into the base
    assert e.train.steps == 100
    assert (e.decompose.topk.value, e.decompose.steps, e.decompose.batch) == (0.5, 7, 32)
    # a dotted assignment merges into the object the base's call built
    assert (e.decompose.optimizer.name, e.decompose.optimizer.lr, e.decompose.optimizer.weight_decay) == ("adam", 0.01, 0.1)
    assert [x.metric for x in e.report.expect] == ["mmcs", "ml2r"]  # expectations accumulate
    assert spec.files == (str(child), str(tmp_path / "base.apd"))


def test_a_call_replaces_the_whole_object(tmp_path):
    write(tmp_path, "base.apd", BASE)
    child = write(tmp_path, "child.apd", 'use "base.apd"\ndecompose.optimizer = adamw(lr = 1e-3)\n')
    opt = apdspec.load(child).experiment.decompose.optimizer
    assert (opt.name, opt.lr, opt.weight_decay) == ("adamw", 1e-3, 0.0)


def test_changing_the_target_kind_starts_from_its_defaults(tmp_path):
    write(tmp_path, "base.apd", BASE)
    child = write(tmp_path, "child.apd", 'use "base.apd"\nexperiment g {\n  target gated { functions = 3 }\n'
                  "  report { expect none\n expect separated_functions >= 3 }\n}\n")
    e = apdspec.load(child).experiment
    assert e.target.kind == "gated" and e.target.functions == 3 and e.target.neurons == 10
    assert e.train is None  # gated targets are hand-coded
    assert [x.metric for x in e.report.expect] == ["separated_functions"]


def test_use_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.apd", 'use "b.apd"\n')
    write(tmp_path, "b.apd", 'use "a.apd"\ndecompose.steps = 3\n')
    with pytest.raises(SpecError) as info:
        apdspec.load(tmp_path / "a.apd")
    (d,) = info.value.diagnostics
    assert "'use' cycle: a.apd -> b.apd -> a.apd" in d.message
    assert (os.path.basename(d.span.file), d.span.line, d.span.column) == ("b.apd", 1, 5)


def test_self_use_is_a_cycle(tmp_path):
    p = write(tmp_path, "self.apd", 'use "self.apd"\n')
    with pytest.raises(SpecError, match="'use' cycle"):
        apdspec.load(p)


def test_errors_in_a_used_file_point_into_that_file(tmp_path):
    write(tmp_path, "base.apd", BASE.replace("steps = 50", "stepz = 50"))
    child = write(tmp_path, "child.apd", 'use "base.apd"\ndecompose.batch = 8\n')
    with pytest.raises(SpecError) as info:
        apdspec.load(child)
    (d,) = info.value.diagnostics
    assert (os.path.basename(d.span.file), d.span.line, d.span.column) == ("base.apd", 13, 5)


def test_a_used_files_constants_cannot_be_redefined(tmp_path):
    write(tmp_path, "base.apd", BASE)
    child = write(tmp_path, "child.apd", 'use "base.apd"\nlet lr0 = 1\n')
    with pytest.raises(SpecError, match="already defined in a used file"):
        apdspec.load(child)


def test_use_paths_are_relative_to_the_using_file(tmp_path, monkeypatch):
    write(tmp_path, "specs/base.apd", BASE)
    child = write(tmp_path, "specs/child.apd", 'use "base.apd"\n')
    monkeypatch.chdir(tmp_path)
    assert apdspec.load("specs/child.apd").experiment.name == "base"
    assert apdspec.load(child).experiment.decompose.steps == 50


def test_override_changes_a_value():
    spec = apdspec.load(TMS, overrides=["decompose.steps=200", "target.train.steps=10",
                                        "decompose.topk=batch(0.25)", "seed=3"])
    e = spec.experiment
    assert (e.decompose.steps, e.train.steps, e.decompose.topk.value, e.seed) == (200, 10, 0.25, 3)
    assert "steps = 200" in spec.text
    where = spec.where("decompose.steps")
    assert (where.file, where.line, where.column) == ("<override 1>", 1, 17)


def test_bad_override_path_has_did_you_mean_and_location():
    with pytest.raises(SpecError) as info:
        apdspec.load(TMS, overrides=["decompse.steps=200"])
    (d,) = info.value.diagnostics
    assert (d.span.file, d.span.line, d.span.column) == ("<override 1>", 1, 1)
    assert d.message == "unknown key 'decompse' in block 'experiment'"
    assert d.hint == "did you mean 'decompose'?"
    assert str(info.value).startswith("<override 1>:1:1: error: unknown key 'decompse'")


@pytest.mark.parametrize("override,col,message", [
    ("decompose.stepz=3", 11, "unknown key 'stepz' in block 'decompose'"),
    ("decompose.steps=2.5", 17, "expected an integer for 'steps'"),
    ("decompose.steps", 16, "unexpected end of override"),
    ("decompose.steps=200\nseed=1", 1, "an override is one line"),
    ("=3", 1, "expected a name, found '='"),
])
def test_override_errors(override, col, message):
    with pytest.raises(SpecError) as info:
        apdspec.load(TMS, overrides=[override])
    (d,) = info.value.diagnostics
    assert (d.span.file, d.span.column) == ("<override 1>", col)
    assert message in d.message


def test_override_with_a_sweep_function_adds_an_axis():
    e = apdspec.load(TMS, overrides=["decompose.optimizer.lr=grid(1e-3, 3e-3)", "seed=seeds(3)"]).experiment
    assert [(a.path, a.values, a.group) for a in e.sweep.axes] == [
        ("decompose.optimizer.lr", (1e-3, 3e-3), None), ("seed", (0, 1, 2), None)]


def test_sweep_block():
    text = BASE.replace("  report {", """  sweep {
    seed = seeds(3)
    decompose.loss.simplicity = grid(0.5, 1)
    target.train.steps = range(100, 400, 100)
    decompose.optimizer.lr = logspace(1e-4, 1e-2, 3)
    zip {
      decompose.steps = [100, 200]
      decompose.batch = [64, 128]
    }
    zip { decompose.topk.value = [0.2, 0.3]  data.probability = [1%, 2%] }
  }
  report {""")
    spec = apdspec.loads(text)
    axes = [(a.path, a.values, a.group) for a in spec.experiment.sweep.axes]
    assert axes == [
        ("seed", (0, 1, 2), None),
        ("decompose.loss.simplicity", (0.5, 1.0), None),
        ("train.steps", (100, 200, 300), None),
        ("decompose.optimizer.lr", (1e-4, 1e-3, 1e-2), None),
        ("decompose.steps", (100, 200), 0),
        ("decompose.batch", (64, 128), 0),
        ("decompose.topk.value", (0.2, 0.3), 1),
        ("data.probability", (0.01, 0.02), 1),
    ]
    assert isinstance(axes[1][1][1], float) and isinstance(axes[2][1][0], int)
    assert apdspec.loads(spec.text).experiment == spec.experiment  # sweeps round-trip through to_apd


def test_file_target_path_is_relative_to_the_spec(tmp_path):
    import numpy as np

    from runtime.store.files import save_target
    from runtime.engine.models import init_target
    from runtime import TmsTarget

    arch = TmsTarget(features=4, hidden=2)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    save_target(tmp_path / "runs" / "x" / "target.npz", arch, init_target(arch, 1, np.random.default_rng(0)))
    spec_path = write(tmp_path, "specs/f.apd", 'experiment f {\n  target file("../runs/x/target.npz")\n'
                      "  decompose { topk = batch(0.5) }\n}\n")
    spec = apdspec.load(spec_path)
    e = spec.experiment
    assert e.target.path == str(tmp_path / "runs" / "x" / "target.npz")
    assert e.decompose.rank == 3 and e.train is None  # resolved from the saved architecture
    assert apdspec.loads(spec.text).experiment == e


def test_explain_reports_where_each_value_was_set(tmp_path):
    write(tmp_path, "base.apd", BASE)
    child = write(tmp_path, "child.apd", 'use "base.apd"\ndecompose.steps = 9\n')
    lines = explain(apdspec.load(child, ["decompose.batch=16"]), "decompose")
    by_key = {line.split(" = ")[0]: line for line in lines}
    assert by_key["decompose.steps"].endswith(f"({child}:2:19)")
    assert by_key["decompose.batch"] == "decompose.batch = 16  (<override 1>:1:17)"
    assert by_key["decompose.components"].endswith("base.apd:10:18)")
    assert by_key["decompose.log_every"] == "decompose.log_every = 100  (default)"
    assert by_key["decompose.rank"] == "decompose.rank = 3  (default, resolved for this target)"
    assert by_key["decompose.optimizer.weight_decay"].endswith("base.apd:12:48)")
    assert by_key["decompose.optimizer.beta1"].endswith("base.apd:12:17)")  # set by the adam(...) call
    with pytest.raises(SpecError, match="did you mean 'decompose.steps'"):
        explain(apdspec.load(child), "decompose.stepz")


def test_loads_without_a_name_uses_the_file_stem(tmp_path):
    p = write(tmp_path, "my_exp.apd", "target tms { features = 5 }\n")
    assert apdspec.load(p).experiment.name == "my_exp"
    assert apdspec.loads("target tms { features = 5 }").experiment.name == "experiment"


def test_sweep_points_of_a_file_target_are_checked_against_its_architecture(tmp_path):
    import numpy as np

    from runtime.store.files import save_target
    from runtime.engine.models import init_target
    from runtime import TmsTarget

    arch = TmsTarget(features=4, hidden=2)
    save_target(tmp_path / "target.npz", arch, init_target(arch, 1, np.random.default_rng(0)))
    ok = write(tmp_path, "ok.apd", 'experiment f {\n  target file("target.npz")\n  decompose { topk = batch(0.5) }\n'
               "  sweep { decompose.steps = grid(10, 20) }\n}\n")
    assert len(apdspec.load(ok).experiment.sweep.axes) == 1
    bad = write(tmp_path, "bad.apd", 'experiment f {\n  target file("target.npz")\n  decompose { topk = batch(0.5) }\n'
                "  sweep { decompose.rank = grid(1, 0) }\n}\n")
    with pytest.raises(apdspec.SpecError) as info:
        apdspec.load(bad)
    d = info.value.diagnostics[0]
    assert "sweep point decompose.rank=0" in d.message and d.span.line == 4

"""Importing targets trained elsewhere (runtime/store/importer.py, `apdspec import-target`), target
files with a replicate axis, and `-s 'target = file(...)'`.

Round trips: an apdspec target is exported in another implementation's naming and layout (the
original APD code: instance axis, x @ W; or PyTorch nn.Linear: (out, in), no instance axis),
imported, and must give the same forward pass as the apdspec target and as an independent NumPy
forward pass written in the source's own conventions."""
import os

import numpy as np
import pytest

from apdspec.cli import main
from runtime.engine import models
from runtime.targets.gated.model import build_gated
from runtime.pipeline.runner import build_target
from runtime.spec import Experiment, FileTarget, check, validate, resolve
from runtime import GatedTarget, ResidMlpTarget, TmsTarget
from runtime.spec.target_file import entry_shapes, read_shapes, stored_replicates, target_replicates
from runtime.store.files import load_target, save_target
from runtime.store.importer import TargetImportError, import_arrays, import_file

from paths import ROOT  # noqa: E402  (the repository)
QUICK = os.path.join(ROOT, "tests", "specs", "quick.apd")  # a smoke run: its problems do not fail it
relu = lambda z: np.maximum(z, 0.0)  # noqa: E731


def _x(I, B, n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((I, B, n)) * (rng.random((I, B, n)) < 0.5)


def _same_forward(arch, params, imported_path, x):
    """The imported file, loaded as a run loads it, computes exactly what `params` compute."""
    exp = check(Experiment(target=FileTarget(str(imported_path)), replicates=x.shape[0]))
    arch2, params2, _, _ = build_target(exp)
    assert arch2 == arch
    y = models.target_forward(arch, params, x).y
    y2 = models.target_forward(arch2, params2, x).y
    np.testing.assert_array_equal(y2, y)
    return arch2, params2


# -- the file format: shapes and the replicate axis ----------------------------------------------


@pytest.mark.parametrize("arch", [TmsTarget(5, 2, hidden_layers=2), TmsTarget(4, 3, bias=False),
                                  ResidMlpTarget(features=7, d_embed=9, d_mlp=4, layers=2, in_bias=True, out_bias=True)])
def test_entry_shapes_match_the_models(arch):
    params = models.init_target(arch, 3, np.random.default_rng(0))
    req, opt = entry_shapes(arch)
    assert {k: v.shape[1:] for k, v in params.items()} == {**req, **opt}


def test_entry_shapes_match_the_gated_network():
    arch = GatedTarget(functions=3, neurons=4, layers=2)
    params, extras = build_gated(arch, 2, np.random.default_rng(0), np.random.default_rng(1))
    req, opt = entry_shapes(arch)
    assert {k: v.shape[1:] for k, v in params.items()} == req
    assert {"extra." + k: v.shape[1:] for k, v in extras.items()} == opt


def test_stored_replicates_reads_the_leading_axis_from_headers_only(tmp_path):
    arch = TmsTarget(5, 2)
    params = models.init_target(arch, 3, np.random.default_rng(0))
    save_target(tmp_path / "r3.npz", arch, params)
    save_target(tmp_path / "r0.npz", arch, {k: v[0] for k, v in params.items()})
    assert read_shapes(tmp_path / "r3.npz") == {"W": (3, 5, 2), "b": (3, 5)}
    assert target_replicates(tmp_path / "r3.npz") == 3
    assert target_replicates(tmp_path / "r0.npz") is None


@pytest.mark.parametrize("shapes, message", [
    ({"W": (5, 2)}, "lacks 'b'"),
    ({"W": (5, 2), "b": (5,), "V": (2, 2)}, "holds 'V'"),
    ({"W": (5, 3), "b": (5,)}, "'W' has shape (5, 3), expected (5, 2) or (R, 5, 2)"),
    ({"W": (3, 5, 2), "b": (5,)}, "disagree on the replicate axis"),
    ({"W": (3, 5, 2), "b": (4, 5)}, "disagree on the replicate axis"),
])
def test_stored_replicates_names_what_is_wrong(shapes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        stored_replicates(TmsTarget(5, 2), shapes)


def test_a_replicated_file_gives_each_replicate_its_own_target(tmp_path):
    arch = TmsTarget(5, 2)
    params = models.init_target(arch, 3, np.random.default_rng(0))
    save_target(tmp_path / "t.npz", arch, params)
    exp = check(Experiment(target=FileTarget(str(tmp_path / "t.npz")), replicates=3))
    _, loaded, _, _ = build_target(exp)
    np.testing.assert_array_equal(loaded["W"], params["W"])
    issues = validate(resolve(Experiment(target=FileTarget(str(tmp_path / "t.npz")), replicates=2)))
    assert [(i.path, i.also) for i in issues] == [("replicates", ("target.path",))]
    assert "holds 3 replicates" in issues[0].message and "replicates = 3" in issues[0].hint


def test_a_file_with_wrong_shapes_is_refused_at_check_time(tmp_path):
    arch = TmsTarget(5, 2)
    save_target(tmp_path / "t.npz", arch, {"W": np.zeros((5, 3)), "b": np.zeros(5)})  # meta says 5 x 2
    issues = validate(resolve(Experiment(target=FileTarget(str(tmp_path / "t.npz")))))
    assert [i.path for i in issues] == ["target.path"] and "'W' has shape (5, 3)" in issues[0].message


# -- round trips: other implementations' naming and layout ------------------------------------------


def test_tms_from_the_original_code_with_instances(tmp_path):
    arch = TmsTarget(5, 2)
    params = models.init_target(arch, 12, np.random.default_rng(0))
    W, b = params["W"], params["b"]  # the original: linear1.weight (I, F, H), linear2 tied, b_final (I, F)
    np.savez(tmp_path / "sd.npz", **{"linear1.weight": W, "linear2.weight": W, "b_final": b})
    imp = import_file(tmp_path / "sd.npz", "tms", tmp_path / "T.npz")
    assert imp.replicates == 12 and imp.layout == "rows"
    x = _x(12, 64, 5)
    _same_forward(arch, params, tmp_path / "T.npz", x)
    original = relu(np.einsum("ibf,ifh,igh->ibg", x, W, W) + b[:, None, :])  # y = ReLU(x W W^T + b)
    y = models.target_forward(*_same_forward(arch, params, tmp_path / "T.npz", x), x).y
    np.testing.assert_allclose(y, original, rtol=1e-5, atol=1e-6)
    assert target_replicates(tmp_path / "T.npz") == 12


def test_tms_older_naming_and_hidden_layers(tmp_path):
    arch = TmsTarget(6, 3, hidden_layers=2)
    params = models.init_target(arch, 2, np.random.default_rng(0))
    np.savez(tmp_path / "sd.npz", W=params["W"], b_final=params["b"],
             **{f"hidden_layers.{k}.weight": params[f"hidden.{k}"] for k in range(2)})
    imp = import_file(tmp_path / "sd.npz", "tms", tmp_path / "T.npz")
    assert imp.arch == arch
    _same_forward(arch, params, tmp_path / "T.npz", _x(2, 16, 6))


def test_tms_nn_linear_layout_without_instances(tmp_path):
    arch = TmsTarget(5, 2)
    params = models.init_target(arch, 1, np.random.default_rng(3))
    W, b = params["W"][0], params["b"][0]
    np.savez(tmp_path / "sd.npz", **{"linear1.weight": W.T, "b_final": b})  # nn.Linear(5, 2).weight: (2, 5)
    imp = import_file(tmp_path / "sd.npz", "tms", tmp_path / "T.npz")
    assert imp.layout == "torch" and imp.replicates is None
    x = _x(1, 32, 5)
    _same_forward(arch, params, tmp_path / "T.npz", x)
    Wt = W.T  # the source's own forward: h = x W^T (nn.Linear), y = ReLU(h Wt + b)
    y = models.target_forward(*_same_forward(arch, params, tmp_path / "T.npz", x), x).y
    np.testing.assert_allclose(y, relu(x @ Wt.T @ Wt + b), rtol=1e-5, atol=1e-6)


def _resid_reference(x, W_E, W_U, layers, act=relu):
    """The original residual MLP (notes §1.2), per instance, matrices (d_in, d_out)."""
    r = x @ W_E
    for W_in, b_in, W_out, b_out in layers:
        r = r + act(r @ W_in + b_in) @ W_out + b_out
    return r @ W_U


def test_resid_mlp_from_the_original_code_with_instances(tmp_path):
    arch = ResidMlpTarget(features=6, d_embed=8, d_mlp=3, layers=2, in_bias=True, out_bias=True)
    params = models.random_params(arch, 3, np.random.default_rng(0), dtype=np.float32)
    params["W_U"] = np.swapaxes(params["W_E"], 1, 2).copy()  # the original ties W_U = W_E^T
    sd = {"W_E": params["W_E"]}  # no W_U: the importer ties it
    for l in range(2):
        sd[f"layers.{l}.mlp_in.weight"] = params[f"layers.{l}.W_in"]
        sd[f"layers.{l}.bias1"] = params[f"layers.{l}.b_in"]
        sd[f"layers.{l}.mlp_out.weight"] = params[f"layers.{l}.W_out"]
        sd[f"layers.{l}.bias2"] = params[f"layers.{l}.b_out"]
    np.savez(tmp_path / "sd.npz", **sd)
    imp = import_file(tmp_path / "sd.npz", "resid_mlp", tmp_path / "T.npz")
    assert imp.arch == arch and imp.replicates == 3 and imp.layout == "rows"
    x = _x(3, 16, 6) * 2 - 1
    _, p2 = _same_forward(arch, params, tmp_path / "T.npz", x)
    for i in range(3):
        layers = [(params[f"layers.{l}.W_in"][i], params[f"layers.{l}.b_in"][i], params[f"layers.{l}.W_out"][i],
                   params[f"layers.{l}.b_out"][i]) for l in range(2)]
        ref = _resid_reference(x[i], params["W_E"][i], params["W_E"][i].T, layers)
        np.testing.assert_allclose(models.target_forward(arch, p2, x).y[i], ref, rtol=1e-4, atol=1e-5)


def test_resid_mlp_nn_linear_layout_gelu(tmp_path):
    arch = ResidMlpTarget(features=5, d_embed=7, d_mlp=4, layers=1, in_bias=True, activation="gelu")
    params = models.random_params(arch, 1, np.random.default_rng(1), dtype=np.float32)
    sd = {"W_E": params["W_E"][0].T, "W_U": params["W_U"][0].T,
          "layers.0.mlp_in.weight": params["layers.0.W_in"][0].T, "layers.0.mlp_in.bias": params["layers.0.b_in"][0],
          "layers.0.mlp_out.weight": params["layers.0.W_out"][0].T}
    np.savez(tmp_path / "sd.npz", **sd)
    imp = import_file(tmp_path / "sd.npz", "resid_mlp", tmp_path / "T.npz", activation="gelu")
    assert imp.layout == "torch" and imp.arch == arch
    _same_forward(arch, params, tmp_path / "T.npz", _x(1, 16, 5))


@pytest.mark.parametrize("arch", [GatedTarget(), GatedTarget(functions=3, neurons=5, layers=3, input_range=(1.0, 3.0)),
                                  GatedTarget(simple_bias=True, input_range=(-2.0, 2.0))])
def test_gated_network_from_the_original_piecewise_code(tmp_path, arch):
    params, _ = build_gated(arch, 1, np.random.default_rng(0), np.random.default_rng(1))
    sd = {"W_E.weight": params["W_E"][0].T, "W_U.weight": params["W_U"][0].T}  # nn.Linear: (out, in)
    for l in range(arch.layers):
        sd[f"mlps.{l}.input_layer.weight"] = params[f"layers.{l}.W_in"][0].T
        sd[f"mlps.{l}.input_layer.bias"] = params[f"layers.{l}.b_in"][0]
        sd[f"mlps.{l}.output_layer.weight"] = params[f"layers.{l}.W_out"][0].T
        sd[f"mlps.{l}.output_layer.bias"] = np.zeros(arch.functions + 2, dtype=np.float32)
    np.savez(tmp_path / "sd.npz", **sd)
    imp = import_file(tmp_path / "sd.npz", "gated", tmp_path / "T.npz")
    assert imp.arch == arch  # functions, neurons, layers, input range and bias form read off the weights
    assert imp.layout == "torch"
    x = _x(1, 64, arch.functions + 1)
    x[..., 0] = np.linspace(*arch.input_range, 64)
    _same_forward(arch, params, tmp_path / "T.npz", x)
    assert resolve(Experiment(target=FileTarget(str(tmp_path / "T.npz")))).data.values == arch.input_range


# -- mistakes: clear messages ----------------------------------------------------------------------


@pytest.mark.parametrize("kind, arrays, kwargs, message", [
    ("tms", {"linear1.weight": np.zeros((5, 2)), "b_final": np.zeros(5), "step": np.zeros(())}, {},
     "no tms parameter is named 'step'; known names: W, linear1.weight"),
    ("tms", {"W": np.arange(9.0).reshape(3, 3)}, {}, "fit both layouts"),
    ("tms", {"W": np.zeros((5, 2)), "b": np.zeros(4)}, {}, "fit neither layout"),
    ("tms", {"W": np.zeros((5, 2)), "b": np.zeros(4)}, {"layout": "rows"}, "'b' has shape (4)"),
    ("tms", {"W": np.zeros((5, 2)), "linear1.weight": np.zeros((5, 2))}, {}, "both name the tms parameter 'W'"),
    ("tms", {"linear1.weight": np.ones((5, 2)), "linear2.weight": np.zeros((5, 2)), "b_final": np.zeros(5)}, {},
     "'linear2.weight' differs from 'linear1.weight'"),
    ("tms", {"W": np.zeros((5, 2), dtype=np.int64), "b": np.zeros(5)}, {}, "holds int64 values"),
    ("tms", {"W": np.zeros((12, 5, 2)), "b_final": np.zeros(5)}, {}, "disagree on the replicate axis"),
    ("tms", {"W": np.zeros((5, 2)), "b": np.zeros(5), "hidden.1": np.zeros((2, 2))}, {}, "without gaps"),
    ("resid_mlp", {"W_E": np.zeros((4, 6))}, {}, "needs layers.0.W_in"),
    ("resid_mlp", {"W_E": np.zeros((4, 6)), "layers.0.mlp_in.weight": np.zeros((6, 3)),
                   "layers.0.mlp_out.weight": np.zeros((3, 5))}, {"layout": "rows"}, "'layers.0.W_out' has shape (3, 5)"),
    ("gated", {"W_E": np.zeros((5, 9))}, {}, "n + 1 inputs"),
    ("gated", {"__meta__": np.array("{}")}, {}, "already an apdspec target file"),
])
def test_import_mistakes_are_named(kind, arrays, kwargs, message):
    with pytest.raises(TargetImportError) as e:
        import_arrays(arrays, kind, **kwargs)
    assert message in str(e.value)


def test_gated_output_bias_must_be_zero():
    arch = GatedTarget()
    params, _ = build_gated(arch, 1, np.random.default_rng(0), np.random.default_rng(1))
    sd = {k: v[0] for k, v in params.items()}
    sd["layers.0.b_out"] = np.ones(6)
    with pytest.raises(TargetImportError, match="'layers.0.b_out' is not zero"):
        import_arrays(sd, "gated")


def test_ignore_skips_entries_and_layout_can_be_forced():
    arrays = {"W": np.arange(9.0).reshape(3, 3), "b": np.zeros(3), "buffer": np.zeros(2)}
    imp = import_arrays(arrays, "tms", layout="torch", ignore=("buf*",))
    np.testing.assert_array_equal(imp.params["W"], arrays["W"].T)
    assert ("buffer", "", "ignored") in imp.renames


# -- the command line --------------------------------------------------------------------------------


def _tms_state_dict(path, instances=3):
    params = models.init_target(TmsTarget(5, 2), instances, np.random.default_rng(0))
    np.savez(path, **{"linear1.weight": params["W"], "linear2.weight": params["W"], "b_final": params["b"]})


def test_cli_import_then_check_and_run_with_the_target_override(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tms_state_dict("sd.npz")
    assert main(["import-target", "sd.npz", "--kind", "tms", "--out", "T.npz"]) == 0
    out = capsys.readouterr().out
    assert "W  <- linear1.weight 3x5x2" in out and "3 replicates" in out
    assert "apdspec run specs/tms_5_2.apd -s 'target = file(\"T.npz\")' -s replicates=3" in out
    assert main(["check", QUICK, "-s", 'target = file("T.npz")', "-s", "replicates=3", "--no-estimate"]) == 0
    assert "file T.npz" in capsys.readouterr().out
    # the replicate count is checked, at the position that set it
    assert main(["check", QUICK, "-s", 'target = file("T.npz")', "--no-estimate"]) == 2
    err = capsys.readouterr().err
    assert "<override 1>:1:15" in err or "quickstart.apd" in err
    assert "the target file holds 3 replicates" in err and "-s replicates=3" in err
    assert main(["run", QUICK, "-s", 'target = file("T.npz")', "-s", "replicates=3", "-s", "decompose.steps=20",
                 "--out", "run", "--quiet"]) in (0, 1)
    _, params, _, _ = load_target("run/replicates/2/target.npz")
    np.testing.assert_array_equal(params["W"], np.load("sd.npz")["linear1.weight"][2])


def test_cli_replicate_mismatch_is_located_at_the_replicates_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tms_state_dict("sd.npz", instances=12)
    assert main(["import-target", "sd.npz", "--kind", "tms", "-o", "T.npz"]) == 0
    spec = tmp_path / "s.apd"
    spec.write_text('experiment s {\n  replicates = 5\n  target file("T.npz")\n}\n')
    assert main(["check", str(spec), "--no-estimate"]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:2:16: error: replicates: the target file holds 12 replicates" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["missing.npz", "--kind", "tms"], "no such file"),
    (["bad.npz", "--kind", "tms"], "not a readable .npz"),
    (["sd.npz", "--kind", "resid_mlp"], "no resid_mlp parameter is named 'linear1.weight'"),
    (["sd.npz", "--kind", "gated", "--input-range", "0"], "--input-range takes LO,HI"),
])
def test_cli_import_errors_exit_2_without_a_traceback(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    _tms_state_dict("sd.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    assert main(["import-target", *args, "--out", "T.npz"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "T.npz").exists()


def test_target_assignment_is_only_for_files_on_the_command_line(tmp_path, capsys):
    assert main(["check", QUICK, "-s", "target = tms", "--no-estimate"]) == 2
    assert "only a target file can replace the target" in capsys.readouterr().err
    spec = tmp_path / "s.apd"
    spec.write_text('experiment s {\n  target = file("T.npz")\n}\n')
    assert main(["check", str(spec), "--no-estimate"]) == 2
    assert "without '='" in capsys.readouterr().err


def test_docs_list_every_accepted_name():
    from runtime.store.importer import importable, rules

    text = open(os.path.join(ROOT, "docs", "outputs.md")).read()
    section = text[text.index("## Importing a target"):]
    for kind in importable():
        r = rules(kind)
        for dst, aliases in r.names.items():
            for name in (dst, *aliases, *r.tied, *r.zero):
                assert f"`{name.replace('{l}', 'N')}`" in section, (kind, name)


def test_the_command_line_loads_numpy_only_after_threads_are_set():
    """--threads works by setting the BLAS variables before NumPy loads: building the parser
    (import-target's help included) must not import it."""
    import subprocess
    import sys

    code = "import sys, apdspec.cli as c; c.build_parser(); assert 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_an_unknown_kind_is_a_usage_error_naming_the_importable_ones(tmp_path, capsys):
    np.savez(tmp_path / "sd.npz", W=np.zeros((5, 2)))
    assert main(["import-target", str(tmp_path / "sd.npz"), "--kind", "nope", "--out", str(tmp_path / "t.npz")]) == 2
    err = capsys.readouterr().err
    assert "'nope' is not a kind that imports" in err and "tms" in err and "Traceback" not in err

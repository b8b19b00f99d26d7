"""`apdspec import-target --kind mlp`: a state dict of nn.Linear layers mapped onto a network
(torch's (out, in) weights, biases, a replicate axis, the activations from the command line or a
spec), its shape checks, and the refusal to import such a state dict into a kind whose function
differs."""
import os
import subprocess
import sys

import numpy as np
import pytest

from runtime import MlpTarget
from runtime.engine import models
from runtime.spec.layers import Activation, Linear
from runtime.store.importer import TargetImportError, import_arrays, load_state_dict

from paths import ROOT

RNG = np.random.default_rng(0)
SEQ = {"0.weight": RNG.normal(size=(6, 10)), "0.bias": RNG.normal(size=6),
       "2.weight": RNG.normal(size=(10, 6)), "2.bias": RNG.normal(size=10)}


def _torch_forward(sd: dict, x: np.ndarray) -> np.ndarray:
    """nn.Sequential(Linear, ReLU, Linear) as torch computes it: x W^T + b."""
    h = np.maximum(x @ sd["0.weight"].T + sd["0.bias"], 0)
    return h @ sd["2.weight"].T + sd["2.bias"]


def test_an_nn_sequential_state_dict_becomes_the_same_function():
    imp = import_arrays(SEQ, "mlp", activation="relu")
    assert imp.layout == "torch" and imp.replicates is None
    assert imp.arch == MlpTarget(features=10, network=(Linear("0", 6), Activation("relu"), Linear("2", 10)))
    np.testing.assert_array_equal(imp.params["0"], SEQ["0.weight"].T)
    np.testing.assert_array_equal(imp.params["2.bias"], SEQ["2.bias"])
    x = RNG.normal(size=(5, 10))
    y = models.target_forward(imp.arch, {k: v[None] for k, v in imp.params.items()}, x[None]).y[0]
    np.testing.assert_allclose(y, _torch_forward(SEQ, x), rtol=1e-12)


def test_named_layers_activations_per_gap_and_a_replicate_axis():
    R = 3
    sd = {"fc1.weight": RNG.normal(size=(R, 4, 5)), "fc1.bias": RNG.normal(size=(R, 4)),
          "fc2.weight": RNG.normal(size=(R, 4, 4)), "fc3.weight": RNG.normal(size=(R, 5, 4)),
          "fc3.bias": RNG.normal(size=(R, 5))}
    imp = import_arrays(sd, "mlp", activation="gelu,identity", output_activation="relu")
    assert imp.replicates == R and imp.layout == "torch"
    assert imp.arch.network == (Linear("fc1", 4), Activation("gelu"), Linear("fc2", 4, bias=False),
                                Activation("identity"), Linear("fc3", 5), Activation("relu"))
    np.testing.assert_array_equal(imp.params["fc1.bias"], sd["fc1.bias"])  # (R, out): not a matrix
    np.testing.assert_array_equal(imp.params["fc2"], np.swapaxes(sd["fc2.weight"], 1, 2))


@pytest.mark.parametrize("sd, kwargs, message", [
    (SEQ, {}, "does not say which activations sit between its layers: give --activation relu"),
    (SEQ, {"activation": "relu,relu"}, "give one of relu, gelu, identity, or a comma list of 1"),
    (SEQ, {"activation": "tanh"}, "--activation 'tanh'"),
    ({"0.weight": SEQ["0.weight"], "2.weight": RNG.normal(size=(10, 7)), "2.bias": RNG.normal(size=10)},
     {"activation": "relu"}, "'2.weight' reads 7 inputs but '0.weight' writes 6 outputs"),
    ({"0.weight": SEQ["0.weight"], "0.bias": RNG.normal(size=5)}, {}, "'0.bias' has shape (5,), expected (6,)"),
    ({"fc1.weight": RNG.normal(size=(6, 10)), "fc2.weight": RNG.normal(size=(10, 6))}, {"activation": "relu"},
     "fit both layouts (their shapes chain either way)"),
    ({"0.bias": SEQ["0.bias"]}, {}, "'0.bias' has no weight '0.weight'"),
    ({"0.weight": SEQ["0.weight"], "running_mean": np.zeros(3)}, {}, "no mlp parameter is named 'running_mean'"),
])
def test_shapes_and_activations_are_checked(sd, kwargs, message):
    with pytest.raises(TargetImportError) as info:
        import_arrays(sd, "mlp", **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize("kind, function", [
    ("resid_mlp", "y = (r + MLP(r)) W_U with r = x W_E: a residual stream that adds the MLP's output to its input"),
    ("tms", "y = ReLU(x W W^T + b)"),
])
def test_a_kind_whose_function_differs_refuses_the_state_dict(kind, function):
    with pytest.raises(TargetImportError) as info:
        import_arrays(SEQ, kind)
    text = str(info.value)
    assert "'0.weight', '0.bias', '2.weight', '2.bias' are the layers of a network of nn.Linear layers" in text
    assert function in text and "import it as what it is, --kind mlp --activation relu" in text


def test_a_torch_file_without_torch_says_how_to_save_an_npz(tmp_path):
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch is installed here: the .pt path is exercised by docs/examples (README)")
    p = tmp_path / "model.pt"
    p.write_bytes(b"not read")
    with pytest.raises(TargetImportError, match="needs torch, which is not installed here; save the state dict as "
                                                 "\\.npz instead"):
        load_state_dict(str(p))


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "apdspec", "import-target", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": ROOT})


def test_the_command_line_with_activations_or_a_spec(tmp_path):
    np.savez(tmp_path / "sd.npz", **SEQ)
    ok = _cli("sd.npz", "--kind", "mlp", "--activation", "relu", "-o", "T.npz", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "mlp: 10 inputs -> 0 10x6 -> relu -> 2 6x10 -> 10 outputs" in ok.stdout
    assert "decompose it: apdspec run specs/mlp.apd -s 'target = file(\"T.npz\")'" in ok.stdout
    (tmp_path / "net.apd").write_text('target mlp {\n  features = 10\n  network = [linear("0", 6), gelu, '
                                      'linear("2")]\n  decomposed = ["0"]\n}\n')
    spec = _cli("sd.npz", "--kind", "mlp", "--spec", "net.apd", "-o", "T2.npz", cwd=tmp_path)
    assert spec.returncode == 0, spec.stderr
    from runtime.store.files import load_target

    arch, params, _, meta = load_target(tmp_path / "T2.npz")
    assert arch.network[1] == Activation("gelu") and arch.decomposed == ("0",)
    assert "apdspec run net.apd -s 'target = file(\"T2.npz\")'" in spec.stdout
    (tmp_path / "bad.apd").write_text('target mlp {\n  features = 10\n  network = [linear("0", 7), gelu, '
                                      'linear("2")]\n}\n')
    bad = _cli("sd.npz", "--kind", "mlp", "--spec", "bad.apd", "-o", "T3.npz", cwd=tmp_path)
    assert bad.returncode == 2 and "'0' has shape (10, 6), expected (10, 7)" in bad.stderr
    assert not (tmp_path / "T3.npz").exists()
    both = _cli("sd.npz", "--kind", "mlp", "--spec", "net.apd", "--activation", "relu", "-o", "T4.npz", cwd=tmp_path)
    assert both.returncode == 2 and "drop --activation" in both.stderr
    refused = _cli("sd.npz", "--kind", "resid_mlp", "-o", "T5.npz", cwd=tmp_path)
    assert refused.returncode == 2 and "--kind mlp" in refused.stderr and "Traceback" not in refused.stderr

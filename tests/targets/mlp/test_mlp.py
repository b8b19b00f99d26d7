"""The layer vocabulary (runtime/spec/layers.py) and the network kind (runtime/targets/mlp): the
language's syntax and its errors at file:line:column, the forward pass against hand-computed
values and against the kinds it can express, gradients against finite differences, init and
training of frozen and tied layers, the presets it is recognised as, and the ground-truth metrics
on hand-made decompositions."""
import dataclasses

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad

import apdspec
import runtime
from runtime import DeepLinearTarget, MlpTarget, ResidMlpTarget, TmsTarget
from runtime.engine import models
from runtime.engine.seeding import stream
from runtime.methods.apd import components as apd
from runtime.spec import Experiment, SpecValidationError, check, kind_spec, resolve
from runtime.spec.layers import Activation, Linear, Residual, walk
from runtime.targets.deep_linear import spec as deep_spec
from runtime.targets.mlp.spec import GroundTruth
from runtime.targets.resid_mlp import spec as resid_spec
from runtime.targets.tms import spec as tms_spec

TMS_ID = """
target mlp {
  features = 5
  network = [
    linear(W, 2, bias = false),  # h = x W
    linear(hidden, 2, bias = false, init = identity, frozen = true),
    linear(W_T, tied = W),  # z = h W^T + b
    relu,
  ]
  truth { input_features = [W]  dense = [hidden] }
}
"""

# a network no kind is: biases everywhere, a residual block, gelu, a tied read-out, a frozen layer
NET = MlpTarget(features=3, network=(
    Linear("E", 4), Activation("gelu"),
    Residual((Linear("up", 5, bias=False), Activation("relu"), Linear("down"))),
    Linear("mid", 4, bias=False, init="identity", frozen=True),
    Linear("out", tied="E"), Activation("relu"),
), decomposed=("up", "down", "E", "out"))


def _errors(text: str) -> list:
    with pytest.raises(apdspec.SpecError) as info:
        apdspec.loads(text, filename="net.apd")
    return info.value.diagnostics


# ------------------------------------------------------------------------------------------
# The language


def test_a_network_parses_into_its_layers_and_round_trips():
    spec = apdspec.loads(TMS_ID.replace("features = 5", "features = 5\n  decomposed = [W, \"h*\", W_T]"))
    t = spec.state.values["target.network"].value
    assert t == (Linear("W", 2, bias=False), Linear("hidden", 2, bias=False, init="identity", frozen=True),
                 Linear("W_T", tied="W"), Activation("relu"))
    net = apdspec.loads("""target mlp { features = 3
      network = [linear(E, 4), gelu, residual([linear(up, 5, bias = false), relu, linear(down)]),
                 linear(mid, 4, bias = false, init = identity, frozen = true), linear(out, tied = E), relu]
      decomposed = [up, down, E, out] }""").experiment
    assert net.target == NET
    assert apdspec.loads(apdspec.to_apd(net)).experiment == net
    assert runtime.spec.target_from_dict(runtime.spec.to_dict(NET)) == NET


def test_fmt_writes_one_layer_per_line_and_keeps_their_comments():
    from apdspec.fmt import format_text

    out = format_text(TMS_ID, "net.apd")
    assert "    linear(W, 2, bias = false),  # h = x W\n" in out
    assert "    linear(W_T, tied = W),  # z = h W^T + b\n    relu,\n  ]" in out
    assert format_text(out, "net.apd") == out


@pytest.mark.parametrize("text, line, col, message, hint", [
    ("network = [linaer(fc1, 4), relu, linear(fc2)]", 3, 14, "unknown layer 'linaer'", "did you mean 'linear'?"),
    ("network = [linear(fc1, 4, bais = false), relu, linear(fc2)]", 3, 29, "unknown argument 'bais' to linear()",
     "did you mean 'bias'?"),
    ("network = [linear(fc1, 4, bias = flase), linear(fc2)]", 3, 36, "expected true or false for 'bias', got 'flase'",
     "did you mean 'false'?"),
    ("network = [linear(fc1, 2.5), linear(fc2)]", 3, 26, "expected an integer for 'out', got 2.5", ""),
    ("network = [linear(fc1, 4), relu, 7]", 3, 36, "expected a layer such as", ""),
    ("network = [linear(fc1, 4), relu, linear(fc2, tied = fc3)]", 3, 55, "target.network[2].tied: no earlier layer "
     "is named 'fc3'", "did you mean 'fc1'?"),
    ("network = [linear(fc1), relu, linear(fc2)]", 3, 14, "target.network[0]: linear layer 'fc1' needs its output "
     "width", "write linear(fc1, WIDTH)"),
    ("network = [linear(fc1, 4, init = identity), linear(fc2)]", 3, 36, "target.network[0].init: an identity init "
     "needs a square layer", ""),
    ("network = [linear(fc1, 4), linear(fc1)]", 3, 37, "target.network[1].name: a layer named 'fc1' is already "
     "defined", ""),
    ("network = [linear(fc1, 4), residual([linear(a, 3), relu, linear(b, 2)])]", 3, 30, "target.network[1]: the "
     "block's output width is 2; the stream it adds to has width 4", ""),
    ("network = [linear(fc1, 4), linear(fc2)]\n  decomposed = [fc1, \"x*\"]", 4, 22, "target.decomposed[1]: 'x*' "
     "matches no linear layer", "the linear layers: fc1, fc2"),
    ("network = [linear(fc1, 4), linear(fc2)]\n  truth { dense = [fc3] }", 4, 20, "target.truth.dense[0]: no linear "
     "layer is named 'fc3'", "did you mean 'fc"),
    ("network = [linear(a, 4), relu, linear(b, 3)]", 3, 13, "target.network: the network writes 3 outputs for 6 "
     "inputs; trained here on identity labels it needs one output per input", "leave the last layer's out unset"),
    ("network = [linear(fc1, 4), relu, linear(fc2)]\n  truth { input_features = [fc2] }", 4, 29,
     "target.truth.input_features[0]: 'fc2' does not read the network's input", ""),
])
def test_errors_point_at_the_layer_or_argument(text, line, col, message, hint):
    src = f"target mlp {{\n  features = 6\n  {text}\n}}\n"
    diags = _errors(src)
    d = next((d for d in diags if message in d.message), None)
    assert d is not None, [x.message for x in diags]
    assert (d.span.file, d.span.line, d.span.column) == ("net.apd", line, col), str(d)
    assert hint in (d.hint or "")


def test_tied_layers_go_with_their_source_and_a_metric_needs_its_truth():
    d = _errors("target mlp { features = 4\n  network = [linear(W, 2, bias = false), linear(W_T, tied = W)]\n"
                "  decomposed = [W] }")
    assert "'W' is decomposed but 'W_T', which shares its weight (tied), is not" in d[0].message
    assert (d[0].span.line, d[0].span.column) == (3, 16)
    d = _errors("target mlp { features = 4 }\nreport { metrics = [feature_mmcs] }")
    assert "metric 'feature_mmcs': feature_mmcs needs a ground truth: state target.truth.input_features" in d[0].message
    assert d[0].span.line == 2


def test_a_network_without_ground_truth_says_so():
    exp = apdspec.loads("target mlp { features = 4 }").experiment
    assert not {"feature_mmcs", "dense_share"} & set(exp.report.metrics)
    assert "No ground truth was given" in kind_spec("mlp").truth_note(exp.target)
    with_truth = apdspec.loads(TMS_ID.replace("relu,\n  ]", "gelu,\n  ]")).experiment  # gelu: no TMS
    assert with_truth.target.kind == "mlp"
    assert {"feature_mmcs", "feature_ml2r", "feature_matched", "dense_share", "dense_error"} <= set(
        with_truth.report.metrics)
    assert "Ground truth (stated in the spec)" in kind_spec("mlp").truth_note(with_truth.target)


# ------------------------------------------------------------------------------------------
# Presets: the kinds a network is


@pytest.mark.parametrize("arch", [
    TmsTarget(), TmsTarget(40, 10, hidden_layers=1), TmsTarget(4, 3, hidden_layers=2, hidden_weights="trained",
                                                               bias=False),
    ResidMlpTarget(), ResidMlpTarget(102, 1000, 17, 3),
    ResidMlpTarget(6, 6, 3, 2, "gelu", True, True, "identity", 1.0, True),
    DeepLinearTarget(), DeepLinearTarget(4, 7),
])
def test_every_kind_written_as_a_network_is_recognised_as_itself(arch):
    mod = {"tms": tms_spec, "resid_mlp": resid_spec, "deep_linear": deep_spec}[arch.kind]
    features, network, decomposed = mod.as_network(arch)
    net = MlpTarget(features=features, network=network, decomposed=decomposed)
    assert kind_spec("mlp").issues(net) == []
    assert kind_spec("mlp").equivalent(net) == arch
    assert resolve(Experiment(target=net)).target == arch


@pytest.mark.parametrize("change", [
    lambda n: dataclasses.replace(n, decomposed=("W", "W_T")),  # the identity not decomposed: not the TMS
    lambda n: dataclasses.replace(n, network=(dataclasses.replace(n.network[0], bias=True), *n.network[1:])),
    lambda n: dataclasses.replace(n, network=n.network[:-1] + (Activation("gelu"),)),
    lambda n: dataclasses.replace(n, truth=GroundTruth(dense=("W",))),  # a truth the TMS does not have
])
def test_a_network_that_differs_from_a_kind_stays_a_network(change):
    features, network, decomposed = tms_spec.as_network(TmsTarget(hidden_layers=1))
    net = change(MlpTarget(features=features, network=network, decomposed=decomposed))
    assert kind_spec("mlp").issues(net) == []
    assert resolve(Experiment(target=net)).target == net


def test_labels_the_kind_refuses_keep_the_network():
    features, network, decomposed = resid_spec.as_network(ResidMlpTarget(6, 8, 3, 1))
    net = MlpTarget(features=features, network=network, decomposed=decomposed)
    kept = resolve(Experiment(target=net, train=runtime.Training(labels="identity")))
    assert kept.target == net
    assert resolve(Experiment(target=net)).target.kind == "resid_mlp"


def test_the_same_network_written_both_ways_runs_identically():
    """TMS 5-2 + identity written in the vocabulary and as target tms: the same resolved experiment,
    and the same arrays at a fixed seed (it runs as the tms kind, with its kernels)."""
    tail = ("decompose { components = 6  steps = 20  batch = 64 }\nreport { metrics = [faithfulness]  plots = [] }\n"
            "target.train.steps = 30\n")
    as_net = apdspec.loads(TMS_ID.replace("  truth { input_features = [W]  dense = [hidden] }\n", "") + tail)
    as_kind = apdspec.loads("target tms { features = 5  hidden = 2  hidden_layers = 1 }\n" + tail)
    assert as_net.experiment == as_kind.experiment and as_net.experiment.target.kind == "tms"
    a, b = runtime.run(as_net.experiment), runtime.run(as_kind.experiment)
    arrays_a, arrays_b = a.decomposition.arrays(0), b.decomposition.arrays(0)
    assert set(arrays_a) == set(arrays_b) and "hidden.0.A" in arrays_a
    for k in arrays_a:
        np.testing.assert_array_equal(arrays_a[k], arrays_b[k])
    for k in a.target:
        np.testing.assert_array_equal(a.target[k], b.target[k])


# ------------------------------------------------------------------------------------------
# Numerics


def _gelu(z):
    from scipy.special import erf

    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


def test_forward_against_a_hand_computed_pass():
    rng = np.random.default_rng(0)
    p = models.random_params(NET, 2, rng)
    assert set(p) == {"E", "E.bias", "up", "down", "down.bias", "mid", "out.bias"}
    x = rng.normal(size=(2, 7, 3))
    h = _gelu(x @ p["E"] + p["E.bias"][:, None])
    h = h + np.maximum(h @ p["up"], 0) @ p["down"] + p["down.bias"][:, None]
    h = h @ p["mid"]
    y = np.maximum(h @ np.swapaxes(p["E"], 1, 2) + p["out.bias"][:, None], 0)
    np.testing.assert_allclose(models.target_forward(NET, p, x).y, y, rtol=1e-12)
    layers = models.layers_of(NET)
    assert [(l.name, l.param, l.transposed, l.d_in, l.d_out) for l in layers] == [
        ("E", "E", False, 3, 4), ("up", "up", False, 4, 5), ("down", "down", False, 5, 4), ("out", "E", True, 4, 3)]
    assert models.n_outputs(NET) == 3


def _tms_params_as_network(p: dict, hidden_layers: int) -> dict:
    out = {"W": p["W"], "W_T.bias": p["b"]}
    out.update({f"hidden.{k}": p[f"hidden.{k}"] for k in range(hidden_layers)})
    return out


@pytest.mark.parametrize("arch", [TmsTarget(5, 3, hidden_layers=2), ResidMlpTarget(5, 7, 4, 2, "gelu", True, True),
                                  DeepLinearTarget(4, 3)])
def test_the_generic_forward_computes_what_each_kind_computes(arch):
    """The vocabulary's forward pass on a kind's network form and parameters equals the kind's own
    forward (written independently): the vocabulary means what the kinds mean."""
    mod = {"tms": tms_spec, "resid_mlp": resid_spec, "deep_linear": deep_spec}[arch.kind]
    features, network, decomposed = mod.as_network(arch)
    net = MlpTarget(features=features, network=network, decomposed=decomposed)
    rng = np.random.default_rng(3)
    p = models.random_params(arch, 2, rng)
    if arch.kind == "tms":
        q = _tms_params_as_network(p, arch.hidden_layers)
    else:
        q = {k: v for k, v in p.items() if k != "W_U"}
        q.update({k.replace(".b_in", ".W_in.bias").replace(".b_out", ".W_out.bias"): v for k, v in p.items()
                  if ".b_" in k})
        q = {k: v for k, v in q.items() if ".b_" not in k}
        if arch.kind == "resid_mlp":
            p["W_U"] = np.swapaxes(p["W_E"], 1, 2)  # the kind's W_U is W_E^T, as the network ties it
    assert set(q) == set(kind_spec("mlp").param_shapes(net)[0])
    x = rng.normal(size=(2, 9, features))
    np.testing.assert_allclose(models.target_forward(net, q, x).y, models.target_forward(arch, p, x).y,
                               rtol=1e-10, atol=1e-12)


def _fd(f, params: dict, name: str, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(params[name])
    for idx in np.ndindex(params[name].shape):
        plus, minus = dict(params), dict(params)
        plus[name], minus[name] = params[name].copy(), params[name].copy()
        plus[name][idx] += eps
        minus[name][idx] -= eps
        g[idx] = (f(plus) - f(minus)) / (2 * eps)
    return g


def test_training_loss_gradients_against_finite_differences():
    rng = np.random.default_rng(1)
    net = dataclasses.replace(NET, network=tuple(x if not isinstance(x, Activation) or x.fn != "relu"
                                                  else Activation("gelu") for x in NET.network))  # smooth
    p = models.random_params(net, 2, rng, np.float64)
    x = rng.normal(size=(2, 6, 3))
    lab = rng.normal(size=(2, 6, 3))
    from runtime.engine.registry import model_of

    def loss(q):
        return float(np.sum(model_of(net).train_loss(net, q, x, lab, 1.0)))

    g = grad(lambda q: anp.sum(model_of(net).train_loss(net, q, x, lab, 1.0)))(p)
    for name in p:
        np.testing.assert_allclose(g[name], _fd(loss, p, name), rtol=1e-5, atol=1e-8)


def test_decomposition_gradients_through_the_generic_model_against_finite_differences():
    """APD's masked pass through the vocabulary's forward (the `linear` hook), differentiated by
    autograd with respect to the components, against central differences (float64)."""
    rng = np.random.default_rng(2)
    net = dataclasses.replace(NET, network=tuple(Activation("gelu") if isinstance(x, Activation) else x
                                                  for x in NET.network))
    target = models.random_params(net, 2, rng)
    C, m = 3, 2
    comps = apd.init_components(net, C, m, 2, 1.0, rng, np.float64)
    mask = rng.uniform(0, 1, (2, 4, C))
    x = rng.normal(size=(2, 4, 3))

    def f(cs):
        y = models.forward(net, target, x, apd.apd_linear(net, cs, apd.expand_mask(mask, m))).y
        return anp.sum(y * y)

    g = grad(f)(comps)
    for name in comps:
        np.testing.assert_allclose(g[name], _fd(lambda cs: float(f(cs)), comps, name), rtol=1e-5, atol=1e-8)


def test_init_frozen_and_tied_layers_and_training_keeps_frozen_ones_fixed():
    net = MlpTarget(features=4, network=(Linear("a", 3, bias=False), Linear("I", 3, init="identity", frozen=True),
                                         Linear("u", 3, init="unit_rows", bias=False), Linear("b", tied="a"),
                                         Activation("relu")))
    p = models.init_target(net, 2, stream(0, "t"), np.float64)
    assert set(p) == {"a", "I", "I.bias", "u", "b.bias"}
    np.testing.assert_array_equal(p["I"], np.broadcast_to(np.eye(3), (2, 3, 3)))
    np.testing.assert_array_equal(p["I.bias"], 0)
    np.testing.assert_allclose(np.linalg.norm(p["u"], axis=-1), 1)
    assert np.all(np.abs(p["a"]) <= 1 / np.sqrt(4)) and np.std(p["a"]) > 0.1  # nn.Linear's U(+-1/sqrt(d_in))
    assert models.trainable_target_params(net) == ("a", "u", "b.bias")
    from runtime.engine.train_target import train_target

    exp = check(Experiment(target=net, replicates=2, dtype="float64", train=runtime.Training(steps=20, batch=32)))
    trained, _ = train_target(exp, net, p, stream(0, "d"))
    np.testing.assert_array_equal(trained["I"], p["I"])
    np.testing.assert_array_equal(trained["I.bias"], p["I.bias"])
    assert not np.array_equal(trained["a"], p["a"]) and not np.array_equal(trained["b.bias"], p["b.bias"])


def test_zero_input_is_inert_exactly_when_no_bias_reaches_a_decomposed_layer():
    model = runtime.engine.registry.model_of(NET)
    assert not model.zero_input_inert(NET)  # E's bias feeds the decomposed up / down / out
    inert = MlpTarget(features=3, network=(Linear("a", 4, bias=False), Activation("relu"), Linear("b")))
    assert model.zero_input_inert(inert)  # b's bias comes after every decomposed product
    rng = np.random.default_rng(0)
    target = models.random_params(inert, 1, rng)
    comps = apd.init_components(inert, 3, 2, 1, 1.0, rng, np.float64)
    x = np.zeros((1, 2, 3))
    masked = models.forward(inert, target, x, apd.apd_linear(inert, comps, apd.expand_mask(rng.uniform(
        size=(1, 2, 3)), 2))).y
    np.testing.assert_allclose(masked, models.target_forward(inert, target, x).y, atol=1e-15)


# ------------------------------------------------------------------------------------------
# Ground truth


def test_ground_truth_metrics_on_hand_made_decompositions():
    """A TMS + identity network kept as a network (gelu output): component f = row f of W and column
    f of W^T (the feature's mechanism), one more component = the whole identity. Exact: MMCS 1, one
    dense mechanism; with the identity spread evenly over two components: share 1/2."""
    from run_cases import wrap
    from runtime.analysis.metrics import evaluate

    F, H = 4, 2
    net = MlpTarget(features=F, network=(Linear("W", H, bias=False), Linear("hidden", H, bias=False,
                                                                           init="identity", frozen=True),
                                         Linear("W_T", tied="W"), Activation("gelu")),
                    truth=GroundTruth(input_features=("W",), output_features=("W_T",), dense=("hidden",)))
    rng = np.random.default_rng(0)
    W = rng.normal(size=(1, F, H))
    target = {"W": W, "hidden": np.eye(H)[None].copy(), "W_T.bias": np.zeros((1, F))}

    def run(split_identity: bool):
        C = F + 2
        A_W, B_W = np.zeros((1, C, F, H)), np.zeros((1, C, H, H))
        A_h, B_h = np.zeros((1, C, H, H)), np.zeros((1, C, H, H))
        for f in range(F):  # component f: row f of W (so column f of the tied W^T)
            A_W[0, f, f, 0] = 1.0
            B_W[0, f, 0] = W[0, f]
        A_h[0, F], B_h[0, F] = np.eye(H), np.eye(H)
        if split_identity:
            B_h[0, F] *= 0.5
            A_h[0, F + 1], B_h[0, F + 1] = np.eye(H), 0.5 * np.eye(H)
        comps = {**apd.from_components("W", A_W, B_W), **apd.from_components("hidden", A_h, B_h)}
        exp = Experiment(target=net, replicates=1, dtype="float64",
                         decompose=runtime.Decompose(components=C, rank=H, batch=16),
                         report=runtime.Report(metrics=("feature_mmcs", "feature_ml2r", "feature_matched",
                                                        "dense_share", "dense_error"), plots=(), eval_batches=1))
        return evaluate(wrap(exp, target, comps))

    exact = run(False)
    assert exact["feature_mmcs"] == [1.0] and exact["feature_ml2r"] == [1.0] and exact["feature_matched"] == [F]
    assert exact["dense_share"] == [1.0] and exact["dense_error"] == pytest.approx([0.0], abs=1e-12)
    split = run(True)
    assert split["dense_share"] == pytest.approx([0.5]) and split["dense_error"] == pytest.approx([0.5])


def test_tms_hidden_identity_is_frozen_and_dense():
    arch = TmsTarget(5, 2, hidden_layers=1)
    assert arch.hidden_weights == "identity" and kind_spec("tms").dense_matrices(arch) == ("hidden.0",)
    p = models.init_target(arch, 2, stream(0, "t"), np.float64)
    np.testing.assert_array_equal(p["hidden.0"], np.broadcast_to(np.eye(2), (2, 2, 2)))
    assert "hidden.0" not in models.trainable_target_params(arch)
    trained = dataclasses.replace(arch, hidden_weights="trained")
    assert "hidden.0" in models.trainable_target_params(trained) and not kind_spec("tms").dense_matrices(trained)
    exp = apdspec.loads("target tms { hidden_layers = 1 }").experiment
    assert {"dense_share", "dense_error", "mmcs"} <= set(exp.report.metrics)
    assert "dense_share" not in apdspec.loads("target tms { }").experiment.report.metrics
    with pytest.raises(SpecValidationError, match="dense_share"):
        check(Experiment(target=TmsTarget(), report=runtime.Report(metrics=("dense_share",))))


def test_walk_reports_every_layers_shapes():
    w = walk(NET.features, NET.network)
    assert not w.problems and w.n_out == 3
    assert [(u.name, u.d_in, u.d_out, u.residual) for u in w.linears] == [
        ("E", 3, 4, False), ("up", 4, 5, True), ("down", 5, 4, True), ("mid", 4, 4, False), ("out", 4, 3, False)]


def test_check_and_explain_say_a_network_runs_as_the_kind_it_is():
    from apdspec.explain import explain
    from apdspec.summary import summary_lines

    spec = apdspec.loads(TMS_ID, filename="net.apd")
    assert explain(spec, "target.hidden_layers") == [
        "target.hidden_layers = 1  (the target mlp network of net.apd:2:8, which is a tms target)"]
    rows = "\n".join(summary_lines(spec.experiment, written_as=spec.state.kind))
    assert "written as target mlp, it is a TMS 5-2 + ID: it runs as target tms" in rows
    assert "the frozen hidden identity is one dense mechanism" in rows
    plain = "\n".join(summary_lines(apdspec.loads("target mlp { features = 4 }").experiment, written_as="mlp"))
    assert "No ground truth was given" in plain and "written as" not in plain


def test_an_imported_network_has_no_known_labels(tmp_path):
    """A state dict does not say what its network was trained on: target_loss is not computed."""
    from runtime.methods.apd.train import ApdDecomposition
    from runtime.store.files import save_target
    from runtime.store.rundir import RunResult

    net = MlpTarget(features=3, network=(Linear("a", 2, bias=False), Activation("relu"), Linear("b", bias=False)))
    rng = np.random.default_rng(0)
    target = models.random_params(net, 1, rng)
    save_target(tmp_path / "T.npz", net, {k: v[0] for k, v in target.items()})
    exp = Experiment(target=runtime.FileTarget(str(tmp_path / "T.npz")), replicates=1, dtype="float64",
                     decompose=runtime.Decompose(components=2, rank=2, batch=16),
                     report=runtime.Report(metrics=("target_loss", "faithfulness"), plots=(), eval_batches=1))
    exp = check(exp)
    comps = apd.init_components(net, 2, 2, 1, 1.0, rng, np.float64)
    dec = ApdDecomposition(net, 2, 2, comps, [{"step": 0, "lr": 0.0, "total": 1.0, "faithfulness": 1.0}])
    result = RunResult(exp, net, target, {}, dec, [], {}, [], {}, {})
    from runtime.analysis.core import analysis_for

    assert analysis_for(result).labels_fn()[1] is True and analysis_for(result).target_loss() is None

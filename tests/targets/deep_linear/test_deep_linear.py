"""The deep linear network: its model, its checks in the language, its ground-truth metrics on
hand-made decompositions, the generic attributions it runs on (no kernels of its own) against
finite differences, and short APD and SPD runs."""
import dataclasses
import os

import numpy as np
import pytest

import apdspec
import runtime
from runtime import DeepLinearTarget
from runtime.engine import models
from runtime.engine.seeding import stream
from runtime.methods.apd import components as apd
from runtime.methods.apd.attributions import attributions
from runtime.spec import Experiment, SpecValidationError, check

from paths import ROOT

ARCH = DeepLinearTarget(features=4, layers=3)


def test_identity_init_is_the_identity_map_and_noise_perturbs_it():
    params = models.init_target(ARCH, 2, stream(0, "t"), np.float64)
    assert set(params) == {"layers.0.W", "layers.1.W", "layers.2.W"} == set(models.trainable_target_params(ARCH))
    x = np.random.default_rng(0).normal(size=(2, 7, 4))
    np.testing.assert_array_equal(models.target_forward(ARCH, params, x).y, x)
    noisy = models.init_target(dataclasses.replace(ARCH, init_noise=0.1), 2, stream(0, "t"), np.float64)
    assert 0.05 < np.std(noisy["layers.1.W"] - np.eye(4)) < 0.2
    assert [l.name for l in models.layers_of(ARCH)] == ["layers.0.W", "layers.1.W", "layers.2.W"]


def test_the_language_writes_it_and_checks_its_fields():
    spec = apdspec.loads("target deep_linear { features = 6  layers = 2 }\ndecompose { components = 6 }")
    exp = spec.experiment
    assert exp.target == DeepLinearTarget(features=6, layers=2) and exp.decompose.rank == 1
    assert exp.train.labels == "identity"
    with pytest.raises(SpecValidationError, match="target.features"):
        check(Experiment(target=DeepLinearTarget(features=0)))
    with pytest.raises(apdspec.SpecError) as info:
        apdspec.loads("target deep_linear { layers = 0 }")
    assert any("target.layers: must be > 0" in d.message for d in info.value.diagnostics)


def _run_with(comps_per_layer, method="apd"):
    """A RunResult of the identity target with the given component weights (I=1): for APD a list,
    per component, of its (d, d) matrix in each layer (rank one: A = column, B = row)."""
    from run_cases import wrap

    target = models.init_target(ARCH, 1, stream(0, "t"), np.float64)
    C = len(comps_per_layer)
    comps = {}
    for l in range(ARCH.layers):
        A = np.zeros((1, C, 4, 1))
        B = np.zeros((1, C, 1, 4))
        for c, per_layer in enumerate(comps_per_layer):
            f = per_layer[l]
            A[0, c, f, 0], B[0, c, 0, f] = 1.0, 1.0
        comps.update(apd.from_components(f"layers.{l}.W", A, B))
    exp = check(Experiment(target=ARCH, replicates=1, dtype="float64",
                           decompose=runtime.Decompose(components=C, rank=1, batch=16),
                           report=runtime.Report(metrics=("layer_mmcs", "layer_ml2r", "recovered_features"), plots=())))
    return wrap(exp, target, comps)


def test_ground_truth_metrics_on_hand_made_decompositions():
    from runtime.analysis.metrics import evaluate

    exact = evaluate(_run_with([[f] * 3 for f in range(4)]))  # component f = e_f e_f^T in every layer
    assert exact["recovered_features"] == [4.0] and exact["layer_mmcs"] == [1.0] and exact["layer_ml2r"] == [1.0]
    # components 0 and 1 swap their dimension in the last layer: every row is still matched in every
    # layer, but dimensions 0 and 1 are carried by different components in different layers
    swapped = evaluate(_run_with([[0, 0, 1], [1, 1, 0], [2, 2, 2], [3, 3, 3]]))
    assert swapped["recovered_features"] == [2.0] and swapped["layer_mmcs"] == [1.0]


def test_generic_attributions_are_squared_directional_derivatives():
    """No kernels are registered for this kind: APD's generic reverse-mode attributions, from the
    target and from the APD model, against central finite differences of the definition."""
    rng = np.random.default_rng(1)
    arch = DeepLinearTarget(features=3, layers=2)
    target = models.random_params(arch, 2, rng)
    C, m = 4, 2
    comps = apd.init_components(arch, C, m, 2, 1.0, rng, np.float64)
    x = rng.uniform(-1, 1, (2, 5, 3))
    tgt = models.target_forward(arch, target, x)
    for source, base in (("target", target), ("apd", apd.dense_sum_params(arch, target, comps))):
        attr = attributions("gradient", source, arch, target, tgt, comps, x, C, m)
        for c in range(C):
            eps = 1e-6

            def out(sign):
                shifted = dict(base)
                for name in apd.decomposed_params(arch):
                    shifted[name] = base[name] + sign * eps * apd.component_weights(comps, name, C)[:, c]
                return models.target_forward(arch, shifted, x).y

            d = (out(1) - out(-1)) / (2 * eps)
            np.testing.assert_allclose(attr[:, :, c], np.sum(d * d, axis=-1), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["apd", "spd"])
def test_short_runs_of_both_methods_report_the_ground_truth(method):
    spec = apdspec.load(os.path.join(ROOT, "specs", f"{'spd_' if method == 'spd' else ''}deep_linear.apd"),
                        overrides=["decompose.steps=300", "target.train.steps=100", "report.eval_batches=2",
                                   "report.plots=[]"])
    exp = dataclasses.replace(spec.experiment, report=dataclasses.replace(spec.experiment.report, expect=()))
    result = runtime.run(exp)
    m = result.metrics
    assert {"layer_mmcs", "layer_ml2r", "recovered_features", "faithfulness"} <= set(m)
    assert all(0.7 < v <= 1 for v in m["layer_mmcs"]) and all(v in (0, 1, 2, 3, 4, 5) for v in m["recovered_features"])

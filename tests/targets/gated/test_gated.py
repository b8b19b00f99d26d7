"""The hand-coded gated-function network (notes §1.3, §9 piecewise tests)."""
import numpy as np
import pytest

from runtime.engine import models
from runtime.engine.data import sample_inputs
from runtime.targets.gated.model import (
    build_for_experiment, build_gated, gated_labels, grid, neuron_indices, piecewise_functions, suppression, true_functions,
)
from runtime.spec import Data, Experiment
from runtime import GatedTarget
from runtime.targets.resid_mlp.model import residual_dims

ARCH = GatedTarget(functions=4, neurons=10, layers=2)


def build(arch=ARCH, I=3, seed=0, dtype=np.float64):
    return build_gated(arch, I, np.random.default_rng(seed), np.random.default_rng(seed + 100), dtype)


def test_shapes_and_layout():
    params, extras = build()
    D, d_mlp, L = residual_dims(ARCH)
    assert (D, d_mlp, L) == (6, 20, 2)
    assert params["W_E"].shape == (3, 5, 6) and params["W_U"].shape == (3, 6, 1)
    np.testing.assert_array_equal(params["W_E"][0], np.eye(5, 6))  # x -> dim 0, bit i -> dim 1 + i
    np.testing.assert_array_equal(params["W_U"][0, :, 0], [0, 0, 0, 0, 0, 1])  # reads y
    for l in range(L):
        W_in, W_out = params[f"layers.{l}.W_in"], params[f"layers.{l}.W_out"]
        assert W_in.shape == (3, D, d_mlp) and W_out.shape == (3, d_mlp, D)
        assert params[f"layers.{l}.b_in"].shape == (3, d_mlp)
        assert f"layers.{l}.b_out" not in params
        np.testing.assert_array_equal(W_in[:, 0], 1.0)  # every neuron reads x with weight 1
        np.testing.assert_array_equal(W_in[:, D - 1], 0.0)  # never y
        np.testing.assert_array_equal(np.count_nonzero(W_in[:, 1:D - 1], axis=1), 1)  # one control bit
        np.testing.assert_array_equal(W_out[..., :D - 1], 0.0)  # writes only y
    assert extras["coefficients"].shape == (3, 4, 7)
    assert extras["permutation"].shape == (3, 40)
    assert all(v.shape[0] == 3 for v in extras.values())  # every extra has the replicate axis (runner slices it)
    assert suppression(ARCH) == 10.0


def test_coefficient_ranges_and_independent_replicates():
    arch = GatedTarget(functions=50, neurons=4, layers=1, amplitude_range=(-2.0, 1.0), frequency_range=(0.5, 0.7))
    _, ex = build(arch, I=2)
    c = ex["coefficients"]
    for q in (0, 3, 6):  # a, d, g
        assert c[..., q].min() >= -2.0 and c[..., q].max() < 1.0
    for q in (1, 4):  # b, e
        assert c[..., q].min() >= 0.5 and c[..., q].max() < 0.7
    for q in (2, 5):  # c, f
        assert c[..., q].min() >= -np.pi and c[..., q].max() < np.pi
    assert not np.array_equal(c[0], c[1])
    assert not np.array_equal(ex["permutation"][0], ex["permutation"][1])
    x = np.linspace(-1, 6, 7)[None].repeat(2, 0)
    a, b, cc, d, e, f, g = c[0, 0]
    np.testing.assert_allclose(true_functions(ex, x)[0, :, 0], a * np.sin(b * x[0] + cc) + d * np.cos(e * x[0] + f) + g)


@pytest.mark.parametrize("simple_bias", [False, True])
def test_network_output_is_gated_sum_of_piecewise_functions(simple_bias):
    arch = GatedTarget(functions=4, neurons=10, layers=2, simple_bias=simple_bias)
    params, extras = build(arch)
    x = sample_inputs(arch, Data(probability=0.5), 3, 500, np.random.default_rng(1), np.float64)
    y = models.target_forward(arch, params, x).y
    g = piecewise_functions(arch, extras, x)
    np.testing.assert_allclose(y, np.sum(g * x[..., 1:], -1, keepdims=True), rtol=1e-12, atol=1e-12)
    off = x.copy()
    off[..., 1:] = 0.0
    np.testing.assert_array_equal(models.target_forward(arch, params, off).y, 0.0)  # no bit -> no output


def test_piecewise_interpolates_the_true_function():
    _, extras = build()
    s, t, delta = grid(ARCH)
    np.testing.assert_allclose(s, np.linspace(0, 5, 10))
    np.testing.assert_allclose(t, np.linspace(0, 5, 10) - 5 / 9)
    I = 3
    at_grid = np.broadcast_to(s, (I, s.size))
    np.testing.assert_allclose(piecewise_functions(ARCH, extras, at_grid), true_functions(extras, at_grid), atol=1e-12)
    # zero left of start - delta, and the linear interpolant through (start - delta, 0), (s_j, F(s_j))
    left = np.broadcast_to(np.linspace(-3, -delta, 7), (I, 7))
    np.testing.assert_array_equal(piecewise_functions(ARCH, extras, left), 0.0)
    xs = np.linspace(-delta, 5, 301)
    xq = np.broadcast_to(xs, (I, xs.size))
    F_grid = true_functions(extras, at_grid)
    for r in range(I):
        for i in range(4):
            want = np.interp(xs, np.r_[-delta, s], np.r_[0.0, F_grid[r, :, i]])
            np.testing.assert_allclose(piecewise_functions(ARCH, extras, xq)[r, :, i], want, atol=1e-12)


def test_target_is_close_to_true_labels_on_the_data_range():
    params, extras = build(I=2)
    x = sample_inputs(ARCH, Data(probability=0.5), 2, 2000, np.random.default_rng(2), np.float64)
    labels = gated_labels(extras, x)
    assert labels.shape == (2, 2000, 1)
    np.testing.assert_allclose(labels, np.sum(true_functions(extras, x) * x[..., 1:], -1, keepdims=True))
    err = np.mean((models.target_forward(ARCH, params, x).y - labels) ** 2)
    assert 0 < err < 5e-3  # 10 neurons on [0, 5] with frequencies <= 1


def test_calc_neuron_indices_reference_case():
    perm = np.array([8, 6, 2, 11, 0, 5, 1, 9, 3, 10, 7, 4])
    got = neuron_indices(perm, neurons=3, functions=4, layers=2)
    assert got == [[[2, 4], [5], [0, 1], [3]], [[0], [2, 5], [4], [1, 3]]]


def test_neurons_sit_where_the_permutation_says():
    params, extras = build()
    _, t, _ = grid(ARCH)
    S = suppression(ARCH)
    for r in range(3):
        perm = extras["permutation"][r]
        idx = neuron_indices(perm, ARCH.neurons, ARCH.functions, ARCH.layers)
        for l in range(ARCH.layers):
            W_in, b_in = params[f"layers.{l}.W_in"][r], params[f"layers.{l}.b_in"][r]
            W_out = params[f"layers.{l}.W_out"][r]
            chunk = perm[l * 20:(l + 1) * 20]
            for i in range(ARCH.functions):
                pos = idx[l][i]
                np.testing.assert_array_equal(np.flatnonzero(W_in[1 + i]), pos)  # reads bit i exactly there
                np.testing.assert_array_equal(W_in[1 + i, pos], S)
                k = chunk[pos] % ARCH.neurons
                np.testing.assert_allclose(b_in[pos], -t[k] - S)
                np.testing.assert_allclose(W_out[pos, -1], extras["output_weights"][r, i, k])


def test_dtype_and_experiment_seeding():
    p32, _ = build(dtype=np.float32)
    assert all(v.dtype == np.float32 for v in p32.values())
    exp = Experiment(seed=3, replicates=2, target=GatedTarget(functions=2, neurons=3, layers=1))
    a, ea = build_for_experiment(exp)
    b, eb = build_for_experiment(exp)
    assert a["layers.0.W_in"].dtype == np.float32
    np.testing.assert_array_equal(ea["coefficients"], eb["coefficients"])
    c, ec = build_for_experiment(Experiment(seed=3, replicates=2, target=GatedTarget(functions=2, neurons=3, layers=1, seed=9)))
    assert not np.array_equal(ea["coefficients"], ec["coefficients"])  # target.seed drives the functions
    np.testing.assert_array_equal(ea["permutation"], ec["permutation"])  # the experiment seed drives the permutation

"""Smooth L0, frequencies, activity and the frequency penalty (runtime/methods/vpd/sparsity.py,
notes §3) against hand-computed values."""
import math

import numpy as np
import pytest

from runtime.methods.vpd import sparsity
from runtime.spec.knots import linear, value_at


@pytest.mark.parametrize("c, g, plain, at_one", [
    (0.5, 1.0, 0.25 / 1.25, 0.4),  # 0.2, x (1 + 1)
    (1.0, 0.1, 1.0 / 1.01, 1.0),  # c = 1 costs exactly 1 with normalize_at_one
    (0.1, 0.1, 0.5, 0.505),  # c = g: half
    (0.0, 0.5, 0.0, 0.0),
    (2.0, 1.0, 0.8, 1.6),  # upper CI may exceed 1
])
def test_smooth_l0(c, g, plain, at_one):
    assert sparsity.smooth_l0(np.array(c), g) == pytest.approx(plain, rel=1e-14)
    assert sparsity.smooth_l0(np.array(c), g, normalize_at_one=True) == pytest.approx(at_one, rel=1e-14)


def test_frequencies_activity_and_penalty():
    # one replicate, 2 rows, 2 subcomponents at g = 1: phi(1) = 0.5, phi(0) = 0, phi(0.5) = 0.2
    ci = {"a": np.array([[[1.0, 0.0], [0.5, 0.0]]]), "b": np.array([[[1.0, 1.0], [1.0, 0.0]]])}
    f = {k: sparsity.frequencies(v, 1.0) for k, v in ci.items()}
    assert np.allclose(f["a"], [[0.35, 0.0]]) and np.allclose(f["b"], [[0.5, 0.25]])
    assert sparsity.activity(f) == pytest.approx(0.35 + 0.5 + 0.25)
    a = 100.0
    expected = sum(v * math.log2(1 + a * v) for v in (0.35, 0.0, 0.5, 0.25))
    assert sparsity.frequency_penalty(f, a) == pytest.approx(expected, rel=1e-13)


def test_frequency_penalty_small_f():
    f = {"s": np.array([[0.01, 0.5]])}
    expected = 0.01 * math.log2(1 + 100 * 0.01) + 0.5 * math.log2(1 + 100 * 0.5)  # 0.01 + 0.5 log2 51
    assert sparsity.frequency_penalty(f, 100.0)[0] == pytest.approx(expected, rel=1e-14)
    assert expected == pytest.approx(0.01 + 0.5 * 5.672425341971495, rel=1e-14)


def test_per_replicate():
    ci = np.array([[[1.0]], [[0.0]]])  # replicate 0 fires, replicate 1 does not
    f = {"s": sparsity.frequencies(ci, 0.1, normalize_at_one=True)}
    assert np.allclose(sparsity.activity(f), [1.0, 0.0])
    assert np.allclose(sparsity.frequency_penalty(f, 7.0), [3.0, 0.0])  # 1 x log2(8)


def test_g_anneal_linear_over_training():
    g, steps = linear(1.0, 0.01), 101
    assert value_at(g, 0, steps) == 1.0
    assert value_at(g, 50, steps) == pytest.approx(0.505)
    assert value_at(g, 100, steps) == pytest.approx(0.01)  # the last update
    assert value_at(g, 101, steps) == pytest.approx(0.01)  # the log-only step holds it

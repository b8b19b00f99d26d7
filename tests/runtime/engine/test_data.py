"""Data generation and labels (notes §2, §9 dataset tests)."""
import numpy as np
import pytest

from runtime.engine import seeding
from runtime.engine.data import (
    feature_importance, label_coefficients, labels_for, sample_inputs, sample_nonzero, value_range,
)
from runtime.spec import Data, Experiment, Training, resolve
from runtime import GatedTarget, ResidMlpTarget, TmsTarget

TMS = TmsTarget(features=5, hidden=2)


def rng(seed=0):
    return np.random.default_rng(seed)


def test_at_least_zero_active_shape_range_fraction():
    x = sample_inputs(TMS, Data(probability=0.5, values=(0.0, 1.0)), replicates=3, batch=2000, rng=rng())
    assert x.shape == (3, 2000, 5) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() < 1.0
    assert abs(np.mean(x != 0) - 0.5) < 0.02
    # all-zero samples are allowed (and occur at rate (1-p)^F)
    zero = np.mean(np.all(x == 0, axis=-1))
    assert abs(zero - 0.5 ** 5) < 0.02


def test_default_values_per_kind_and_resolved_experiment():
    resid = ResidMlpTarget(features=10, d_embed=20, d_mlp=5)
    assert value_range(resid, Data()) == (-1.0, 1.0)
    assert value_range(TMS, Data()) == (0.0, 1.0)
    assert value_range(GatedTarget(input_range=(1.0, 3.0)), Data()) == (1.0, 3.0)
    x = sample_inputs(resid, Data(probability=0.5), 2, 2000, rng(), np.float64)
    assert x.dtype == np.float64 and x.min() >= -1.0 and x.max() < 1.0
    assert x.min() < -0.9 and x.max() > 0.9  # the whole symmetric range is used
    exp = resolve(Experiment(target=resid))
    assert exp.data.values == (-1.0, 1.0)


def test_same_stream_same_data_across_dtypes():
    d = Data(probability=0.3)
    a = sample_inputs(TMS, d, 2, 50, rng(7), np.float32)
    b = sample_inputs(TMS, d, 2, 50, rng(7), np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.array_equal(a, sample_inputs(TMS, d, 2, 50, rng(8), np.float32))


def test_sample_nonzero_has_no_all_zero_rows():
    x = sample_nonzero(TMS, Data(probability=0.05, values=(0.0, 1.0)), replicates=3, batch=200, rng=rng())
    assert x.shape == (3, 200, 5)
    assert x.min() >= 0.0 and x.max() < 1.0
    assert np.all(np.any(x != 0, axis=-1))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_exactly_n_active(n):
    arch = TmsTarget(features=10, hidden=3)
    x = sample_inputs(arch, Data(mode="exactly_n_active", n_active=n, values=(0.0, 1.0)), 3, 400, rng(n))
    assert x.shape == (3, 400, 10)
    assert np.all(np.sum(x != 0, axis=-1) == n)
    assert x.min() >= 0.0 and x.max() < 1.0
    # features are chosen uniformly: each is active in about n/F of the samples
    np.testing.assert_allclose(np.mean(x != 0, axis=(0, 1)), n / 10, atol=0.05)


def test_feature_importance_broadcast():
    np.testing.assert_array_equal(feature_importance(3, 1.0), [1, 1, 1])
    np.testing.assert_array_equal(feature_importance(3, 0.5), [1, 0.5, 0.25])
    np.testing.assert_array_equal(feature_importance(3, 0.0), [1, 0, 0])
    w = np.broadcast_to(feature_importance(3, 0.5), (4, 2, 3))  # (B, I, F) as in the reference test
    assert w.shape == (4, 2, 3) and np.all(w[..., 2] == 0.25)


def test_synced_groups_fire_together():
    groups = ((0, 1), (2, 3, 4))
    x = sample_inputs(TMS, Data(probability=0.2, values=(0.0, 1.0), synced=groups), 2, 3000, rng())
    on = x != 0
    for g in groups:
        assert np.all(on[..., list(g)].all(-1) == on[..., list(g)].any(-1))
        # a group fires whenever any member would have: 1 - (1-p)^|g|
        np.testing.assert_allclose(on[..., g[0]].mean(), 1 - 0.8 ** len(g), atol=0.03)
    assert x.min() >= 0.0 and x.max() < 1.0
    vals = x[..., 0][on[..., 0]]
    assert abs(vals.mean() - 0.5) < 0.03  # resampled values are still uniform


def test_overlapping_or_bad_synced_groups_raise():
    with pytest.raises(ValueError, match="overlapping"):
        sample_inputs(TMS, Data(synced=((0, 1), (1, 2))), 1, 10, rng())
    with pytest.raises(ValueError, match="out of range"):
        sample_inputs(TMS, Data(synced=((0, 7),)), 1, 10, rng())
    with pytest.raises(ValueError, match="at_least_zero_active"):
        sample_inputs(TMS, Data(mode="exactly_n_active", synced=((0, 1),)), 1, 10, rng())


def test_gated_inputs_distribution():
    arch = GatedTarget(functions=4, neurons=10, layers=2)
    x = sample_inputs(arch, Data(probability=0.3), 2, 5000, rng(), np.float64)
    assert x.shape == (2, 5000, 5)
    assert x[..., 0].min() >= 0.0 and x[..., 0].max() < 5.0
    assert abs(x[..., 0].mean() - 2.5) < 0.06 and abs(x[..., 0].var() - 25 / 12) < 0.1
    bits = x[..., 1:]
    assert set(np.unique(bits)) <= {0.0, 1.0}
    np.testing.assert_allclose(bits.mean(axis=(0, 1)), 0.3, atol=0.03)
    assert abs(np.corrcoef(bits[0, :, 0], bits[0, :, 1])[0, 1]) < 0.05  # independent bits
    assert not np.array_equal(x[0], x[1])  # replicates get their own draws
    nz = sample_nonzero(arch, Data(probability=0.05), 2, 100, rng())
    assert nz.shape == (2, 100, 5) and np.all(nz[..., 1:].sum(-1) >= 1)  # gated: at least one bit on
    y = sample_inputs(arch, Data(probability=0.3, values=(1.0, 2.0)), 1, 100, rng())
    assert y[..., 0].min() >= 1.0 and y[..., 0].max() < 2.0


def test_float32_uniform_stays_half_open():
    class Top:  # the largest float64 below 1 rounds to 1.0 in float32
        def random(self, shape):
            return np.full(shape, np.nextafter(1.0, 0.0))

    x = sample_inputs(TMS, Data(probability=1.0, values=(0.0, 1.0)), 1, 4, Top(), np.float32)
    assert np.all(x < 1.0) and np.all(x == np.nextafter(np.float32(1), np.float32(0)))


def test_labels_tms_identity_and_resid_act_plus_resid_abs():
    x = sample_inputs(TMS, Data(probability=0.5), 2, 10, rng())
    tr = Training(labels="identity")
    y = labels_for(TMS, tr, x, label_coefficients(TMS, tr, 2))
    np.testing.assert_array_equal(y, x)
    assert y is not x

    resid = ResidMlpTarget(features=6, d_embed=8, d_mlp=3)
    x = sample_inputs(resid, Data(probability=0.5), 2, 50, rng(), np.float64)
    ones = Training(labels="act_plus_resid")
    c = label_coefficients(resid, ones, 2)
    np.testing.assert_array_equal(c, np.ones((2, 6)))
    np.testing.assert_allclose(labels_for(resid, ones, x, c), np.maximum(x, 0) + x)

    uni = Training(labels="abs", label_coeffs="uniform", label_seed=3)
    c = label_coefficients(resid, uni, 2)
    assert c.shape == (2, 6) and c.min() >= 1.0 and c.max() < 2.0
    assert not np.array_equal(c[0], c[1])
    np.testing.assert_array_equal(c, label_coefficients(resid, uni, 2))  # seeded by label_seed
    assert not np.array_equal(c, label_coefficients(resid, Training(label_coeffs="uniform", label_seed=4), 2))
    np.testing.assert_allclose(labels_for(resid, uni, x, c), np.abs(c[:, None, :] * x))

    apr = Training(labels="act_plus_resid", label_coeffs="uniform")
    c = label_coefficients(resid, apr, 2)
    np.testing.assert_allclose(labels_for(resid, apr, x, c), np.maximum(c[:, None, :] * x, 0) + x)


def test_gelu_labels():
    from scipy.special import erf

    resid = ResidMlpTarget(features=4, d_embed=8, d_mlp=3, activation="gelu")
    x = sample_inputs(resid, Data(probability=1.0), 1, 20, rng(), np.float64)
    tr = Training(labels="act_plus_resid")
    want = 0.5 * x * (1 + erf(x / np.sqrt(2))) + x
    np.testing.assert_allclose(labels_for(resid, tr, x, label_coefficients(resid, tr, 1)), want)


def test_seeding_streams_are_named_stable_and_independent():
    a = seeding.stream(0, "target_data").random(5)
    np.testing.assert_array_equal(a, seeding.stream(0, "target_data").random(5))
    # using (or not) other streams never changes this one
    s = seeding.streams(0)
    s["apd_init"].random(100)
    np.testing.assert_array_equal(a, s["target_data"].random(5))
    assert not np.array_equal(a, seeding.stream(0, "apd_data").random(5))
    assert not np.array_equal(a, seeding.stream(1, "target_data").random(5))
    d = seeding.describe(0)
    assert set(d["streams"]) == set(seeding.PURPOSES)
    rec = d["streams"]["eval"]
    rebuilt = np.random.Generator(np.random.PCG64(np.random.SeedSequence(rec["entropy"], spawn_key=rec["spawn_key"])))
    np.testing.assert_array_equal(rebuilt.random(3), seeding.stream(0, "eval").random(3))
    # named children never coincide with the plain spawn() children of the same root
    plain = np.random.default_rng(np.random.SeedSequence(0).spawn(1)[0]).random(5)
    assert not any(np.array_equal(plain, seeding.stream(0, p).random(5)) for p in seeding.PURPOSES)
    with pytest.raises(ValueError):
        seeding.stream(-1, "eval")

"""Per-feature probabilities and importances, anti-correlated groups, and that data without them is
drawn exactly as before they existed (docs/language.md, "How generated features are drawn")."""
import numpy as np
import pytest

from runtime.engine.data import (
    _sync, _uniform, feature_importance, mean_active, nonzero_fraction, sample_inputs,
)
from runtime.spec import Data, Experiment, Profile, Training, resolve, validate
from runtime.spec import per_feature
from runtime import GatedTarget, ResidMlpTarget, TmsTarget


def rng(seed=0):
    return np.random.default_rng(seed)


def within_binomial(rate, p, n, sigmas=5.0):
    """|rate - p| within `sigmas` standard deviations of a Binomial(n, p) proportion."""
    return abs(rate - p) <= sigmas * np.sqrt(p * (1 - p) / n) + 1e-12


# -- the process without the new settings is the old one, draw for draw


def _old_sparse_features(F, data, lo, hi, shape, g, dtype):
    """The sampler as it was before per-feature values and anti-correlated groups (git d8cf160)."""
    if data.mode == "at_least_zero_active":
        x = _uniform(g, lo, hi, shape + (F,), dtype)
        x *= g.random(shape + (F,)) < data.probability
        if data.synced:
            x = _sync(x, data.synced, lo, hi, g)
        return x
    chosen = np.argsort(g.random(shape + (F,)), axis=-1)[..., :data.n_active]
    x = np.zeros(shape + (F,), dtype=dtype)
    np.put_along_axis(x, chosen, _uniform(g, lo, hi, shape + (data.n_active,), dtype), axis=-1)
    return x


@pytest.mark.parametrize("arch,data,lohi", [
    (TmsTarget(features=5, hidden=2), Data(probability=0.05), (0.0, 1.0)),
    (TmsTarget(features=40, hidden=10), Data(probability=0.3, synced=((0, 1), (5, 6, 7))), (0.0, 1.0)),
    (TmsTarget(features=10, hidden=3), Data(mode="exactly_n_active", n_active=3), (0.0, 1.0)),
    (ResidMlpTarget(features=20, d_embed=30, d_mlp=10), Data(probability=0.1), (-1.0, 1.0)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_data_without_new_settings_is_bit_identical_to_the_old_sampler(arch, data, lohi, dtype):
    new = sample_inputs(arch, data, 3, 257, rng(11), dtype)
    old = _old_sparse_features(arch.features, data, *lohi, (3, 257), rng(11), dtype)
    assert new.dtype == old.dtype and new.tobytes() == old.tobytes()


def test_gated_bits_are_bit_identical_to_the_old_sampler():
    arch = GatedTarget(functions=4, neurons=10, layers=2)
    g = rng(5)
    x = _uniform(g, 0.0, 5.0, (2, 300, 1), np.float32)
    bits = (g.random((2, 300, 4)) < 0.2).astype(np.float32)
    old = np.concatenate([x, bits], axis=-1)
    assert sample_inputs(arch, Data(probability=0.2), 2, 300, rng(5)).tobytes() == old.tobytes()


def test_a_list_of_equal_probabilities_draws_what_the_number_draws():
    arch = TmsTarget(features=6, hidden=2)
    a = sample_inputs(arch, Data(probability=0.2), 2, 500, rng(3))
    b = sample_inputs(arch, Data(probability=(0.2,) * 6), 2, 500, rng(3))
    assert a.tobytes() == b.tobytes()


# -- per-feature values


def test_per_feature_forms_are_the_documented_formulas():
    i = np.arange(6)
    np.testing.assert_allclose(per_feature.values(Profile("zipf", 0.2, exponent=1.5), 6), 0.2 * (i + 1.0) ** -1.5)
    np.testing.assert_allclose(per_feature.values(Profile("geometric", 0.5, ratio=0.8), 6), 0.5 * 0.8 ** i)
    np.testing.assert_array_equal(per_feature.values((0.1, 0.2, 0.3), 3), [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(per_feature.values(0.05, 3), [0.05] * 3)
    np.testing.assert_array_equal(per_feature.values(0.5, 3, "power"), [1, 0.5, 0.25])
    with pytest.raises(ValueError, match="2 per-feature values for 3 features"):
        per_feature.values((0.1, 0.2), 3)


def test_importance_forms():
    np.testing.assert_array_equal(feature_importance(4, 0.9), 0.9 ** np.arange(4))
    np.testing.assert_array_equal(feature_importance(4, Profile("geometric", 1.0, ratio=0.9)), 0.9 ** np.arange(4))
    np.testing.assert_array_equal(feature_importance(3, (1.0, 0.5, 2.0), np.float32), np.float32([1, 0.5, 2]))
    np.testing.assert_allclose(feature_importance(3, Profile("zipf", 1.0)), [1, 1 / 2, 1 / 3])


def test_per_feature_probabilities_give_their_firing_rates():
    F, n = 8, 4 * 20_000
    p = per_feature.values(Profile("zipf", 0.4, exponent=1.0), F)
    x = sample_inputs(TmsTarget(features=F, hidden=3), Data(probability=Profile("zipf", 0.4)), 4, 20_000, rng(1))
    rates = np.mean(x != 0, axis=(0, 1))
    for i in range(F):
        assert within_binomial(rates[i], p[i], n), (i, rates[i], p[i])
    # independent features: the all-zero rate is prod(1 - p_i)
    assert within_binomial(np.mean(np.all(x == 0, -1)), np.prod(1 - p), n)
    assert within_binomial(1 - np.mean(np.all(x == 0, -1)), nonzero_fraction(Data(probability=Profile("zipf", 0.4)), F), n)


def test_anticorrelated_groups_never_cofire_and_keep_their_rates():
    F, I, B = 6, 4, 20_000
    n = I * B
    p = (0.3, 0.2, 0.1, 0.05, 0.05, 0.4)
    data = Data(probability=p, anticorrelated=((0, 1, 2),), synced=((3, 4),), values=(0.0, 1.0))
    x = sample_inputs(TmsTarget(features=F, hidden=2), data, I, B, rng(2), np.float64)
    on = x != 0
    assert on[..., :3].sum(-1).max() == 1  # at most one member of the group, ever
    for i in (0, 1, 2, 5):
        assert within_binomial(on[..., i].mean(), p[i], n), (i, on[..., i].mean())
    assert within_binomial(np.mean(~on[..., :3].any(-1)), 1 - 0.6, n)  # silent group: 1 - sum p
    assert np.array_equal(on[..., 3], on[..., 4])  # synced: together
    assert within_binomial(on[..., 3].mean(), 1 - 0.95 ** 2, n)
    vals = x[..., 0][on[..., 0]]
    assert vals.min() >= 0 and vals.max() < 1 and abs(vals.mean() - 0.5) < 0.01  # still U[0, 1)
    # the group's firing does not depend on the independent feature 5
    both = np.mean(on[..., 0] & on[..., 5])
    assert within_binomial(both, 0.3 * 0.4, n)
    active = on.sum(-1).mean()
    assert abs(active - mean_active(data, F)) < 5 * np.sqrt(on.sum(-1).var() / n)
    assert within_binomial(1 - np.mean(~on.any(-1)), nonzero_fraction(data, F), n)


def test_an_anticorrelated_pair_with_probabilities_summing_to_one_always_fires_one():
    x = sample_inputs(TmsTarget(features=3, hidden=2), Data(probability=(0.5, 0.5, 0.1), anticorrelated=((0, 1),)),
                      1, 5000, rng(4))
    on = x[..., :2] != 0
    assert np.all(on.sum(-1) == 1)


def test_exactly_n_active_exists_and_is_exact():
    """exactly-n active features: `mode = exactly_n_active(n)`, n distinct features per sample."""
    x = sample_inputs(TmsTarget(features=7, hidden=2), Data(mode="exactly_n_active", n_active=3), 2, 3000, rng(9))
    assert np.all((x != 0).sum(-1) == 3)
    for i in range(7):
        assert within_binomial(np.mean(x[..., i] != 0), 3 / 7, 6000)


# -- validation of the new settings (the language tests check where the errors point)


def _issues(**data):
    exp = resolve(Experiment(target=TmsTarget(features=5, hidden=2), data=Data(**data)))
    return [(i.path, i.message) for i in validate(exp)]


def test_validate_per_feature_and_group_settings():
    assert _issues(probability=(0.1, 0.2, 0.3, 0.4, 0.5)) == []
    assert _issues(probability=(0.1, 0.2)) == [("data.probability", "2 values for a target with 5 features: a "
                                                                      "per-feature list has one value per feature")]
    assert _issues(probability=(0.1, 0.2, 0.3, 0.4, 0.0))[0][1] == "p_4 (feature 4) must be in (0, 1], got 0"
    assert _issues(probability=Profile("zipf", 2.0))[0][1] == "p_0 (feature 0) must be in (0, 1], got 2"
    assert _issues(probability=(0.6, 0.5, 0.1, 0.1, 0.1), anticorrelated=((0, 1),))[0][0] == "data.anticorrelated"
    assert _issues(anticorrelated=((0, 1),), synced=((1, 2),))[0] == (
        "data.anticorrelated", "feature 1 is in two groups (synced and anticorrelated)")
    assert _issues(anticorrelated=((0, 7),))[0][1].startswith("feature index 7 is out of range")
    assert _issues(mode="exactly_n_active", probability=(0.1,) * 5)[0][0] == "data.probability"
    assert _issues(mode="exactly_n_active", anticorrelated=((0, 1),))[0] == (
        "data.anticorrelated", "anticorrelated groups apply to at_least_zero_active data only")
    exp = resolve(Experiment(target=TmsTarget(features=5, hidden=2), train=Training(importance=(1.0, 0.5))))
    assert [i.path for i in validate(exp)] == ["train.importance"]
    exp = resolve(Experiment(target=TmsTarget(features=5, hidden=2), train=Training(importance=-0.5)))
    assert [i.path for i in validate(exp)] == ["train.importance"]
    gated = resolve(Experiment(target=GatedTarget(), data=Data(anticorrelated=((0, 1),))))
    assert "data.anticorrelated" in [i.path for i in validate(gated)]

"""Target training (notes §1.1, §1.2) and evaluation."""
import dataclasses

import numpy as np
import pytest

from runtime.engine import models
from runtime.engine.data import sample_inputs
from runtime.targets.gated.model import build_gated
from runtime.engine.seeding import stream
from runtime.spec import Data, Experiment, Optimizer, Schedule, Training, resolve
from runtime import GatedTarget, ResidMlpTarget, TmsTarget
from runtime.engine.train_target import evaluate_target, replicate_loss, train_target


def tms_exp(replicates=2, steps=5, batch=256, **train):
    t = Training(steps=steps, batch=batch, log_every=train.pop("log_every", 1), **train)
    return resolve(Experiment(replicates=replicates, target=TmsTarget(features=5, hidden=2), train=t,
                              data=Data(probability=0.1)))


def resid_exp(steps=5, **kw):
    arch = ResidMlpTarget(features=6, d_embed=10, d_mlp=4, **kw)
    t = Training(steps=steps, batch=64, optimizer=Optimizer(name="adamw", lr=3e-3, weight_decay=0.01),
                 schedule=Schedule(kind="cosine"), log_every=1)
    return resolve(Experiment(replicates=2, target=arch, train=t, data=Data(probability=0.3)))


def fixed_batch_loss(exp, params, seed=123):
    arch = exp.target
    x = sample_inputs(arch, exp.data, exp.replicates, 512, np.random.default_rng(seed), np.float32)
    from runtime.engine.data import label_coefficients, labels_for

    labels = labels_for(arch, exp.train, x, label_coefficients(arch, exp.train, exp.replicates))
    return np.asarray(replicate_loss(arch, params, x, labels, 1.0))


def test_tms_few_steps_reduce_the_loss():
    exp = tms_exp(steps=5, optimizer=Optimizer(name="adamw", lr=1e-2, weight_decay=0.01))
    p0 = models.init_target(exp.target, 2, stream(0, "target_init"))
    before = {k: v.copy() for k, v in p0.items()}
    p, hist = train_target(exp, exp.target, p0, stream(0, "target_data"))
    assert np.all(fixed_batch_loss(exp, p) < fixed_batch_loss(exp, p0))
    for k in p0:  # inputs untouched, outputs changed and still float32
        np.testing.assert_array_equal(p0[k], before[k])
        assert p[k].dtype == np.float32 and not np.array_equal(p[k], p0[k])


@pytest.mark.parametrize("kw", [{}, {"in_bias": True, "out_bias": True, "layers": 2, "activation": "gelu"}])
def test_resid_few_steps_reduce_the_loss_and_keep_embeddings_fixed(kw):
    exp = resid_exp(steps=10, **kw)
    p0 = models.init_target(exp.target, 2, stream(0, "target_init"))
    p, hist = train_target(exp, exp.target, p0, stream(0, "target_data"))
    np.testing.assert_array_equal(p["W_E"], p0["W_E"])
    np.testing.assert_array_equal(p["W_U"], p0["W_U"])
    assert np.all(fixed_batch_loss(exp, p) < fixed_batch_loss(exp, p0))
    for name in models.trainable_target_params(exp.target):
        assert p[name].dtype == np.float32
        assert not np.array_equal(p[name], p0[name])


def test_tms_5_2_short_run_learns():
    exp = tms_exp(steps=1500, batch=256, log_every=500)  # spec defaults: AdamW 5e-3, wd 0.01, linear
    exp = dataclasses.replace(exp, data=Data(probability=0.05, values=(0.0, 1.0)))
    p0 = models.init_target(exp.target, 2, stream(0, "target_init"))
    logged = []
    p, hist = train_target(exp, exp.target, p0, stream(0, "target_data"), log=lambda s, e: logged.append(s))
    assert logged == [0, 500, 1000, 1499] == [h["step"] for h in hist]
    assert hist[0]["lr"] == pytest.approx(5e-3) and hist[-1]["lr"] == pytest.approx(5e-3 / 1500)
    initial = evaluate_target(exp, exp.target, p0, stream(0, "eval"))
    final = evaluate_target(exp, exp.target, p, stream(0, "eval"))
    assert final.shape == (2,)
    assert np.all(final < 0.35 * initial)
    assert np.all(np.array(hist[-1]["loss"]) < 0.35 * np.array(hist[0]["loss"]))


def test_replicates_are_exactly_independent_runs():
    exp = tms_exp(steps=20)
    p0 = models.init_target(exp.target, 2, stream(0, "target_init"))
    q0 = {k: v.copy() for k, v in p0.items()}
    q0["W"][1] *= -3.0  # change only replicate 1
    p, hp = train_target(exp, exp.target, p0, stream(0, "target_data"))
    q, hq = train_target(exp, exp.target, q0, stream(0, "target_data"))
    for k in p:
        np.testing.assert_array_equal(p[k][0], q[k][0])
    assert hp[-1]["loss"][0] == hq[-1]["loss"][0] and hp[-1]["loss"][1] != hq[-1]["loss"][1]


def test_schedule_and_history_entries():
    exp = tms_exp(steps=10, log_every=4, schedule=Schedule(kind="constant", warmup=0.2))
    p0 = models.init_target(exp.target, 2, stream(0, "target_init"))
    _, hist = train_target(exp, exp.target, p0, stream(0, "target_data"))
    assert [h["step"] for h in hist] == [0, 4, 8, 9]
    assert hist[0]["lr"] == 0.0 and hist[1]["lr"] == pytest.approx(5e-3)
    for h in hist:
        assert len(h["loss"]) == 2 and h["loss_mean"] == pytest.approx(np.mean(h["loss"]))


def test_importance_weights_the_loss():
    exp = tms_exp(steps=1, importance=0.0)
    arch = exp.target
    p = models.init_target(arch, 2, stream(0, "target_init"))
    x = sample_inputs(arch, exp.data, 2, 64, np.random.default_rng(0))
    full = np.asarray(replicate_loss(arch, p, x, x, np.ones(5, np.float32)))
    first = np.asarray(replicate_loss(arch, p, x, x, np.array([1, 0, 0, 0, 0], np.float32)))
    y = models.target_forward(arch, p, x).y
    np.testing.assert_allclose(first, np.mean(((np.abs(x) - y) ** 2)[..., :1], axis=(1, 2)) / 5, rtol=1e-6)
    assert np.all(first < full)


def test_float64_training_and_gated_refused():
    exp = dataclasses.replace(tms_exp(steps=3), dtype="float64")
    p0 = models.init_target(exp.target, 2, stream(0, "target_init"), np.float64)
    p, _ = train_target(exp, exp.target, p0, stream(0, "target_data"))
    assert all(v.dtype == np.float64 for v in p.values())
    g = resolve(Experiment(target=GatedTarget()))
    with pytest.raises(ValueError, match="hand-coded"):
        train_target(g, g.target, {}, stream(0, "target_data"))


def test_evaluate_gated_against_true_labels():
    arch = GatedTarget(functions=3, neurons=10, layers=1)
    exp = resolve(Experiment(replicates=2, target=arch, data=Data(probability=0.5)))
    params, extras = build_gated(arch, 2, stream(0, "gated_functions"), stream(0, "gated_permutation"), np.float64)
    mse = evaluate_target(exp, arch, params, stream(0, "eval"), batches=2, extras=extras, batch=500)
    assert mse.shape == (2,) and np.all(mse > 0) and np.all(mse < 5e-3)
    broken = dict(params, **{"layers.0.W_out": params["layers.0.W_out"] * 2})
    assert np.all(evaluate_target(exp, arch, broken, stream(0, "eval"), batches=2, extras=extras, batch=500) > 10 * mse)
    with pytest.raises(ValueError, match="extras"):
        evaluate_target(exp, arch, params, stream(0, "eval"))

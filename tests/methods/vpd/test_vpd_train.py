"""The VPD trainer (runtime/methods/vpd/train.py): row draws, clipping, a short end-to-end run on a
hand-made TMS 5-2 target, and resume from `state()` bit for bit."""
import copy
import dataclasses

import numpy as np
import pytest

from runtime.engine import seeding
from runtime.engine.data import sample_inputs
from runtime.methods.vpd import VpdDecomposition, VpdTrainer
from runtime.methods.vpd.model import draw_rows
from runtime.methods.vpd.train import CI_ACTIVE, clip_per_replicate
from runtime import Data, TmsTarget
from vpd_cases import ARCHS, SMALL, case, run_exp, tms_pentagon, vpd

TMS = TmsTarget(5, 2)


def make_trainer(run, seed: int = 0, target=None):
    """`run`: an Experiment (vpd_cases.run_exp) on TMS 5-2; a hand-made pentagon target."""
    rng = np.random.default_rng(seed)
    sample = lambda B: sample_inputs(TMS, Data(), run.replicates, B, rng, np.dtype(run.dtype))
    target = tms_pentagon(dtype=np.dtype(run.dtype)) if target is None else target
    target = {k: np.repeat(v, run.replicates, axis=0) for k, v in target.items()}
    return VpdTrainer(run, TMS, target, sample, np.random.default_rng(seed + 100)), rng


# ------------------------------------------------------------------------------------------
# Pieces


def test_draw_rows_distribution():
    c = case("tms_id")  # 3 sites
    m = c.model
    d = draw_rows(m, np.random.default_rng(0), 2, 30_000, 0.3, np.float32)
    assert abs(d.adversarial.mean() - 0.3) < 0.01
    routed = np.stack([d.routes[n] for n in m.names], axis=-1)  # (I, B, 3)
    k = routed.sum(axis=-1)
    assert k.min() == 1 and k.max() == 3
    assert np.allclose(np.bincount(k.ravel())[1:] / k.size, 1 / 3, atol=0.01)  # k ~ U{1, 2, 3}
    assert np.allclose(routed.mean(axis=(0, 1)), 2 / 3, atol=0.01)  # each site masked with P = E[k] / 3
    single = routed[k == 1]
    assert np.allclose(single.mean(axis=0), 1 / 3, atol=0.02)  # a 1-subset is uniform over the sites
    assert all(v.dtype == np.float32 and v.shape == (2, 30_000, m.channels(n)) and v.min() >= 0 and v.max() < 1
               for n, v in d.stochastic.items())
    every = draw_rows(type(m)(m.arch, m.target, vpd(SMALL, routing="all")),
                      np.random.default_rng(0), 1, 50, 0.5, np.float64)
    assert all(v.all() for v in every.routes.values())


def test_clip_per_replicate():
    g = {"a": np.array([[3.0, 0.0], [0.3, 0.0]]), "b": np.array([[[4.0]], [[0.4]]])}
    norms = clip_per_replicate(g, 1.0)
    assert np.allclose(norms, [5.0, 0.5])
    assert np.allclose(g["a"], [[3.0 / (5 + 1e-6), 0.0], [0.3, 0.0]]) and np.allclose(g["b"][:, 0, 0], [4 / (5 + 1e-6), 0.4])
    h = {"a": np.array([[3.0, 4.0]])}
    assert np.allclose(clip_per_replicate(h, None), [5.0]) and np.array_equal(h["a"], [[3.0, 4.0]])


# ------------------------------------------------------------------------------------------
# Training


def snapshot(trainer, rng):
    arrays, scalars = trainer.state()
    return {k: v.copy() for k, v in arrays.items()}, copy.deepcopy(scalars), seeding.rng_state(rng)


def test_resume_is_bit_identical():
    st = vpd(SMALL, C=4, ci_hidden=(6,), faithfulness_warmup_steps=5, source_warmup=0.2)
    run = run_exp(st, steps=12, batch=32, replicates=2, seed=7, dtype="float32")
    a, rng_a = make_trainer(run)
    records = []
    for step in range(run.decompose.steps + 1):
        if step == 5:
            saved = snapshot(a, rng_a)
        records.append(a.step()[1])
    b, rng_b = make_trainer(run, seed=1)  # another init and data stream: the state replaces them
    arrays, scalars, rng_state = saved
    b.restore(arrays, scalars)
    seeding.set_rng_state(rng_b, rng_state)
    resumed = [b.step()[1] for _ in range(5, run.decompose.steps + 1)]
    final_a, final_b = a.state(), b.state()
    assert final_a[1] == final_b[1] and set(final_a[0]) == set(final_b[0])
    for k, v in final_a[0].items():
        assert v.dtype == np.float32 and np.array_equal(v, final_b[0][k]), k
    for ra, rb in zip(records[5:], resumed):
        assert ra.keys() == rb.keys() and all(np.array_equal(ra[k], rb[k]) for k in ra)
    assert {"src.W", "src_m.W.T", "adam_m.W.V", "adam_v.W.T.ci.w0", "comp.W.ci.b1"} <= set(final_a[0])


def test_last_step_only_evaluates():
    run = run_exp(SMALL, steps=2, batch=8, dtype="float32")
    t, _ = make_trainer(run)
    t.step(), t.step()
    before = {k: v.copy() for k, v in t.state()[0].items()}
    lr, record = t.step()
    assert lr == 0.0 and "total" in record and "ppgd_recon" not in record and "grad_norm" not in record
    assert all(np.array_equal(v, before[k]) for k, v in t.state()[0].items())


def test_step_record_and_mask_stats():
    run = run_exp(vpd(SMALL, faithfulness_warmup_steps=3), steps=10, batch=16, replicates=2, dtype="float32")
    t, _ = make_trainer(run)
    seen = []
    inner = t.sample
    t.sample = lambda B: seen.append(inner(B)) or seen[-1]
    comps = {k: v.copy() for k, v in t.comps.items()}
    lr, record = t.step()
    assert lr == pytest.approx(1e-3)
    expected = {"warmup_faithfulness", "ppgd_recon", "faithfulness", "reconstruction", "recon_adversarial",
                "recon_stochastic", "importance_minimality", "frequency", "total", "adv_rows", "g", "source_lr",
                "grad_norm", "ci_grad_norm"}
    assert set(record) == expected and all(np.shape(v) == (2,) for v in record.values())
    L = run.decompose.loss
    total = (record["faithfulness"] + record["reconstruction"] + L.importance_minimality * record["importance_minimality"]
             + L.frequency * record["frequency"])
    assert np.allclose(record["total"], total, rtol=1e-6)
    assert record["source_lr"][0] == 0.0 and record["g"][0] == 1.0  # step 0 of the schedules
    # ci_l0 from the CI of the batch the step drew, with the warmed-up (pre-update) parameters
    x = seen[0]
    t2, _ = make_trainer(run)
    t2.comps.update({k: v.copy() for k, v in comps.items()})
    t2.faithfulness_warmup()  # only V, U change: the CI MLPs are the step's
    ci = t2.model.ci(t2.comps, t2.model.clean(x).pre)[0]
    active = sum((np.asarray(v) > CI_ACTIVE).sum(axis=-1) for v in ci.values())
    nz = np.any(x != 0, axis=-1)
    assert np.allclose(t.problem.mask_stats()["ci_l0"], (active * nz).sum(axis=1) / nz.sum(axis=1))


def test_non_finite_is_reported():
    run = run_exp(SMALL, steps=3, batch=8, dtype="float32")
    bad = tms_pentagon()
    bad["b"][0, 0] = np.nan
    t, _ = make_trainer(run, target=bad)
    with pytest.raises(FloatingPointError, match="replicate 0.*step 0"):
        t.step()


def fixed_objective(trainer, comps, x, sources, draws):
    """The loss at the run's final coefficients (g at its end value) on a fixed batch and draws."""
    problem = trainer.problem
    coef = problem.coefficients(trainer.dec.steps - 1)
    terms, _ = problem.terms(comps, sources, x, trainer.model.clean(x), draws, coef)
    return {k: np.asarray(v) for k, v in terms.items()}, coef


def test_end_to_end_tms_5_2_loss_decreases():
    st = vpd(C=10, ci_hidden=(20,))  # the authors' toy settings otherwise
    run = run_exp(st, steps=300, batch=128, seed=3, dtype="float32")
    t, _ = make_trainer(run)
    lr, first = t.step()
    assert first["warmup_faithfulness"][0] < 1e-4  # 200 AdamW steps fit V U to W
    start = {k: v.copy() for k, v in t.comps.items()}
    l0_start = t.problem.mask_stats()["ci_l0"][0]
    for _ in range(run.decompose.steps):
        lr, record = t.step()
    rng = np.random.default_rng(9)
    x = sample_inputs(TMS, Data(), 1, 1024, rng, np.float32)
    draws = draw_rows(t.model, rng, 1, 1024, 0.5, np.float32)
    sources = {n: rng.random((1, 1024, t.model.channels(n)), dtype=np.float32) for n in t.model.names}
    before, coef = fixed_objective(t, start, x, sources, draws)
    after, _ = fixed_objective(t, t.comps, x, sources, draws)
    total = lambda terms: sum(coef[k] * v for k, v in terms.items())[0]
    assert total(after) < 0.5 * total(before)
    assert after["importance_minimality"][0] < before["importance_minimality"][0]
    assert after["faithfulness"][0] < 1e-3 and after["reconstruction"][0] < 0.02
    assert t.problem.mask_stats()["ci_l0"][0] < l0_start


def test_decomposition_result():
    c = case("tms_id")
    d = VpdDecomposition(ARCHS["tms_id"], 3, None, c.comps, [])
    V, U = d.components("hidden.0", replicate=1)
    assert V.shape == (2, 3) and U.shape == (3, 2) and np.array_equal(V, c.comps["hidden.0.V"][1])
    assert d.layer_names() == ["W", "hidden.0", "W.T"] and d.method == "vpd"
    assert VpdTrainer.result_cls is VpdDecomposition


def test_dropping_all_zero_rows_changes_nothing_but_rounding():
    """A step on the rows with a nonzero input (one all-zero row standing for the rest) gives the
    full batch's terms and gradients (float64, same draws): TMS makes all-zero rows inert."""
    run = run_exp(vpd(SMALL, C=4, ci_hidden=(5,)), steps=6, batch=64, replicates=2, seed=3)
    full, _ = make_trainer(run, seed=5)
    kept, _ = make_trainer(run, seed=5)
    full.compact = False
    assert kept.compact
    for step in range(4):
        _, a = full.step()
        _, b = kept.step()
        assert a.keys() == b.keys()
        for k in a:
            assert np.allclose(a[k], b[k], rtol=1e-10, atol=1e-14), (step, k)
    fa, ka = full.state()[0], kept.state()[0]
    for k in fa:
        assert np.allclose(fa[k], ka[k], rtol=1e-8, atol=1e-12), k

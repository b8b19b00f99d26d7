"""runtime/engine/grouped.py (masked bottleneck products, dense or per component) and the lazy
gradients of runtime/engine/kernels.py (GradParts: FastAdam and the unit-norm projection take them
without forming the sum), each against the plain definition. No wall-clock assertions."""

import numpy as np
import pytest
from autograd import grad

from apd_cases import ARCHS, inputs, wide_sparse_resid_case
from runtime.methods.apd import components as apd, fused, grouped
from runtime.methods.apd.train import LossProblem, Trainer, normalise_columns, project_gradients
from runtime.targets.resid_mlp.apd_kernels import ResidualPre
from runtime.engine.kernels import FastAdam, GradParts
from runtime.engine.models import random_params, target_forward
from runtime.engine.optim import Adam
from runtime.spec import Decompose, Experiment, Optimizer
from runtime import ApdLosses as Losses, TopK

FORMS = ["dense", "grouped"]


@pytest.fixture(autouse=True)
def lazy_everywhere(monkeypatch):
    """The small test models take the lazy-gradient paths the runtime uses for large factors
    (tests/test_fused.py runs them with the default threshold: plain arrays)."""
    monkeypatch.setattr(fused, "LAZY_MIN_SIZE", 0)


@pytest.fixture
def force(monkeypatch):
    def set_form(form):
        monkeypatch.setattr(grouped.Grouped, "dense_is_cheaper", lambda self, d: form == "dense")

    return set_form


def random_mask(rng, R, C, p=0.3):
    mask = rng.uniform(size=(R, C)) < p
    mask[0, :] = True  # a sample with every component
    mask[:, 1] = False  # a component with no active sample
    mask[1:, 2] = False  # a component with exactly one
    return mask


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("m", [1, 3])
def test_grouped_products_equal_their_definitions(form, m, force):
    force(form)
    rng = np.random.default_rng(0)
    R, C, d_in, d_out = 7, 5, 4, 6
    mask = random_mask(rng, R, C)
    G = grouped.Grouped(mask, m, np.float64)
    s = np.repeat(mask.astype(float), m, axis=1)  # (R, C m)
    X = rng.normal(size=(R, d_in))
    first = rng.normal(size=(d_in, C * m))
    second = rng.normal(size=(C * m, d_out))
    g_out = rng.normal(size=(R, d_out))
    up = G.first(X, first)  # pair form
    u = (X @ first) * s  # dense definition
    assert up.shape == (mask.sum(), m)
    np.testing.assert_allclose(G.dense(up), u, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(G.at_pairs(u), up, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(G.first(None, first, inner=X @ first), up, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(G.second(up, second), u @ second, rtol=1e-13, atol=1e-13)
    gp = G.grad_u(g_out, second)
    g_u = (g_out @ second.T) * s
    np.testing.assert_allclose(G.dense(gp), g_u, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(G.grad_second(up, g_out), u.T @ g_out, rtol=1e-13, atol=1e-13)
    out = np.full((d_in, C * m), np.nan)  # every entry is written, inactive components included
    np.testing.assert_allclose(G.grad_first(X, gp, out=out), X.T @ g_u, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(G.grad_input(gp, first), g_u @ first.T, rtol=1e-13, atol=1e-13)
    base_s, base_f = rng.normal(size=(C * m, d_out)), rng.normal(size=(d_in, C * m))
    np.testing.assert_allclose(G.grad_second(up, g_out, out=base_s.copy(), add=True), base_s + u.T @ g_out,
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(G.grad_first(X, gp, out=base_f.copy(), add=True), base_f + X.T @ g_u,
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(G.col_dots(up, gp), np.sum((X.T @ g_u) * first, axis=0), rtol=1e-12, atol=1e-13)


def test_cost_model_picks_per_component_for_wide_factors():
    mask = np.zeros((161, 130), dtype=bool)
    rng = np.random.default_rng(0)
    mask[rng.integers(0, 161, 327), rng.integers(0, 130, 327)] = True  # the residual MLP's ~327 pairs
    G = grouped.Grouped(mask, 50, np.float32)
    assert not G.dense_is_cheaper(1000)  # d_embed-wide factors: per component
    assert grouped.Grouped(mask, 1, np.float32).dense_is_cheaper(1000)  # rank 1: one GEMM


# ------------------------------------------------------------------------------------------
# The residual loss in either form against the plain autograd path


RESID = ["resid_1l", "resid_2l_bias", "resid_gelu_outact", "gated"]
LOSSES = Losses(faithfulness=1.0, minimality=1.0, act_recon=1.0, simplicity=10.0, simplicity_p=0.9)
C, M, I, B = 4, 2, 2, 9


def setup(name, seed=0, dtype=np.float64, unit_norm=False):
    arch = ARCHS[name]
    rng = np.random.default_rng(seed)
    target = random_params(arch, I, rng, dtype=dtype)
    comps = {k: rng.normal(0, 0.5, v.shape).astype(dtype)
             for k, v in apd.init_components(arch, C, M, I, 1.0, rng, dtype).items()}
    x = inputs(arch, I, B, rng, dtype)
    exp = Experiment(replicates=I, dtype=np.dtype(dtype).name, target=arch, train=None,
                     decompose=Decompose(components=C, rank=M, topk=TopK("batch", 1.5), loss=LOSSES, batch=B,
                                         unit_norm=unit_norm))
    return arch, target, comps, x, exp


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", RESID)
def test_residual_loss_equals_plain_in_both_forms(name, form, force):
    force(form)
    arch, target, comps, x, exp = setup(name, seed=21)
    fused_p, plain = LossProblem(exp, arch, target), LossProblem(exp, arch, target, fused=False)
    rec_f, rec_p = {}, {}
    g_f = fused_p.step_grads(comps, x, rec_f)  # the training path (precompute where it applies)
    g_p = plain.step_grads(comps, x, rec_p)
    for k in comps:
        np.testing.assert_allclose(g_f[k], g_p[k], rtol=1e-9, atol=1e-12, err_msg=k)
    for k in rec_p:
        np.testing.assert_allclose(rec_f[k], rec_p[k], rtol=1e-10, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("form", FORMS)
def test_wide_sparse_resid_model_in_both_forms(form, force):
    """Realistic shapes in miniature (sparse inputs, many components, few active pairs), the
    precompute's N = B_out W_U path for the last layer included."""
    force(form)
    exp, arch, target, comps, x = wide_sparse_resid_case(LOSSES)
    problem, plain = LossProblem(exp, arch, target), LossProblem(exp, arch, target, fused=False)
    assert problem.use_pre
    g_f = problem.step_grads(comps, x, {})
    g_p = plain.step_grads(comps, x, {})
    for k in comps:
        np.testing.assert_allclose(g_f[k], g_p[k], rtol=1e-9, atol=1e-13, err_msg=k)


# ------------------------------------------------------------------------------------------
# Lazy gradients


def parts_example(rng, dtype, axis, n_parts=2):
    X = rng.normal(size=(2, 5, 3)).astype(dtype)
    parts = [rng.normal(size=X.shape).astype(dtype) for _ in range(n_parts)]
    w = rng.normal(size=(2, 3 if axis == 1 else 5)).astype(dtype)
    return X, parts, w


@pytest.mark.parametrize("axis", [1, 2])
def test_grad_parts_materialise_and_sums(axis):
    rng = np.random.default_rng(1)
    X, parts, w = parts_example(rng, np.float64, axis)
    g = GradParts(parts, X=X, w=w, axis=axis)
    want = parts[0] + parts[1] + X * (w[:, None, :] if axis == 1 else w[:, :, None])
    np.testing.assert_allclose(g.materialise(), want, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-15)
    np.testing.assert_allclose(g.replicate_sums(), want.reshape(2, -1).sum(axis=1), rtol=1e-12)
    g.w[0, 0] = np.nan
    assert np.isnan(g.replicate_sums()[0]) and np.isfinite(g.replicate_sums()[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", [Optimizer("adam", 1e-3), Optimizer("adamw", 3e-3, 0.01), Optimizer("adam", 1e-2, 0.1)])
@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("n_parts", [1, 2, 3])
def test_fast_adam_sums_grad_parts_bitwise(dtype, cfg, axis, n_parts, monkeypatch):
    """FastAdam on a GradParts equals Adam on its materialised array, bit for bit."""
    import runtime.engine.kernels as K

    monkeypatch.setattr(K, "CHUNK", 7)  # row blocks of 2 (d1 = 3), ragged at the end
    rng = np.random.default_rng(2)
    X, _, _ = parts_example(rng, dtype, axis)
    p, q = {"a": X.copy()}, {"a": X.copy()}
    o1, o2 = Adam(p, cfg, folded=True), FastAdam(q, cfg)
    for t in range(3):
        _, parts, w = parts_example(rng, dtype, axis, n_parts)
        o1.step(p, {"a": GradParts(parts, X=p["a"], w=w, axis=axis).materialise()}, 1e-2)
        o2.step(q, {"a": GradParts(parts, X=q["a"], w=w, axis=axis)}, 1e-2)
        np.testing.assert_array_equal(p["a"], q["a"])
        np.testing.assert_array_equal(o1.v["a"], o2.v["a"])


@pytest.mark.parametrize("given", [False, True])
def test_grad_parts_projection_equals_projecting_the_array(given):
    rng = np.random.default_rng(3)
    X, parts, w = parts_example(rng, np.float64, 1)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    g = GradParts(parts, X=X, w=w.copy(), axis=1)
    if given:  # what the producer knows: <sum of parts, X> per column and ||X column||^2
        g.col_dots = np.einsum("idn,idn->in", parts[0] + parts[1], X)
        g.x_sq = np.einsum("idn,idn->in", X, X)
    dense = g.materialise()
    want = dense - np.einsum("idn,idn->in", dense, X)[:, None, :] * X
    g.project_columns(X)
    np.testing.assert_allclose(g.materialise(), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.einsum("idn,idn->in", g.materialise(), X), 0.0, atol=1e-13)


@pytest.mark.parametrize("name", ["resid_1l", "resid_2l_bias", "gated"])
def test_lazy_gradients_equal_eager_ones(name):
    """What Trainer consumes (GradParts, projected in place) equals the eager arrays projected."""
    arch, target, comps, x, exp = setup(name, seed=4, unit_norm=True)
    normalise_columns(comps, arch)
    eager, lazy = LossProblem(exp, arch, target), LossProblem(exp, arch, target)
    lazy.lazy_grads = True
    g_e = eager.step_grads(comps, x, {})
    g_l = lazy.step_grads(comps, x, {})
    assert any(isinstance(v, GradParts) for v in g_l.values())
    for k in comps:
        np.testing.assert_allclose(np.asarray(g_l[k]), g_e[k], rtol=1e-10, atol=1e-13, err_msg=k)
    project_gradients(g_e, comps, arch)
    project_gradients(g_l, comps, arch)
    for k in comps:
        np.testing.assert_allclose(np.asarray(g_l[k]), g_e[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_trainer_step_matches_eager_gradients():
    """Two trainers from the same state, one fed eager gradients: the same parameters after a step
    (up to rounding: the lazy projection reassociates the sums)."""
    arch, target, comps, x, exp = setup("resid_1l", seed=5, unit_norm=True)
    import dataclasses

    exp = dataclasses.replace(exp, decompose=dataclasses.replace(exp.decompose, steps=10))
    t1 = Trainer(exp, arch, target, lambda b: x, np.random.default_rng(0), {k: v.copy() for k, v in comps.items()})
    t2 = Trainer(exp, arch, target, lambda b: x, np.random.default_rng(0), {k: v.copy() for k, v in comps.items()})
    t2.problem.lazy_grads = False
    for _ in range(3):
        t1.step()
        t2.step()
    for k in comps:
        np.testing.assert_allclose(t1.comps[k], t2.comps[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_lazy_fused_gradient_matches_autograd_of_the_plain_loss():
    arch, target, comps, x, exp = setup("resid_2l_bias", seed=6)
    problem = LossProblem(exp, arch, target)
    problem.lazy_grads = True
    tgt = target_forward(arch, target, x)
    mask = problem.constant_mask(comps, x, tgt)
    g_plain = grad(lambda c: problem.loss(c, x, tgt, mask, {}))(comps)
    g = problem.value_and_grad(comps, x, tgt, {})
    for k in comps:
        np.testing.assert_allclose(np.asarray(g[k]), g_plain[k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert fused.applies(arch, LOSSES, TopK("batch", 1.5))


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("name", ["resid_1l", "resid_2l_bias", "resid_gelu_outact"])
def test_residual_precompute_and_step_for_rank_1_and_3(name, m):
    """The residual-MLP precompute (attributions sharing GEMMs with the loss; rank 1 takes broadcast
    products instead of batched GEMMs) and the training step against the plain definitions."""
    from runtime.methods.apd.attributions import gradient_attributions

    arch = ARCHS[name]
    rng = np.random.default_rng(31)
    target = random_params(arch, I, rng)
    comps = {k: rng.normal(0, 0.5, v.shape) for k, v in apd.init_components(arch, C, m, I, 1.0, rng, np.float64).items()}
    x = inputs(arch, I, 12, rng)
    tgt = target_forward(arch, target, x)
    pre = ResidualPre(arch, target, tgt, comps, C, m, x, np.float64)
    np.testing.assert_allclose(pre.attr, gradient_attributions(arch, target, tgt, comps, C), rtol=1e-10, atol=1e-12)
    exp = Experiment(replicates=I, dtype="float64", target=arch, train=None,
                     decompose=Decompose(components=C, rank=m, topk=TopK("batch", 1.5), loss=LOSSES, batch=12))
    g_f = LossProblem(exp, arch, target).step_grads(comps, x, {})
    g_p = LossProblem(exp, arch, target, fused=False).step_grads(comps, x, {})
    for k in comps:
        np.testing.assert_allclose(g_f[k], g_p[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("name", ["resid_1l", "resid_2l_bias", "gated"])
def test_trainer_norm_cache_is_what_a_fresh_pass_computes(name, monkeypatch):
    """The squared norms FastAdam sums while writing the parameters (kept for the next step's
    unit-norm and Schatten term) are bitwise those a fresh blocked pass gives: a run resumed from a
    checkpoint, which recomputes them, sees the same bits."""
    import dataclasses

    from runtime.engine.kernels import blocked_sq_norms

    import runtime.methods.apd.train as D

    monkeypatch.setattr(D, "CHUNK", 1)  # cache every factor (the runtime only caches factors of a block or more)
    arch, target, comps, x, exp = setup(name, seed=7, dtype=np.float32, unit_norm=name != "gated")
    exp = dataclasses.replace(exp, decompose=dataclasses.replace(exp.decompose, steps=10))
    tr = Trainer(exp, arch, target, lambda b: x, np.random.default_rng(0), comps)
    assert set(tr.norm_axes) == set(comps)
    for _ in range(3):
        tr.step()
        assert set(tr.sq_norms) == set(comps)
        for k, ax in tr.norm_axes.items():
            rows = tr.opt.block_rows(k, tr.comps[k].shape)
            np.testing.assert_array_equal(tr.sq_norms[k], blocked_sq_norms(tr.comps[k], ax, rows), err_msg=k)
            want = np.sum(tr.comps[k].astype(np.float64) ** 2, axis=ax)
            np.testing.assert_allclose(tr.sq_norms[k], want, rtol=1e-5, err_msg=k)


def test_normalise_columns_returns_the_new_norms():
    from runtime.engine.kernels import blocked_sq_norms

    arch, target, comps, x, exp = setup("resid_2l_bias", seed=8, dtype=np.float32)
    new = normalise_columns(comps, arch)
    for k, sq in new.items():
        np.testing.assert_array_equal(sq, blocked_sq_norms(comps[k], 1))
        np.testing.assert_allclose(sq, 1.0, rtol=1e-5)

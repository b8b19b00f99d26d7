"""Gradients of every VPD loss term against float64 central differences (runtime/methods/vpd/model.py,
sparsity.py, train.py), on TMS 5-2, TMS 5-2 with its hidden identity layer and a 1-layer residual
MLP, with fixed draws. The lower squashing's leak is 0 where the CI parameters are checked against
differences (its backward is then the clamp's derivative); with the leak on, the CI gradient is
checked against differences of the loss w.r.t. the lower CI itself, pulled back through the
hand-written backward and the CI MLP."""
import dataclasses

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad

from runtime.methods.vpd import sparsity
from runtime.engine.masks import make_masks, output_mse as mse
from runtime.methods.vpd.model import row_errors
from runtime.methods.vpd.squash import lower_leaky_vjp
from runtime.methods.vpd.train import VpdProblem
from vpd_cases import ARCHS, SMALL, case, fd_grad, rel_err, vpd

NO_LEAK = vpd(SMALL, lower_leak=0.0)
TOL = 1e-6  # relative error of a whole gradient array (a factor 2 or a sign is O(1))


def assert_grads(f, params, keys, analytic):
    fd = fd_grad(f, params, keys)
    for k in keys:
        assert np.linalg.norm(fd[k]) > 0 or np.linalg.norm(analytic[k]) == 0, k
        assert rel_err(analytic[k], fd[k]) < TOL, (k, rel_err(analytic[k], fd[k]))


def merged_recon(model, c, p, sources=None):
    ci_lower = model.ci(p, c.tgt.pre)[0]
    y = model.merged_output(p, c.x, ci_lower, c.sources if sources is None else sources, c.draws)
    return anp.sum(anp.mean(row_errors(y, c.tgt.y), axis=1))


@pytest.mark.parametrize("arch", ARCHS)
def test_faithfulness(arch):
    c = case(arch)
    f = lambda p: float(np.sum(c.model.faithfulness(p)))
    g = grad(lambda p: anp.sum(c.model.faithfulness(p)))(c.comps)
    assert_grads(f, c.comps, c.model.component_keys(), g)
    assert all(np.all(g[k] == 0) for k in c.model.ci_keys())


def test_faithfulness_value():
    c = case("tms_id")
    p = dict(c.comps)
    for name in c.model.names:  # V U = W / 2 exactly: relative error 1/4 on every site
        W = c.model.W[name]
        p[f"{name}.V"], p[f"{name}.U"] = W / 2, np.broadcast_to(np.eye(W.shape[2]), (2,) + (W.shape[2],) * 2)
    assert np.allclose(c.model.faithfulness(p), 0.25, rtol=1e-14)


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_recon_wrt_components_and_ci(arch):
    c = case(arch, NO_LEAK)
    assert c.draws.adversarial.any() and (~c.draws.adversarial).any()
    f = lambda p: float(merged_recon(c.model, c, p))
    g = grad(lambda p: merged_recon(c.model, c, p))(c.comps)
    assert_grads(f, c.comps, c.model.component_keys() + c.model.ci_keys(), g)


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_recon_wrt_sources(arch):
    c = case(arch)
    f = lambda s: float(merged_recon(c.model, c, c.comps, s))
    g = grad(lambda s: merged_recon(c.model, c, c.comps, s))(c.sources)
    assert_grads(f, c.sources, c.model.names, g)
    for name in c.model.names:  # only adversarial rows see the persistent sources
        assert np.all(g[name][~c.draws.adversarial] == 0)


@pytest.mark.parametrize("arch", ["tms", "resid"])
def test_ci_gradient_with_leak_follows_the_custom_backward(arch):
    c = case(arch)  # lower_leak 0.01
    model = c.model
    z = model.ci_preacts(c.comps, c.tgt.pre)
    assert any(np.any((v <= 0)) for v in z.values()) and any(np.any(v > 1) for v in z.values())
    ci0 = {k: np.clip(v, 0.0, 1.0) for k, v in z.items()}

    def recon_of_ci(ci_lower):
        y = model.merged_output(c.comps, c.x, ci_lower, c.sources, c.draws)
        return float(np.sum(np.mean(row_errors(y, c.tgt.y), axis=1)))

    d_ci = fd_grad(recon_of_ci, ci0, model.names)
    d_z = {k: lower_leaky_vjp(z[k], d_ci[k], model.ci_cfg.lower_leak) for k in model.names}
    expected = grad(lambda p: sum(anp.sum(v * d_z[k]) for k, v in model.ci_preacts(p, c.tgt.pre).items()))(c.comps)
    actual = grad(lambda p: merged_recon(model, c, p))(c.comps)
    leaked = sum(np.count_nonzero((z[k] <= 0) & (d_ci[k] < 0)) for k in model.names)
    assert leaked > 0  # the case where the leak matters occurs
    for k in model.ci_keys():
        assert rel_err(actual[k], expected[k]) < TOL, k


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("normalize", [False, True])
def test_sparsity_terms_wrt_ci(arch, normalize):
    c = case(arch, vpd(NO_LEAK, normalize_at_one=normalize))

    def terms(p):
        f = {k: sparsity.frequencies(v, 0.3, normalize) for k, v in c.model.ci(p, c.tgt.pre)[1].items()}
        return sparsity.activity(f), sparsity.frequency_penalty(f, 50.0)

    keys = c.model.component_keys() + c.model.ci_keys()
    for j in range(2):
        g = grad(lambda p: anp.sum(terms(p)[j]))(c.comps)
        assert_grads(lambda p: float(np.sum(terms(p)[j])), c.comps, keys, g)


@pytest.mark.parametrize("arch", ARCHS)
def test_warmup_ascent_objective_wrt_sources(arch):
    c = case(arch)
    ci_lower = {k: np.asarray(v) for k, v in c.model.ci(c.comps, c.tgt.pre)[0].items()}
    obj = lambda s: anp.sum(mse(c.model.adversarial_output(c.comps, c.x, ci_lower, s), c.tgt.y))
    assert_grads(lambda s: float(obj(s)), c.sources, c.model.names, grad(obj)(c.sources))


@pytest.mark.parametrize("arch", ["tms", "tms_id"])
def test_step_gradient_total_and_unscaled_source_gradient(arch):
    """VpdProblem.step_grads: the parameters get the gradient of the weighted total; the sources
    get the reconstruction's own gradient whatever its coefficient."""
    c = case(arch, NO_LEAK)
    problem = VpdProblem(c.model, steps=50)
    coef = {"faithfulness": 0.7, "reconstruction": 3.0, "importance_minimality": 0.2, "frequency": 0.05, "g": 0.4,
            "adv_fraction": 0.5}
    record = {}
    g_comps, g_src = problem.step_grads(c.comps, c.sources, c.x, c.tgt, c.draws, coef, record)

    def total(p):
        terms, _ = problem.terms(p, c.sources, c.x, c.tgt, c.draws, coef)
        return float(sum(np.sum(coef[k] * v) for k, v in terms.items()))

    assert total(c.comps) == pytest.approx(float(np.sum(record["total"])), rel=1e-13)
    assert_grads(total, c.comps, c.model.component_keys() + c.model.ci_keys(), g_comps)
    recon = lambda s: float(np.sum(problem.terms(c.comps, s, c.x, c.tgt, c.draws, coef)[0]["reconstruction"]))
    assert_grads(recon, c.sources, c.model.names, g_src)


def test_unrouted_and_unmasked_passes_are_the_target():
    c = case("tms_id")
    m, I, B = c.model, 2, c.x.shape[1]
    ones = {n: np.ones((I, B, m.C[n])) for n in m.names}
    full = {n: np.ones((I, B)) for n in m.names}
    assert np.allclose(m.masked_output(c.comps, c.x, ones, full), c.tgt.y, rtol=0, atol=1e-13)  # V U + Delta = W
    off = {n: np.zeros((I, B), dtype=bool) for n in m.names}
    junk = {n: np.zeros((I, B, m.C[n])) for n in m.names}
    assert np.array_equal(m.masked_output(c.comps, c.x, junk, full, off), c.tgt.y)  # frozen path, exactly


def test_merged_rows_match_their_own_passes():
    """An adversarial row is the all-sites pass with the persistent sources; a stochastic row the
    pass with its fresh sources on the sites it routes and the frozen W elsewhere."""
    c = case("tms_id", B=12)
    m = c.model
    ci = {k: np.asarray(v) for k, v in m.ci(c.comps, c.tgt.pre)[0].items()}
    y = m.merged_output(c.comps, c.x, ci, c.sources, c.draws)
    adv = c.draws.adversarial
    y_adv = m.adversarial_output(c.comps, c.x, ci, c.sources)
    assert np.allclose(y[adv], y_adv[adv], rtol=0, atol=1e-14)
    masks, deltas = {}, {}
    for n in m.names:
        masks[n], deltas[n] = make_masks(ci[n], c.draws.stochastic[n])
    y_sto = m.masked_output(c.comps, c.x, masks, deltas, c.draws.routes)
    assert np.allclose(y[~adv], y_sto[~adv], rtol=0, atol=1e-14)
    assert not np.allclose(y_adv[~adv], y_sto[~adv])  # (the two kinds of row do differ)


def test_no_delta_channel():
    """Without the delta channel the sources have C channels and an exact factorisation V U = W
    with all-ones masks is the target (TMS 5-2: both sites have rank 2 <= C = 3)."""
    c = case("tms", vpd(SMALL, delta_channel=False))
    m = c.model
    assert all(v.shape[-1] == 3 for v in c.sources.values()) and m.channels("W") == 3
    p = dict(c.comps)
    for n in m.names:
        A, S, Bt = np.linalg.svd(m.W[n], full_matrices=False)  # rank 2: (I, d_in, 2), (I, 2), (I, 2, d_out)
        p[f"{n}.V"] = np.concatenate([A * S[:, None, :], np.zeros(A.shape[:2] + (1,))], axis=2)
        p[f"{n}.U"] = np.concatenate([Bt, np.zeros((2, 1, Bt.shape[2]))], axis=1)
    ones = {n: np.ones(c.x.shape[:2] + (3,)) for n in m.names}
    assert np.allclose(m.masked_output(p, c.x, ones, None), c.tgt.y, rtol=0, atol=1e-13)
    f = lambda s: float(merged_recon(m, c, c.comps, s))
    assert_grads(f, c.sources, m.names, grad(lambda s: merged_recon(m, c, c.comps, s))(c.sources))


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fast_activation_primitive_against_its_autograd_definition(activation, dtype):
    """engine/gelu.act (fast blocks, derivative kept from the forward pass, blocked over BLOCK
    elements) against the autograd definition: values and gradients, float64 to 1e-12, float32 to
    float32 rounding; a shape of more than one block."""
    from runtime.engine import gelu as G

    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (3, G.BLOCK // 2 + 7, 2)).astype(dtype)  # > BLOCK elements, a ragged last block
    w = rng.normal(size=z.shape).astype(dtype)
    ref = G.activation_fn(activation)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    z64, w64 = z.astype(np.float64), w.astype(np.float64)  # the reference in float64 (its tanh VJP overflows in float32)
    assert np.max(np.abs(G.act(z, activation) - ref(z64))) < tol
    g_fast = grad(lambda u: anp.sum(G.act(u, activation) * w))(z)
    g_ref = grad(lambda u: anp.sum(ref(u) * w64))(z64)
    assert g_fast.dtype == dtype and np.max(np.abs(g_fast - g_ref)) < 10 * tol
    assert not G._DERIVATIVES or all(k != id(z) for k in G._DERIVATIVES)  # the kept derivative was used up


@pytest.mark.parametrize("delta", [True, False])
@pytest.mark.parametrize("routed", [True, False])
def test_site_kernel_against_its_autograd_definition(delta, routed):
    """site.site_output (one primitive, hand-written VJP) against site_plain: values and the
    gradients of every differentiable argument, float64."""
    from runtime.methods.vpd.site import site_output, site_plain

    rng = np.random.default_rng(1)
    I, B, d_in, d_out, C = 2, 9, 4, 3, 5
    a, V, U, W = (rng.normal(size=s) for s in ((I, B, d_in), (I, d_in, C), (I, C, d_out), (I, d_in, d_out)))
    ci, src = rng.uniform(size=(I, B, C)), rng.uniform(size=(I, B, C + int(delta)))
    route = rng.random((I, B)) < 0.6 if routed else None
    w = rng.normal(size=(I, B, d_out))
    args = [a, V, U, W, ci, src, route, delta]
    assert np.allclose(site_output(*args), site_plain(*args), rtol=0, atol=1e-13)
    for i in (0, 1, 2, 4, 5):
        def loss(f, v, i=i):
            return anp.sum(f(*args[:i], v, *args[i + 1:]) * w)
        g_fast, g_ref = grad(lambda v: loss(site_output, v))(args[i]), grad(lambda v: loss(site_plain, v))(args[i])
        assert g_fast.shape == args[i].shape and np.allclose(g_fast, g_ref, rtol=0, atol=1e-12), i


@pytest.mark.parametrize("widths", [(6,), (5, 4)])
def test_ci_mlp_kernel_against_its_autograd_definition(widths):
    """ci_mlp.ci_mlp (one primitive, kept activations) against ci_mlp_plain: values and gradients of
    every weight and bias (and the input), float64, one and two hidden layers."""
    from runtime.methods.vpd.ci_mlp import ci_mlp, ci_mlp_plain

    rng = np.random.default_rng(2)
    I, B, d_in, C = 2, 11, 3, 4
    dims = (d_in,) + widths + (C,)
    wb = []
    for fi, fo in zip(dims, dims[1:]):
        wb += [rng.normal(size=(I, fi, fo)), rng.normal(size=(I, fo))]
    a, w = rng.normal(size=(I, B, d_in)), rng.normal(size=(I, B, C))
    assert np.allclose(ci_mlp(a, "gelu", *wb), ci_mlp_plain(a, "gelu", *wb), rtol=0, atol=1e-12)
    args = [a] + wb
    for i in range(len(args)):
        def loss(f, v, i=i):
            full = args[:i] + [v] + args[i + 1:]
            return anp.sum(f(full[0], "gelu", *full[1:]) * w)
        g_fast, g_ref = grad(lambda v: loss(ci_mlp, v))(args[i]), grad(lambda v: loss(ci_mlp_plain, v))(args[i])
        assert np.allclose(g_fast, g_ref, rtol=0, atol=1e-10), i


def test_upper_squash_primitive_against_its_definition():
    from runtime.methods.vpd.squash import upper_leaky, upper_leaky_plain

    z = np.random.default_rng(3).normal(0.5, 1.0, 200)
    w = np.random.default_rng(4).normal(size=200)
    assert np.array_equal(upper_leaky(z, 0.01), upper_leaky_plain(z, 0.01))
    assert np.allclose(grad(lambda u: anp.sum(upper_leaky(u, 0.01) * w))(z),
                       grad(lambda u: anp.sum(upper_leaky_plain(u, 0.01) * w))(z), rtol=0, atol=1e-15)

"""SPD engine (runtime/engine/ci.py, spd.py, spd_train.py): the leaky sigmoids, the causal-importance
kernel against its autograd definition, every loss term against hand-computed values and an
independent per-sample implementation, and the whole loss's gradient against float64 finite
differences (fixed mask noise), with and without the fused kernel and the zero-row compaction."""
import dataclasses
import math

import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads
from scipy.special import erf

from apd_cases import ARCHS, inputs
from runtime.methods.spd import ci, model as spd
from runtime.targets.resid_mlp.spd_kernels import Resid1View
from runtime.engine.models import random_params, target_forward
from runtime.engine.rows import compact_index
from runtime.methods.spd.train import SpdProblem
from runtime.spec import Decompose, Experiment
from runtime import CausalImportance, SpdLosses as Losses, ResidMlpTarget, TmsTarget


def sigma_lower_ref(x, leak):
    return np.where(x < 0, leak * x, np.where(x > 1, 1.0, x))


def sigma_upper_ref(x, leak):
    return np.where(x < 0, 0.0, np.where(x > 1, 1.0 + leak * (x - 1.0), x))


# ------------------------------------------------------------------------------------------
# Leaky hard sigmoids


def test_leaky_sigmoids_values():
    x = np.array([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5, 3.0])
    assert np.allclose(ci.sigma_lower(x, 0.01), [-0.02, -0.005, 0.0, 0.3, 1.0, 1.0, 1.0])
    assert np.allclose(ci.sigma_upper(x, 0.01), [0.0, 0.0, 0.0, 0.3, 1.0, 1.005, 1.02])
    assert np.allclose(ci.sigma_lower(x, 0.0), np.clip(x, 0, 1))


def test_leaky_sigmoid_derivatives():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, 200)
    x = x[(np.abs(x) > 1e-3) & (np.abs(x - 1) > 1e-3)]  # away from the kinks
    eps = 1e-6
    for f, ref in ((ci.sigma_lower, sigma_lower_ref), (ci.sigma_upper, sigma_upper_ref)):
        g = grad(lambda v: np.sum(f(v, 0.05) * np.arange(v.size)))(x)
        fd = (ref(x + eps, 0.05) - ref(x - eps, 0.05)) / (2 * eps) * np.arange(x.size)
        assert np.allclose(g, fd, atol=1e-8)
    # kinks: the inner branch (derivative 1) at x = 0 and x = 1
    k = np.array([0.0, 1.0])
    assert np.array_equal(ci.sigma_lower_grad(k, 0.01), [1.0, 1.0])
    assert np.array_equal(ci.sigma_upper_grad(k, 0.01), [1.0, 1.0])
    assert np.array_equal(ci.sigma_lower_grad(np.array([-1.0, 2.0]), 0.01), [0.01, 0.0])
    assert np.array_equal(ci.sigma_upper_grad(np.array([-1.0, 2.0]), 0.01), [0.0, 0.01])


def test_sigmoids_keep_float32():
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    assert ci.sigma_lower(x, 0.01).dtype == np.float32 and ci.sigma_upper(x, 0.01).dtype == np.float32


# ------------------------------------------------------------------------------------------
# Activation blocks


def _exact(z):
    z = np.asarray(z, dtype=np.float64)
    Phi = 0.5 * (1 + erf(z / math.sqrt(2)))
    return z * Phi, Phi + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def _run_block(block, z):
    g, p, a, t = (np.empty_like(z) for _ in range(4))
    block(z.copy(), g, p, a, t)
    return g, p


def test_fast_gelu_is_exact_to_float32_rounding():
    z = np.concatenate([np.linspace(-12, 12, 40001), [0.0, -0.0, 1e-30, -1e-30, 5e-8]]).astype(np.float32)
    g, p = _run_block(ci.gelu_block_fast, z)
    G, P = _exact(z)
    # Phi to 7.5e-8 (A&S 7.1.26: 1.5e-7 in erf); G = z Phi then to |z| x that, plus float32 rounding
    assert np.all(np.abs(g - G) <= 2e-7 * np.maximum(np.abs(z), 1) + 1e-7 * np.abs(G))
    assert np.max(np.abs(p - P)) < 3e-7
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(p))


def test_exact_gelu_block_float64():
    z = np.linspace(-9, 9, 1001)
    g, p = _run_block(ci.gelu_block_exact, z)
    G, P = _exact(z)
    assert np.allclose(g, G, atol=1e-15) and np.allclose(p, P, atol=1e-15)


def test_tanh_gelu_block_against_autograd():
    z = np.linspace(-7, 7, 1001)
    g, p = _run_block(ci.gelu_tanh_block, z)
    assert np.allclose(g, ci.gelu_tanh(z), atol=1e-14)
    from autograd import elementwise_grad

    assert np.allclose(p, elementwise_grad(ci.gelu_tanh)(z), atol=1e-13)


# ------------------------------------------------------------------------------------------
# The causal-importance kernel against its definition


def _ci_args(I=2, B=37, C=5, K=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    h = rng.normal(0, 1.5, (I, B, C))
    h[:, :3] = 0.0  # exact zeros (the zero rows of a batch)
    p = ci.init_ci(C, K, I, rng, np.float64)
    p["b_in"] = rng.normal(0, 0.5, (I, C, K))
    p["b_out"] = rng.normal(0, 0.5, (I, C))
    return tuple(np.asarray(v, dtype=dtype) for v in (h, p["w_in"], p["b_in"], p["w_out"], p["b_out"]))


@pytest.mark.parametrize("activation", ci.ACTIVATIONS)
@pytest.mark.parametrize("block", [24, 4 * 37 * 2, 1 << 16])  # batch blocks; 2 components a block; all at once
def test_kernel_equals_definition_float64(activation, block, monkeypatch):
    monkeypatch.setattr(ci, "BLOCK", block)
    args = _ci_args()
    k = ci.CIKernel(activation)
    assert np.allclose(ci.ci_mlp(k, *args), ci.ci_mlp_plain(*args, activation=activation), atol=1e-13)
    w = np.random.default_rng(1).normal(size=args[0].shape)
    for i in range(5):
        gf = grad(lambda *a: np.sum(ci.ci_mlp(k, *a) * w), i)(*args)
        gp = grad(lambda *a: np.sum(ci.ci_mlp_plain(*a, activation=activation) * w), i)(*args)
        assert np.allclose(gf, gp, atol=1e-12), i


def test_kernel_gradients_against_finite_differences():
    args = _ci_args(I=1, B=6, C=3, K=3, seed=2)
    k = ci.CIKernel("gelu")
    check_grads(lambda *a: ci.ci_mlp(k, *a), modes=["rev"], order=1)(*args)


def test_kernel_float32_against_float64_definition():
    a64 = _ci_args(I=2, B=300, C=7, K=16, seed=3)
    a32 = tuple(v.astype(np.float32) for v in a64)
    k = ci.CIKernel("gelu")
    out = ci.ci_mlp(k, *a32)
    assert out.dtype == np.float32
    ref = ci.ci_mlp_plain(*a64)
    assert np.max(np.abs(out - ref)) < 1e-5 * max(1.0, np.max(np.abs(ref)))
    w = np.random.default_rng(4).normal(size=ref.shape)
    for i in range(5):
        g32 = grad(lambda *a: np.sum(ci.ci_mlp(k, *a) * w.astype(np.float32)), i)(*a32)
        g64 = grad(lambda *a: np.sum(ci.ci_mlp_plain(*a) * w), i)(*a64)
        assert np.max(np.abs(g32 - g64)) < 2e-5 * max(1.0, np.max(np.abs(g64))), i


def test_kernel_backward_after_another_forward_recomputes():
    args = _ci_args()
    other = _ci_args(seed=9)
    k = ci.CIKernel("gelu")
    first = k.forward(*args)
    dg = np.random.default_rng(0).normal(size=first.shape)
    expected = k.backward(dg, first, *args)
    k.forward(*other)  # overwrites the stored arrays
    again = k.backward(dg, first, *args)
    for a, b in zip(expected, again):
        assert np.array_equal(a, b)


# ------------------------------------------------------------------------------------------
# The loss: hand-computed values


def _dc(**loss):
    base = dict(faithfulness=1.0, stochastic_recon=1.0, stochastic_recon_layerwise=1.0, importance_minimality=1.0,
                importance_minimality_p=1.0)
    return Decompose(method="spd", components=1, causal_importance=CausalImportance(hidden=1),
                     loss=Losses(**{**base, **loss}))


def test_losses_hand_computed():
    """TMS with 2 features, 1 hidden unit, no bias, W = [[1], [2]]; one subcomponent per matrix,
    V_W = [1, 1], U_W = [1]; V_WT = [1], U_WT = [1, 1]; the CI MLPs are constants (W_in = b_in = 0,
    so GELU(0) = 0 and gamma = b_out): 0.5 for W, 2 for W^T. One sample x = [1, 0], noise 0.2."""
    arch = TmsTarget(features=2, hidden=1, bias=False)
    target = {"W": np.array([[[1.0], [2.0]]]), "b": np.zeros((1, 2))}
    params = {"W.V": np.array([[[1.0], [1.0]]]), "W.U": np.array([[[1.0]]]),
              "W.T.V": np.array([[[1.0]]]), "W.T.U": np.array([[[1.0, 1.0]]])}
    for name, b_out in (("W", 0.5), ("W.T", 2.0)):
        params.update({f"{name}.ci.w_in": np.zeros((1, 1, 1)), f"{name}.ci.b_in": np.zeros((1, 1, 1)),
                       f"{name}.ci.w_out": np.ones((1, 1, 1)), f"{name}.ci.b_out": np.array([[b_out]])})
    x = np.array([[[1.0, 0.0]]])
    u = {"W": np.full((1, 1, 1, 1), 0.2), "W.T": np.full((1, 1, 1, 1), 0.7)}
    for fused in (False, True):
        loss = spd.SpdLoss(arch, target, _dc(), fused=fused)
        t = loss.terms(params, x, target_forward(arch, target, x), u)
        # faithfulness: (0 + 1 (W) + 0 + 1 (W^T)) / N, N = 2 F H = 4
        assert np.isclose(t["faithfulness"][0], 0.5)
        # importance: sigma_upper(0.5) + sigma_upper(2) = 0.5 + 1 + 0.01 (1) (+ 2 eps), one sample
        assert np.isclose(t["importance_minimality"][0], 1.51, atol=1e-10)
        # masks: W 0.5 + 0.5 x 0.2 = 0.6; W^T g = 1 so 1. Target output ReLU([1, 2]).
        # full: hidden 0.6, output [0.6, 0.6]: ((0.4)^2 + (1.4)^2) / 2 = 1.06
        assert np.isclose(t["stochastic_recon"][0], 1.06)
        # layerwise: W masked, W^T target: [0.6, 1.2] -> 0.4; W^T masked (mask 1): [1, 1] -> 0.5; / L
        assert np.isclose(t["stochastic_recon_layerwise"][0], 0.45)


def test_importance_p2_and_warmup():
    loss = spd.SpdLoss(TmsTarget(features=2, hidden=1), {}, _dc(importance_minimality=0.5,
                                                                  importance_minimality_p=2.0, importance_warmup=0.1))
    g = {"a": np.array([[[-1.0, 0.5, 3.0]]]), "b": np.array([[[0.2, 1.0, 0.0]]])}
    # (0 + 0.25 + 1.02^2 + 0.04 + 1 + 0), with eps = 1e-12 inside the square
    assert np.isclose(loss.importance(g, rows=1)[0], 0.25 + 1.02 ** 2 + 0.04 + 1.0, atol=1e-10)
    assert np.isclose(loss.importance(g, rows=4)[0], (0.25 + 1.02 ** 2 + 0.04 + 1.0) / 4, atol=1e-10)
    c = loss.coefficients
    assert c(0, 1000)["importance_minimality"] == 0.0
    assert np.isclose(c(50, 1000)["importance_minimality"], 0.25)
    assert c(100, 1000)["importance_minimality"] == 0.5 == c(999, 1000)["importance_minimality"]


# ------------------------------------------------------------------------------------------
# The loss: an independent per-sample implementation


def _per_sample_reference(arch, target, params, x, u, dc):
    """Every term by explicit loops: per sample, per draw, dense masked weights W' = sum_c m_c
    outer(V_c, U_c), the TMS forward written out."""
    from runtime.engine.models import layers_of

    I, B, _ = x.shape
    layers = layers_of(arch)
    L = dc.loss
    leak_lo, leak_up = dc.causal_importance.lower_leak, dc.causal_importance.upper_leak
    out = {k: np.zeros(I) for k in ("faithfulness", "importance_minimality", "stochastic_recon",
                                    "stochastic_recon_layerwise")}
    for i in range(I):
        Ws = {l.name: (target[l.param][i].T if l.transposed else target[l.param][i]) for l in layers}
        N = sum(W.size for W in Ws.values())
        for l in layers:
            Wsum = sum(np.outer(params[f"{l.name}.V"][i][:, c], params[f"{l.name}.U"][i][c])
                       for c in range(dc.components))
            out["faithfulness"][i] += np.sum((Wsum - Ws[l.name]) ** 2) / N

        def run(xb, mats):
            h = xb
            acts = {}
            for l in layers:
                acts[l.name] = h
                h = h @ mats[l.name]
            return np.maximum(h + target["b"][i], 0), acts

        for b in range(B):
            y_ref, acts = run(x[i, b], Ws)
            g = {}
            for l in layers:
                hc = acts[l.name] @ params[f"{l.name}.V"][i]
                w1, b1, w2, b2 = (params[f"{l.name}.ci.{k}"][i] for k in spd.CI_NAMES)
                graw = np.array([np.sum(w2[c] * np.asarray(ci.activation_fn("gelu")(w1[c] * hc[c] + b1[c]))) + b2[c]
                                 for c in range(dc.components)])
                out["importance_minimality"][i] += np.sum((sigma_upper_ref(graw, leak_up) + 1e-12)
                                                          ** L.importance_minimality_p) / B
                g[l.name] = sigma_lower_ref(graw, leak_lo)
            for s in range(dc.mask_samples):
                masked = {}
                for l in layers:
                    m = g[l.name] + (1 - g[l.name]) * u[l.name][s, i, b]
                    masked[l.name] = sum(m[c] * np.outer(params[f"{l.name}.V"][i][:, c], params[f"{l.name}.U"][i][c])
                                         for c in range(dc.components))
                y, _ = run(x[i, b], masked)
                out["stochastic_recon"][i] += np.mean((y - y_ref) ** 2) / (B * dc.mask_samples)
                for l in layers:
                    y, _ = run(x[i, b], {**Ws, l.name: masked[l.name]})
                    out["stochastic_recon_layerwise"][i] += np.mean((y - y_ref) ** 2) / (B * dc.mask_samples * len(layers))
    return out


@pytest.mark.parametrize("fused", [False, True])
def test_terms_equal_a_per_sample_implementation(fused):
    arch = TmsTarget(features=4, hidden=3, hidden_layers=1)
    rng = np.random.default_rng(5)
    I, B, C = 2, 7, 3
    dc = dataclasses.replace(_dc(importance_minimality_p=0.8), components=C, mask_samples=2,
                             causal_importance=CausalImportance(hidden=4, lower_leak=0.05, upper_leak=0.02))
    target = random_params(arch, I, rng)
    params = spd.init_spd(arch, C, 4, I, 1.0, rng, np.float64)
    params = {k: v + rng.normal(0, 0.3, v.shape) for k, v in params.items()}
    x = inputs(arch, I, B, rng)
    u = spd.draw_uniforms(arch, C, 2, I, B, rng, np.float64)
    t = spd.SpdLoss(arch, target, dc, fused=fused).terms(params, x, target_forward(arch, target, x), u)
    ref = _per_sample_reference(arch, target, params, x, u, dc)
    for k in ref:
        assert np.allclose(t[k], ref[k], rtol=1e-10, atol=1e-12), k


# ------------------------------------------------------------------------------------------
# Gradients of the whole loss against finite differences (float64, fixed noise)


def _setup(name, seed=0, C=3, K=3, S=1, **loss):
    rng = np.random.default_rng(seed)
    arch = ARCHS[name]
    I, B = 2, 9
    dc = dataclasses.replace(_dc(**{"importance_minimality": 0.3, "importance_minimality_p": 1.5, **loss}),
                             components=C, mask_samples=S, causal_importance=CausalImportance(hidden=K))
    exp = Experiment(replicates=I, dtype="float64", target=arch, train=None,
                     decompose=dataclasses.replace(dc, batch=B, steps=10))
    target = random_params(arch, I, rng)
    params = spd.init_spd(arch, C, K, I, 1.0, rng, np.float64)
    params = {k: v + rng.normal(0, 0.3, v.shape) for k, v in params.items()}
    x = inputs(arch, I, B, rng)
    x[:, 2] = 0.0  # an all-zero row
    u = spd.draw_uniforms(arch, C, S, I, B, rng, np.float64)
    return arch, exp, target, params, x, u


def _total(problem, params, x, u):
    rec = {}
    problem.step_grads(params, x, u, rec, step=5, need_grad=False)
    return float(np.sum(rec["total"]))


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("fused", [False, True])
def test_gradient_of_the_whole_loss_against_finite_differences(name, fused):
    arch, exp, target, params, x, u = _setup(name, S=2)
    problem = SpdProblem(exp, arch, target, fused=fused)
    grads = problem.step_grads(params, x, u, {}, step=5)
    rng = np.random.default_rng(7)
    eps = 1e-6
    for _ in range(3):
        d = {k: rng.normal(size=v.shape) for k, v in params.items()}
        plus = _total(problem, {k: params[k] + eps * d[k] for k in params}, x, u)
        minus = _total(problem, {k: params[k] - eps * d[k] for k in params}, x, u)
        fd = (plus - minus) / (2 * eps)
        an = sum(np.sum(grads[k] * d[k]) for k in params)
        assert np.isclose(an, fd, rtol=1e-6, atol=1e-8), (an, fd)
    for k in params:  # every parameter kind gets a gradient (U, V and every CI parameter)
        assert np.any(grads[k] != 0), k


@pytest.mark.parametrize("name", ["tms", "resid_1l"])
def test_fused_and_compacted_equal_plain(name):
    arch, exp, target, params, x, u = _setup(name, seed=3)
    plain = SpdProblem(exp, arch, target, fused=False)
    plain.compact = False
    fast = SpdProblem(exp, arch, target, fused=True)
    assert fast.compact
    r1, r2 = {}, {}
    g1 = plain.step_grads(params, x, u, r1, step=5)
    g2 = fast.step_grads(params, x, u, r2, step=5)
    assert r1.keys() == r2.keys()
    for k in r1:
        assert np.allclose(r1[k], r2[k], rtol=1e-12, atol=1e-14), k
    for k in g1:
        assert np.allclose(g1[k], g2[k], rtol=1e-10, atol=1e-12), k


@pytest.mark.parametrize("name", ["tms", "tms_hidden2"])
@pytest.mark.parametrize("S", [1, 2])
def test_tms_hand_written_loss_equals_autograd(name, S, monkeypatch):
    from runtime.targets.tms import spd_kernels as spd_fused

    monkeypatch.setattr(spd_fused, "ROW_BLOCK", 9)  # several row blocks
    arch, exp, target, params, x, u = _setup(name, seed=6, S=S, importance_minimality_p=0.7)
    auto = SpdProblem(exp, arch, target, fused=True)
    auto.tms = None  # autograd around the CI kernel
    hand = SpdProblem(exp, arch, target, fused=True)
    assert hand.tms is not None and hand.path == "spd-fused-tms"
    r1, r2 = {}, {}
    g1 = auto.step_grads(params, x, u, r1, step=5)
    g2 = hand.step_grads(params, x, u, r2, step=5)
    assert r1.keys() == r2.keys()
    for k in r1:
        assert np.allclose(r1[k], r2[k], rtol=1e-12, atol=1e-14), k
    assert g1.keys() == g2.keys()
    for k in g1:
        assert np.allclose(g1[k], g2[k], rtol=1e-10, atol=1e-12), k
    assert hand.mask_stats()["ci_l0"].shape == (2,)


def test_compact_index_keeps_nonzero_rows_in_order_then_zero_rows():
    x = np.zeros((2, 7, 3))
    x[0, [1, 4], 0] = 1.0
    x[1, [0, 2, 5], 2] = -2.0
    idx, R = compact_index(x)
    assert R == 4  # the largest count + 1: the last kept row of every replicate is all-zero
    assert list(idx[0][:2]) == [1, 4] and not np.any(x[0, idx[0][2:]])
    assert list(idx[1][:3]) == [0, 2, 5] and not np.any(x[1, idx[1][3]])
    assert compact_index(np.zeros((1, 4, 2)))[1] == 1
    assert compact_index(np.ones((1, 4, 2)))[1] == 4  # nothing to drop


def test_replicate_gradients_equal_independent_runs():
    arch, exp, target, params, x, u = _setup("resid_2l_bias", seed=4)
    full = SpdProblem(exp, arch, target).step_grads(params, x, u, {}, step=5)
    for r in range(2):
        sl = lambda d: {k: v[r:r + 1] for k, v in d.items()}  # noqa: E731
        one_exp = dataclasses.replace(exp, replicates=1)
        one = SpdProblem(one_exp, arch, sl(target)).step_grads(sl(params), x[r:r + 1],
                                                              {k: v[:, r:r + 1] for k, v in u.items()}, {}, step=5)
        for k in full:
            assert np.allclose(full[k][r], one[k][0], rtol=1e-12, atol=1e-14), k


@pytest.mark.parametrize("arch", [ResidMlpTarget(features=4, d_embed=9, d_mlp=3, layers=1),
                                  ResidMlpTarget(features=4, d_embed=9, d_mlp=3, layers=1, in_bias=True, out_bias=True,
                                                 activation="gelu", output_activation=True)])
def test_folded_one_layer_residual_equals_the_forward_pass(arch):
    rng = np.random.default_rng(11)
    I, B, C = 2, 8, 5
    dc = dataclasses.replace(_dc(importance_minimality=0.4), components=C, mask_samples=2,
                             causal_importance=CausalImportance(hidden=3))
    target = random_params(arch, I, rng)
    params = {k: v + rng.normal(0, 0.3, v.shape) for k, v in spd.init_spd(arch, C, 3, I, 1.0, rng, np.float64).items()}
    x = inputs(arch, I, B, rng)
    u = spd.draw_uniforms(arch, C, 2, I, B, rng, np.float64)
    chain = spd.SpdLoss(arch, target, dc, view=spd.ChainView(arch, target))
    folded = spd.SpdLoss(arch, target, dc)
    assert isinstance(folded.view, Resid1View)
    f = lambda loss: lambda p: np.sum(sum(loss.terms(p, x, loss.view.prepare(x), u).values()))  # noqa: E731
    assert np.allclose(chain.view.prepare(x).y, folded.view.prepare(x).y, atol=1e-12)
    t1 = chain.terms(params, x, chain.view.prepare(x), u)
    t2 = folded.terms(params, x, folded.view.prepare(x), u)
    for k in t1:
        assert np.allclose(t1[k], t2[k], rtol=1e-11, atol=1e-13), k
    g1, g2 = grad(f(chain))(params), grad(f(folded))(params)
    for k in g1:
        assert np.allclose(g1[k], g2[k], rtol=1e-9, atol=1e-11), k


def test_resid_first_layer_shortcut_is_exact():
    arch = ResidMlpTarget(features=3, d_embed=40, d_mlp=4, layers=1)
    rng = np.random.default_rng(8)
    target = random_params(arch, 1, rng)
    params = spd.init_spd(arch, 5, 2, 1, 1.0, rng, np.float64)
    x = inputs(arch, 1, 50, rng)
    layer = spd.spd_layers(arch)[0]
    tgt = target_forward(arch, target, x)
    a = tgt.pre[layer.name]
    assert np.allclose(spd.inner_acts(arch, target, params, layer, a, x), a @ params[f"{layer.name}.V"], atol=1e-12)


def test_faithfulness_warmup_fits_the_sum_before_the_first_step():
    from autograd import grad as agrad

    from runtime.methods.spd.train import SpdTrainer
    from runtime.spec import check
    from runtime import FaithfulnessWarmup

    arch = TmsTarget(features=5, hidden=3, hidden_layers=1)
    rng = np.random.default_rng(12)
    target = random_params(arch, 2, rng, dtype=np.float64)
    params = spd.init_spd(arch, 6, 3, 2, 1.0, rng, np.float64)
    value, g = spd.faithfulness_value_and_grad(arch, params, target)
    ref = agrad(lambda p: np.sum(spd.faithfulness_loss(arch, p, target)))(params)
    assert np.allclose(value, spd.faithfulness_loss(arch, params, target))
    for k in g:
        assert np.allclose(g[k], ref[k], atol=1e-13), k
    exp = check(Experiment(replicates=2, dtype="float64", target=arch, train=None,
                           decompose=Decompose(method="spd", components=6, steps=5, batch=16,
                                               faithfulness_warmup=FaithfulnessWarmup(steps=300))))
    tr = SpdTrainer(exp, arch, target, lambda b: inputs(arch, 2, b, rng), np.random.default_rng(0))
    before = spd.faithfulness_loss(arch, tr.comps, target).mean()
    ci_before = {k: v.copy() for k, v in tr.comps.items() if ".ci." in k}
    warm = tr.faithfulness_warmup()  # per replicate, like every logged term (restarts select per instance)
    assert warm.shape == (2,) and np.allclose(warm, spd.faithfulness_loss(arch, tr.comps, target))
    assert spd.faithfulness_loss(arch, tr.comps, target).mean() < 0.05 * before
    assert all(np.array_equal(ci_before[k], tr.comps[k]) for k in ci_before)  # V and U only
    tr2 = SpdTrainer(exp, arch, target, lambda b: inputs(arch, 2, b, rng), np.random.default_rng(0))
    _, rec = tr2.step()
    assert np.all(rec["warmup_faithfulness"] < 0.05 * before)
    assert "warmup_faithfulness" not in tr2.step()[1]  # once, before step 0


def test_restarts_with_a_faithfulness_warmup_keep_one_init_per_replicate():
    """The warmup's logged value is per instance: selecting restarts slices it like every term
    (it once was a mean, and selection failed with an IndexError after the whole run)."""
    from runtime.pipeline import runner
    from runtime.spec import Training
    from runtime import FaithfulnessWarmup

    exp = Experiment(replicates=2, dtype="float64", target=TmsTarget(features=5, hidden=2),
                     train=Training(steps=30, batch=64),
                     decompose=Decompose(method="spd", components=6, steps=6, batch=32, restarts=2, log_every=2,
                                         faithfulness_warmup=FaithfulnessWarmup(steps=20)))
    res = runner.run(exp, with_metrics=False)
    first = res.decomposition.history[0]
    assert len(first["warmup_faithfulness/replicates"]) == 2
    assert np.isclose(first["warmup_faithfulness"], np.mean(first["warmup_faithfulness/replicates"]))
    assert res.selection["chosen"] and len(res.selection["chosen"]) == 2

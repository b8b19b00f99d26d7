"""APD model, losses, attributions and masks: hand-computed values (notes §9), closed forms
against their generic definitions, and gradients against central finite differences (float64)."""

import numpy as np
import pytest

from apd_cases import ARCHS, inputs
from runtime.methods.apd import components as apd
from runtime.methods.apd.attributions import (
    ablation_attributions, activation_attributions, attributions, batch_topk_mask, gradient_attributions, sample_topk_mask, topk_mask,
)
from runtime.methods.apd.train import LossProblem, normalise_columns, project_gradients
from runtime.engine.models import layers_of, n_outputs, random_params, target_forward
from runtime.spec import Decompose, Experiment
from runtime import Attribution, ApdLosses as Losses, TopK, TmsTarget

C, M, I, B = 4, 2, 2, 7


def setup(name, seed=0, C=C, m=M):
    rng = np.random.default_rng(seed)
    arch = ARCHS[name]
    target = random_params(arch, I, rng)
    comps = apd.init_components(arch, C, m, I, 1.0, rng, np.float64)
    comps = {k: rng.normal(0, 0.5, v.shape) for k, v in comps.items()}  # O(1) components
    x = inputs(arch, I, B, rng)
    return arch, target, comps, x


def component_params(arch, comps, c, C):
    """Dense P_c for every decomposed parameter."""
    return {name: apd.component_weights(comps, name, C)[:, c] for name in apd.decomposed_params(arch)}


def shifted(params, direction, t):
    out = dict(params)
    for k, v in direction.items():
        out[k] = params[k] + t * v
    return out


# ------------------------------------------------------------------------------------------
# §9 pinned values


def test_param_match_one_matrix():
    A, Bm = np.ones((2, 3)), np.ones((3, 2))
    assert apd.param_match([(A @ Bm, np.ones((2, 2)), 1)], 12) == pytest.approx(16 / 12)


def test_param_match_two_matrices():
    loss = apd.param_match([(np.full((2, 3), 3.0), np.full((2, 3), 2.0), 1),
                            (np.full((3, 2), 3.0), np.ones((3, 2)), 1)], 36)
    assert loss == pytest.approx(5 / 6)


def test_param_match_with_instances():
    W = np.full((2, 2, 3), 3.0)
    Wt = np.stack([np.full((2, 3), 2.0), np.full((2, 3), 1.0)])
    np.testing.assert_allclose(apd.param_match([(W, Wt, 1)], 12), [6 / 12, 24 / 12])
    W = np.full((2, 2, 2), 3.0)
    Wt = np.stack([np.full((2, 2), 2.0), np.full((2, 2), 1.0)])
    np.testing.assert_allclose(apd.param_match([(W, Wt, 1)], 12), [1 / 3, 4 / 3])


def test_act_recon_values():
    h1, h2 = np.zeros((1, 2, 2)), np.zeros((1, 2, 3))
    err = np.array([0.5, 1.0])[None, :, None]
    assert apd.act_recon([(h1, h1), (h2, h2)])[0] == 0
    assert apd.act_recon([(h1 + err, h1), (h2 + err, h2)])[0] == pytest.approx(0.625)
    e = np.full((2, 2, 2), 0.5)
    np.testing.assert_allclose(apd.act_recon([(e, np.zeros_like(e))]), [0.25, 0.25])


def test_sample_topk_values():
    a = np.array([[[1, 5, 2, 1, 2], [3, 3, 5, 4, 4]]], float)
    want = [[[0, 1, 1, 0, 1], [0, 0, 1, 1, 1]]]
    np.testing.assert_array_equal(sample_topk_mask(a, 3), np.array(want, bool))


def test_batch_topk_values():
    a = np.array([[[1, 5, 2, 1, 2], [3, 3, 5, 4, 4]]], float)
    want = [[[0, 1, 0, 0, 0], [1, 1, 1, 1, 1]]]
    np.testing.assert_array_equal(topk_mask(TopK("batch", 3), a), np.array(want, bool))


def test_sample_topk_with_instances():
    # reference layout (B, I, C) -> ours (I, B, C)
    a = np.array([[[1, 5, 3, 4], [2, 4, 6, 1]], [[2, 1, 5, 9.5], [3, 4, 1, 5]]]).transpose(1, 0, 2)
    want = np.array([[[0, 1, 0, 1], [0, 1, 1, 0]], [[0, 0, 1, 1], [0, 1, 0, 1]]], bool).transpose(1, 0, 2)
    np.testing.assert_array_equal(sample_topk_mask(a, 2), want)


def test_batch_topk_with_instances():
    a = np.array([[[1, 5, 3], [2, 4, 6]], [[2, 1, 5], [3, 4, 1]]], float).transpose(1, 0, 2)
    want = np.array([[[0, 1, 1], [0, 1, 1]], [[1, 0, 1], [1, 1, 0]]], bool).transpose(1, 0, 2)
    np.testing.assert_array_equal(topk_mask(TopK("batch", 2), a), want)


def test_batch_topk_floor_and_exact():
    a = np.random.default_rng(0).uniform(size=(1, 10, 3))
    assert topk_mask(TopK("batch", 0.211), a).sum() == int(0.211 * 10)
    x = np.zeros((1, 10, 4))
    x[0, :3, 0] = 1
    x[0, 5, 1:3] = 1
    assert topk_mask(TopK("exact", 0), a, x).sum() == 5
    assert batch_topk_mask(a, 100).all()


def test_activation_attribution_values():
    # one layer, input a = 1, C = 2, m = 1: component acts [1, 0] and [0, 1] -> Attr [1, 1]
    arch = TmsTarget(features=1, hidden=2)
    comps = {"W.A": np.ones((1, 1, 2)), "W.B": np.array([[[1.0, 0.0], [0.0, 1.0]]])}
    trace = apd.apd_forward(arch, {"W": np.zeros((1, 1, 2)), "b": np.zeros((1, 1))}, comps, np.ones((1, 1, 1)))
    attr = activation_attributions(arch, trace, comps, 2)
    # two layers: W (acts [1,0],[0,1]) and the tied W.T (h = [1, 1]: acts 1 and 1)
    np.testing.assert_allclose(attr, [[[1 + 1, 1 + 1]]])


# ------------------------------------------------------------------------------------------
# equivalence: components that sum to the target reproduce it


@pytest.mark.parametrize("name", list(ARCHS))
def test_apd_forward_equals_target_when_components_sum_to_it(name):
    arch, target, comps, x = setup(name)
    summed = apd.dense_sum_params(arch, target, comps)
    t = target_forward(arch, summed, x)
    a = apd.apd_forward(arch, target, comps, x)
    np.testing.assert_allclose(a.y, t.y, atol=1e-6)
    for layer in layers_of(arch):
        np.testing.assert_allclose(a.post[layer.name], t.post[layer.name], atol=1e-6)
    # in float32 too
    comps32 = {k: v.astype(np.float32) for k, v in comps.items()}
    s32 = {k: v.astype(np.float32) for k, v in summed.items()}
    a32 = apd.apd_forward(arch, s32, comps32, x.astype(np.float32))
    assert a32.y.dtype == np.float32
    np.testing.assert_allclose(a32.y, t.y, rtol=1e-4, atol=1e-4)


def test_mask_of_ones_is_the_full_pass_and_zero_mask_removes_components():
    arch, target, comps, x = setup("resid_2l_bias")
    full = apd.apd_forward(arch, target, comps, x).y
    ones = apd.apd_forward(arch, target, comps, x, mask=np.ones((I, B, C)), m=M).y
    np.testing.assert_allclose(ones, full)
    mask = np.ones((I, B, C))
    mask[:, :, 1] = 0
    without = dict(comps)
    for name in apd.decomposed_params(arch):
        A, Bf = apd.to_components(comps, name, C)
        A = A.copy()
        A[:, 1] = 0
        without.update(apd.from_components(name, A, Bf))
    np.testing.assert_allclose(apd.apd_forward(arch, target, comps, x, mask=mask, m=M).y,
                               apd.apd_forward(arch, target, without, x).y, atol=1e-12)


# ------------------------------------------------------------------------------------------
# attributions against their generic definitions


def assert_attributions_are_squared_directional_derivatives(attr, arch, base, comps, x):
    """Attr_c == ||d/dt y(base + t P_c)||^2 by central finite differences (the definition)."""
    eps = 1e-6
    for c in range(C):
        P = component_params(arch, comps, c, C)
        d = (target_forward(arch, shifted(base, P, eps), x).y - target_forward(arch, shifted(base, P, -eps), x).y) / (2 * eps)
        np.testing.assert_allclose(attr[:, :, c], np.sum(d * d, axis=-1), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", list(ARCHS))
def test_gradient_attributions_equal_directional_derivatives(name):
    arch, target, comps, x = setup(name)
    attr = gradient_attributions(arch, target, target_forward(arch, target, x), comps, C)
    assert_attributions_are_squared_directional_derivatives(attr, arch, target, comps, x)


@pytest.mark.parametrize("source", ["target", "apd"])
@pytest.mark.parametrize("name", list(ARCHS))
def test_the_generic_path_equals_every_kinds_closed_forms(name, source, monkeypatch):
    """A kind with no registered APD kernels gets the generic reverse-mode attributions; they equal
    the closed forms the kinds register (forward-mode tangents, plain-array kernels)."""
    from runtime.methods.apd import kinds

    arch, target, comps, x = setup(name, seed=3)
    tgt = target_forward(arch, target, x)
    fast = attributions("gradient", source, arch, target, tgt, comps, x, C, M)
    monkeypatch.setattr(kinds, "APD_KINDS", {})
    generic = attributions("gradient", source, arch, target, tgt, comps, x, C, M)
    np.testing.assert_allclose(generic, fast, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(ARCHS))
def test_apd_source_attributions_are_derivatives_of_the_apd_model(name):
    arch, target, comps, x = setup(name, seed=1)
    attr = attributions("gradient", "apd", arch, target, target_forward(arch, target, x), comps, x, C, M)
    summed = apd.dense_sum_params(arch, target, comps)  # the APD model's own weights
    assert_attributions_are_squared_directional_derivatives(attr, arch, summed, comps, x)


@pytest.mark.parametrize("name", list(ARCHS))
def test_activation_attributions_equal_component_output_norms(name):
    arch, target, comps, x = setup(name, seed=2)
    trace = apd.apd_forward(arch, target, comps, x)
    attr = activation_attributions(arch, trace, comps, C)
    want = np.zeros((I, B, C))
    for layer in layers_of(arch):
        for c in range(C):
            W = apd.component_weights(comps, layer.param, C)[:, c]
            if layer.transposed:
                W = np.swapaxes(W, -1, -2)
            acts = trace.pre[layer.name] @ W
            want[:, :, c] += np.sum(acts * acts, axis=-1)
    np.testing.assert_allclose(attr, want, rtol=1e-10)


def test_ablation_attributions_zero_one_component():
    arch, target, comps, x = setup("resid_1l", seed=3)
    attr = ablation_attributions(arch, target, comps, x, C, M)
    full = apd.apd_forward(arch, target, comps, x).y
    for c in range(C):
        without = dict(comps)
        for name in apd.decomposed_params(arch):
            A, Bf = apd.to_components(comps, name, C)
            Bf = Bf.copy()
            Bf[:, c] = 0
            without.update(apd.from_components(name, A, Bf))
        d = full - apd.apd_forward(arch, target, without, x).y
        np.testing.assert_allclose(attr[:, :, c], np.mean(d * d, axis=-1), rtol=1e-10)


def test_all_zero_inputs_give_zero_attributions():
    arch, target, comps, x = setup("tms")
    x[:, 0] = 0.0
    attr = gradient_attributions(arch, target, target_forward(arch, target, x), comps, C)
    assert np.all(attr[:, 0] == 0)


# ------------------------------------------------------------------------------------------
# Schatten: closed form vs definition; layout round trip


@pytest.mark.parametrize("p", [1.0, 0.9])
def test_schatten_closed_form_matches_definition(p):
    arch, target, comps, x = setup("tms_hidden2")
    mask = np.random.default_rng(0).uniform(size=(I, B, C)) < 0.4
    closed = apd.schatten_loss(arch, comps, mask, C, p)
    np.testing.assert_allclose(closed, apd.schatten_loss_generic(arch, comps, mask, C, p), rtol=1e-12)
    # by hand for replicate 0: sum over layer uses, samples, components, ranks
    N = apd.n_decomposed_weights(arch)
    total = 0.0
    for layer in layers_of(arch):
        A, Bf = apd.to_components(comps, layer.param, C)
        for b in range(B):
            for c in range(C):
                for r in range(M):
                    S = np.sum(A[0, c, :, r] ** 2) * np.sum(Bf[0, c, r, :] ** 2)
                    total += (mask[0, b, c] * S + 1e-16) ** (p / 2)
    assert closed[0] == pytest.approx(total / (N * B), rel=1e-12)
    floatmask = mask.astype(float) * 0.7
    np.testing.assert_allclose(apd.schatten_loss(arch, comps, floatmask, C, p),
                               apd.schatten_loss_generic(arch, comps, floatmask, C, p), rtol=1e-12)


def test_component_layout_round_trip():
    rng = np.random.default_rng(0)
    A, Bf = rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 4, 6))
    flat = apd.from_components("W", A, Bf)
    A2, B2 = apd.to_components(flat, "W", 3)
    np.testing.assert_array_equal(A2, A)
    np.testing.assert_array_equal(B2, Bf)
    np.testing.assert_allclose(apd.summed_weight(flat, "W"), np.einsum("icdm,icme->ide", A, Bf))


def test_tms_faithfulness_is_mse_over_W():
    arch, target, comps, _ = setup("tms")
    diff = apd.summed_weight(comps, "W") - target["W"]
    np.testing.assert_allclose(apd.faithfulness_loss(arch, comps, target), np.mean(diff ** 2, axis=(1, 2)))


# ------------------------------------------------------------------------------------------
# gradients of the full loss vs central finite differences (float64)

LOSS_CASES = {
    "faithfulness+minimality": (Losses(), TopK("batch", 1.5), Attribution()),
    "act_recon": (Losses(faithfulness=None, minimality=None, act_recon=1.0), TopK("sample", 2), Attribution()),
    "schatten_p0.9": (Losses(faithfulness=None, minimality=None, simplicity=0.7, simplicity_p=0.9), TopK("batch", 1.0), Attribution()),
    "lp_sparsity+schatten": (Losses(minimality=None, sparsity=0.5, sparsity_p=0.9, simplicity=0.3, simplicity_p=1.0), None, Attribution()),
    "lp_activation": (Losses(minimality=None, sparsity=0.5, sparsity_p=0.8, output_recon=1.0), None, Attribution("activation", "target")),
    "output_recon+topk_lp": (Losses(output_recon=2.0, sparsity=0.1), TopK("sample", 1), Attribution()),
}


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_loss_gradient_matches_finite_differences(name, case):
    from autograd import grad

    losses, topk, attribution = LOSS_CASES[case]
    arch, target, comps, x = setup(name, seed=4)
    exp = Experiment(replicates=I, dtype="float64", target=arch, train=None,
                     decompose=Decompose(components=C, rank=M, topk=topk, attribution=attribution, loss=losses, batch=B))
    problem = LossProblem(exp, arch, target)
    tgt = target_forward(arch, target, x)
    mask = problem.constant_mask(comps, x, tgt)

    def f(c):
        return problem.loss(c, x, tgt, mask, {})

    g = grad(f)(comps)
    rng = np.random.default_rng(5)
    v = {k: rng.normal(size=a.shape) for k, a in comps.items()}
    eps = 1e-6
    fd = (f(shifted(comps, v, eps)) - f(shifted(comps, v, -eps))) / (2 * eps)
    an = sum(np.sum(g[k] * v[k]) for k in comps)
    assert an == pytest.approx(fd, rel=1e-5, abs=1e-9)
    assert np.isfinite(an)


def test_unit_norm_projection():
    arch, target, comps, _ = setup("resid_1l")
    normalise_columns(comps, arch)
    for name in apd.decomposed_params(arch):
        np.testing.assert_allclose(np.linalg.norm(comps[f"{name}.A"], axis=1), 1.0)
    grads = {k: np.random.default_rng(1).normal(size=v.shape) for k, v in comps.items()}
    before_B = grads["layers.0.W_in.B"].copy()
    project_gradients(grads, comps, arch)
    for name in apd.decomposed_params(arch):
        np.testing.assert_allclose(np.sum(grads[f"{name}.A"] * comps[f"{name}.A"], axis=1), 0.0, atol=1e-12)
    np.testing.assert_array_equal(grads["layers.0.W_in.B"], before_B)


@pytest.mark.parametrize("name", list(ARCHS))
def test_apd_source_lp_gradient_stops_at_the_jacobian(name):
    """APD-model attributions treat d y / d h as a constant (notes §5.2): the Lp gradient must equal
    finite differences of the loss with the Jacobian point (summed weights, activations) frozen."""
    from autograd import grad

    arch, target, comps, x = setup(name, seed=6)
    exp = Experiment(replicates=I, dtype="float64", target=arch, train=None,
                     decompose=Decompose(components=C, rank=M, topk=None, attribution=Attribution("gradient", "apd"),
                                         loss=Losses(minimality=None, sparsity=0.5, sparsity_p=0.8), batch=B))
    problem = LossProblem(exp, arch, target)
    tgt = target_forward(arch, target, x)
    g = grad(lambda c: problem.loss(c, x, tgt, None, {}))(comps)
    ref0 = apd.dense_sum_params(arch, target, comps)
    trace0 = apd.apd_forward(arch, target, comps, x)

    def frozen(c):
        tr = apd.apd_forward(arch, target, c, x)
        from runtime.engine.models import Trace

        a = gradient_attributions(arch, ref0, Trace(None, tr.pre, tr.post, trace0.preact), c, C)
        lp = apd.lp_sparsity_loss(apd.lp_terms(a, n_outputs(arch), 0.8))
        return np.sum(apd.faithfulness_loss(arch, c, target) + 0.5 * lp)

    rng = np.random.default_rng(7)
    v = {k: rng.normal(size=a.shape) for k, a in comps.items()}
    eps = 1e-6
    fd = (frozen(shifted(comps, v, eps)) - frozen(shifted(comps, v, -eps))) / (2 * eps)
    an = sum(np.sum(g[k] * v[k]) for k in comps)
    assert an == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_used_components_counts_components_on_nonzero_inputs():
    """Hand-computed: a component counts once however many samples use it; one chosen only on an
    all-zero input (a tie among zero attributions) does not count."""
    from runtime.methods.apd.train import used_components

    x = np.array([[[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]],
                  [[0.0, 0.0], [0.0, 0.0], [3.0, 0.0]]])  # (I=2, B=3, F=2)
    mask = np.zeros((2, 3, 4), dtype=bool)
    mask[0, 0, [0, 2]] = True
    mask[0, 2, [2, 3]] = True
    mask[0, 1, 1] = True  # zero input: not counted
    mask[1, 0, [0, 1, 3]] = True  # zero input: not counted
    mask[1, 2, 1] = True
    np.testing.assert_array_equal(used_components(mask, x), [3, 1])


@pytest.mark.parametrize("fused", [True, False])
def test_training_record_logs_used_components(fused):
    """Both loss paths keep the step's mask for the count, and it matches that mask."""
    from runtime.methods.apd.train import used_components

    arch, target, comps, x = setup("tms", seed=2)
    exp = Experiment(replicates=I, dtype="float64", target=arch, train=None,
                     decompose=Decompose(components=C, rank=M, topk=TopK("batch", 1.0), batch=B))
    problem = LossProblem(exp, arch, target, fused=fused)
    tgt = target_forward(arch, target, x)
    mask = problem.constant_mask(comps, x, tgt)
    record = {}
    problem.value_and_grad(comps, x, tgt, record)
    used = problem.mask_stats()["used_components"]
    np.testing.assert_array_equal(used, used_components(mask, x))
    assert 1 <= used.min() and used.max() <= C

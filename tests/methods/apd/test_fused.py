"""The fused kernels (runtime/engine/fused.py, runtime/engine/kernels.py) against the plain autograd path.

Each fused loss is an autograd primitive with a hand-written VJP: checked with
autograd.test_util.check_grads, against central finite differences (float64), and against the plain
path (`LossProblem.loss` differentiated by autograd): values and gradients to float64 rounding, and
in float32 to float32 tolerance. No wall-clock assertions."""

import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from apd_cases import ARCHS, inputs, wide_sparse_resid_case
from runtime.methods.apd import components as apd
from runtime.methods.apd import fused
from runtime.methods.apd.train import LossProblem
from runtime.targets.resid_mlp import apd_kernels as apd_kernels_resid
from runtime.targets.resid_mlp.apd_kernels import ResidualLoss, ResidualPre
from runtime.targets.tms.apd_kernels import TmsLoss, TmsSparseLoss, tms_variant
from runtime.engine.kernels import FastAdam
from runtime.engine.models import random_params, target_forward
from runtime.engine.optim import Adam
from runtime.spec import Decompose, Experiment, Optimizer
from runtime import ApdLosses as Losses, ResidMlpTarget, TopK

C, M, I, B = 4, 2, 2, 9

LOSSES = {
    "paper_resid": Losses(faithfulness=1.0, minimality=1.0, act_recon=1.0, simplicity=10.0, simplicity_p=0.9),
    "paper_tms": Losses(faithfulness=1.0, minimality=10.0, simplicity=15.0, simplicity_p=0.9),
    "p1_no_faith": Losses(faithfulness=None, minimality=2.0, simplicity=0.7, simplicity_p=1.0),
    "act_recon_only": Losses(faithfulness=None, minimality=None, act_recon=1.0),
    "faith_only": Losses(faithfulness=0.1, minimality=None),
}
TOPKS = {"batch": TopK("batch", 1.5), "sample": TopK("sample", 2), "all": TopK("batch", float(C))}


def setup(name, losses, topk, seed=0, dtype=np.float64, source="target"):
    from runtime import Attribution

    rng = np.random.default_rng(seed)
    arch = ARCHS[name]
    target = random_params(arch, I, rng, dtype=dtype)
    comps = apd.init_components(arch, C, M, I, 1.0, rng, dtype)
    comps = {k: rng.normal(0, 0.5, v.shape).astype(dtype) for k, v in comps.items()}
    x = inputs(arch, I, B, rng, dtype)
    exp = Experiment(replicates=I, dtype=np.dtype(dtype).name, target=arch, train=None,
                     decompose=Decompose(components=C, rank=M, topk=topk, loss=losses, batch=B,
                                         attribution=Attribution("gradient", source)))
    problem = LossProblem(exp, arch, target)
    tgt = target_forward(arch, target, x)
    mask = problem.constant_mask(comps, x, tgt)
    return arch, target, comps, x, problem, tgt, mask


def plain_total(problem, comps, x, tgt, mask):
    return problem.loss(comps, x, tgt, mask, {})


def fused_total(problem, comps, x, tgt, mask):
    fl = problem.fused_loss(comps, x, tgt, mask)
    vals = fused.fused_terms(fl, *[comps[n] for n in fl.factor_names])
    total = 0.0
    for k, name in enumerate(fl.terms):
        total = total + getattr(problem.L, name) * vals[k]
    import autograd.numpy as anp

    return anp.sum(total)


FUSED_ARCHS = [n for n in ARCHS if fused.applies(ARCHS[n], Losses(), TopK())]


def test_fused_covers_the_paper_architectures():
    assert set(FUSED_ARCHS) >= {"tms", "tms_hidden2", "resid_1l", "resid_2l_bias", "resid_gelu_outact", "gated"}


@pytest.mark.parametrize("name", FUSED_ARCHS)
@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("topk_name", list(TOPKS))
def test_fused_equals_plain_float64(name, loss_name, topk_name):
    arch, target, comps, x, problem, tgt, mask = setup(name, LOSSES[loss_name], TOPKS[topk_name])
    rec_plain, rec_fused = {}, {}
    problem.loss(comps, x, tgt, mask, rec_plain)
    fl = problem.fused_loss(comps, x, tgt, mask)
    vals = fl.forward([comps[n] for n in fl.factor_names])
    for k, t in enumerate(fl.terms):
        np.testing.assert_allclose(vals[k], rec_plain[t], rtol=1e-10, atol=1e-14, err_msg=t)
    g_plain = grad(lambda c: plain_total(problem, c, x, tgt, mask))(comps)
    g_fused = grad(lambda c: fused_total(problem, c, x, tgt, mask))(comps)
    for k in comps:
        np.testing.assert_allclose(g_fused[k], g_plain[k], rtol=1e-9, atol=1e-12, err_msg=k)
    # the training-loop entry point gives the same record and gradient
    g_direct = problem.value_and_grad(comps, x, tgt, rec_fused)
    for k in comps:
        np.testing.assert_allclose(g_direct[k], g_plain[k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert list(rec_fused) == list(rec_plain)
    for k in rec_plain:
        np.testing.assert_allclose(rec_fused[k], rec_plain[k], rtol=1e-10, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("name", FUSED_ARCHS)
def test_fused_equals_plain_float32(name):
    arch, target, comps, x, problem, tgt, mask = setup(name, LOSSES["paper_resid"], TOPKS["batch"], dtype=np.float32)
    g_plain = grad(lambda c: plain_total(problem, c, x, tgt, mask))(comps)
    rec_plain, rec_fused = {}, {}
    problem.loss(comps, x, tgt, mask, rec_plain)
    g_fused = problem.value_and_grad(comps, x, tgt, rec_fused)
    for k in comps:
        assert g_fused[k].dtype == np.float32, k
        scale = np.max(np.abs(g_plain[k])) + 1e-30
        np.testing.assert_allclose(g_fused[k] / scale, g_plain[k] / scale, atol=2e-5, err_msg=k)
    for k in rec_plain:
        if k != "k_per_sample":
            assert np.asarray(rec_fused[k]).dtype == np.float32, k
        np.testing.assert_allclose(rec_fused[k], rec_plain[k], rtol=2e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("name", FUSED_ARCHS)
@pytest.mark.parametrize("loss_name", ["paper_resid", "paper_tms"])
def test_fused_check_grads(name, loss_name):
    arch, target, comps, x, problem, tgt, mask = setup(name, LOSSES[loss_name], TOPKS["batch"], seed=3)
    fl = problem.fused_loss(comps, x, tgt, mask)
    facs = [comps[n] for n in fl.factor_names]
    w = np.random.default_rng(0).normal(size=(len(fl.terms), I))

    def f(*fs):
        import autograd.numpy as anp

        return anp.sum(fused.fused_terms(fl, *fs) * w)

    check_grads(f, modes=["rev"], order=1)(*facs)


@pytest.mark.parametrize("name", FUSED_ARCHS)
def test_fused_gradient_matches_finite_differences(name):
    arch, target, comps, x, problem, tgt, mask = setup(name, LOSSES["paper_resid"], TOPKS["sample"], seed=5)
    g = problem.value_and_grad(comps, x, tgt, {})
    f = lambda c: float(fused_total(problem, c, x, tgt, mask))  # noqa: E731
    rng = np.random.default_rng(6)
    v = {k: rng.normal(size=a.shape) for k, a in comps.items()}
    eps = 1e-6
    plus = {k: comps[k] + eps * v[k] for k in comps}
    minus = {k: comps[k] - eps * v[k] for k in comps}
    fd = (f(plus) - f(minus)) / (2 * eps)
    an = sum(np.sum(g[k] * v[k]) for k in comps)
    assert an == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_fused_equals_plain_on_a_wide_sparse_resid_model():
    """Realistic shapes in miniature: sparse inputs, many components, few active pairs."""
    exp, arch, target, comps, x = wide_sparse_resid_case(LOSSES["paper_resid"])
    problem = LossProblem(exp, arch, target)
    tgt = target_forward(arch, target, x)
    mask = problem.constant_mask(comps, x, tgt)
    g_plain = grad(lambda c: plain_total(problem, c, x, tgt, mask))(comps)
    g_fused = problem.value_and_grad(comps, x, tgt, {})
    for k in comps:
        np.testing.assert_allclose(g_fused[k], g_plain[k], rtol=1e-9, atol=1e-13, err_msg=k)


# ------------------------------------------------------------------------------------------
# FastAdam: bitwise the same updates as optim.Adam


@pytest.mark.parametrize("cfg", [Optimizer("adam", 1e-3), Optimizer("adamw", 3e-3, 0.01), Optimizer("adam", 1e-2, 0.1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_adam_is_bitwise_adam(cfg, dtype, monkeypatch):
    import runtime.engine.kernels as K

    monkeypatch.setattr(K, "CHUNK", 7)  # many ragged chunks
    rng = np.random.default_rng(0)
    p = {"a": rng.normal(size=(2, 5, 3)).astype(dtype), "b": rng.normal(size=(1, 4)).astype(dtype)}
    q = {k: v.copy() for k, v in p.items()}
    o1, o2 = Adam(p, cfg, folded=True), FastAdam(q, cfg)
    for t in range(4):
        g = {k: rng.normal(size=v.shape).astype(dtype) for k, v in p.items()}
        g["a"] = np.asfortranarray(g["a"])  # non-contiguous gradients are accepted
        o1.step(p, g, 1e-3 * (t + 1))
        o2.step(q, g, 1e-3 * (t + 1))
    for k in p:
        np.testing.assert_array_equal(p[k], q[k])
        np.testing.assert_array_equal(o1.m[k], o2.m[k])
        np.testing.assert_array_equal(o1.v[k], o2.v[k])
        assert q[k].dtype == dtype


@pytest.mark.parametrize("cfg", [Optimizer("adam", 1e-3), Optimizer("adamw", 3e-3, 0.01), Optimizer("adam", 1e-2, 0.1)])
def test_folded_adam_is_adam_up_to_rounding(cfg):
    """Folding sqrt(1 - beta2^t) into the step size and eps is the same update (float64)."""
    rng = np.random.default_rng(1)
    p = {"a": rng.normal(size=(3, 4))}
    q = {"a": p["a"].copy()}
    o1, o2 = Adam(p, cfg), Adam(q, cfg, folded=True)
    for t in range(5):
        g = {"a": rng.normal(size=(3, 4)) * 10.0 ** rng.integers(-6, 2)}
        o1.step(p, g, 1e-2)
        o2.step(q, g, 1e-2)
    np.testing.assert_allclose(q["a"], p["a"], rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------------------------------
# Attributions: the folded residual stream (x (W_E A) and low-rank r_l) equals the direct form


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("source", ["target", "apd"])
def test_attributions_with_folded_embedding_equal_direct(name, source):
    from runtime.methods.apd.attributions import attributions, gradient_attributions

    arch, target, comps, x, problem, tgt, mask = setup(name, LOSSES["paper_resid"], TOPKS["batch"], seed=8)
    direct = gradient_attributions(arch, target, tgt, comps, C)
    folded = gradient_attributions(arch, target, tgt, comps, C, x)
    np.testing.assert_allclose(folded, direct, rtol=1e-10, atol=1e-12)
    # the dispatcher passes x; the apd source equals its own direct form
    a = attributions("gradient", source, arch, target, tgt, comps, x, C, M)
    if source == "target":
        np.testing.assert_allclose(a, direct, rtol=1e-10, atol=1e-12)
    else:
        trace = apd.apd_forward(arch, target, comps, x)
        ref = apd.dense_sum_params(arch, target, comps)
        np.testing.assert_allclose(a, gradient_attributions(arch, ref, trace, comps, C), rtol=1e-10, atol=1e-12)


def test_folded_attributions_on_wide_sparse_resid_model():
    """Low-rank stream path taken (n_in + l d_mlp < B, D): 2 layers with output biases."""
    from runtime.methods.apd.attributions import gradient_attributions

    arch = ResidMlpTarget(features=5, d_embed=30, d_mlp=4, layers=3, in_bias=True, out_bias=True)
    rng = np.random.default_rng(1)
    target = random_params(arch, 2, rng)
    comps = apd.init_components(arch, 6, 3, 2, 2.0, rng, np.float64)
    x = rng.uniform(-1, 1, (2, 40, 5)) * (rng.uniform(size=(2, 40, 5)) < 0.3)
    tgt = target_forward(arch, target, x)
    np.testing.assert_allclose(gradient_attributions(arch, target, tgt, comps, 6, x),
                               gradient_attributions(arch, target, tgt, comps, 6), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Compaction to the nonzero rows: same step as on the full batch


COMPACT_ARCHS = [n for n in ARCHS if fused.zero_rows_inert(ARCHS[n])]


def test_zero_rows_inert_kinds():
    assert set(COMPACT_ARCHS) == {"tms", "tms_hidden2", "resid_1l", "resid_gelu_outact"}


@pytest.mark.parametrize("name", COMPACT_ARCHS)
@pytest.mark.parametrize("source", ["target", "apd"])
@pytest.mark.parametrize("I_", [1, 3])
def test_compacted_step_equals_full_step(name, source, I_):
    from runtime import Attribution

    arch = ARCHS[name]
    rng = np.random.default_rng(11)
    Bs = 40
    target = random_params(arch, I_, rng)
    comps = apd.init_components(arch, C, M, I_, 1.0, rng, np.float64)
    comps = {k: rng.normal(0, 0.5, v.shape) for k, v in comps.items()}
    x = rng.uniform(-1, 1, (I_, Bs, arch.features))
    x[rng.uniform(size=(I_, Bs)) < 0.6] = 0.0  # many all-zero rows, different per replicate
    exp = Experiment(replicates=I_, dtype="float64", target=arch, train=None,
                     decompose=Decompose(components=C, rank=M, topk=TopK("batch", 0.5), loss=LOSSES["paper_resid"],
                                         batch=Bs, attribution=Attribution("gradient", source)))
    problem = LossProblem(exp, arch, target)
    assert problem.compact
    xc, R = fused.compact_rows(x)
    assert R < Bs
    rec_c, rec_full = {}, {}
    g_c = problem.step_grads(comps, x, rec_c)
    g_full = problem.value_and_grad(comps, x, target_forward(arch, target, x), rec_full)
    plain = LossProblem(exp, arch, target, fused=False)
    rec_plain = {}
    g_plain = plain.value_and_grad(comps, x, target_forward(arch, target, x), rec_plain)
    for k in comps:
        np.testing.assert_allclose(g_c[k], g_full[k], rtol=1e-9, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(g_c[k], g_plain[k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert list(rec_c) == list(rec_plain)
    for k in rec_plain:
        np.testing.assert_allclose(rec_c[k], rec_plain[k], rtol=1e-10, atol=1e-14, err_msg=k)


def test_compact_rows_and_topk():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 10, 3))
    x[0, [1, 4, 5]] = 0
    x[1, [0, 1, 2, 3, 9]] = 0
    xc, R = fused.compact_rows(x)
    assert R == 7 and xc.shape == (2, 7, 3)
    np.testing.assert_array_equal(xc[0], x[0][np.any(x[0] != 0, axis=1)])
    np.testing.assert_array_equal(xc[1, :5], x[1, 4:9])
    assert np.all(xc[1, 5:] == 0)
    attr = rng.uniform(0.1, 1, (2, 7, 4))
    attr[1, 5:] = 0
    from runtime.methods.apd.attributions import batch_topk_mask

    np.testing.assert_array_equal(fused.compact_batch_topk(attr, 6), batch_topk_mask(attr, 6))
    assert fused.compact_batch_topk(attr, 21) is None  # replicate 1 has only 20 positive entries
    assert fused.compact_batch_topk(attr, 29) is None


# ------------------------------------------------------------------------------------------
# Both TMS kernels (dense and pair-sparse), whichever the cost model picks


@pytest.mark.parametrize("name", ["tms", "tms_hidden2"])
@pytest.mark.parametrize("variant", ["dense", "sparse"])
@pytest.mark.parametrize("loss_name", ["paper_tms", "p1_no_faith", "act_recon_only"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tms_variants_equal_plain(name, variant, loss_name, dtype):
    arch, target, comps, x, problem, tgt, mask = setup(name, LOSSES[loss_name], TOPKS["batch"], seed=9, dtype=dtype)
    fl = problem.fused_loss(comps, x, tgt, mask, variant=variant)
    assert type(fl).__name__ == {"dense": "TmsLoss", "sparse": "TmsSparseLoss"}[variant]
    facs = [comps[n] for n in fl.factor_names]
    rec = {}
    problem.loss(comps, x, tgt, mask, rec)
    vals = fl.forward(facs)
    g_plain = grad(lambda c: plain_total(problem, c, x, tgt, mask))(comps)
    coeffs = np.array([[getattr(problem.L, t)] * I for t in fl.terms], dtype=dtype)
    grads = dict(zip(fl.factor_names, fl.backward(facs, coeffs)))
    tol = dict(rtol=1e-10, atol=1e-13) if dtype == np.float64 else dict(rtol=3e-5, atol=1e-6)
    for k, t in enumerate(fl.terms):
        np.testing.assert_allclose(vals[k], rec[t], **tol, err_msg=t)
    for k in comps:
        assert grads[k].dtype == dtype
        scale = np.max(np.abs(g_plain[k])) + 1e-30
        np.testing.assert_allclose(grads[k] / scale, g_plain[k] / scale, **tol, err_msg=k)
    if dtype == np.float64:
        w = np.random.default_rng(1).normal(size=(len(fl.terms), I))

        def f(*fs):
            import autograd.numpy as anp

            return anp.sum(fused.fused_terms(fl, *fs) * w)

        check_grads(f, modes=["rev"], order=1)(*facs)


def test_tms_variant_choice():
    from runtime import TmsTarget

    assert tms_variant(12, 470, 5, 3, TmsTarget(5, 2)) is TmsLoss
    assert tms_variant(3, 1790, 40, 11, TmsTarget(40, 10)) is TmsSparseLoss


# ------------------------------------------------------------------------------------------
# The residual-MLP precompute (attributions sharing GEMMs with the loss)


@pytest.mark.parametrize("name", ["resid_1l", "resid_2l_bias", "resid_gelu_outact"])
@pytest.mark.parametrize("Bs", [3, 9, 30])  # direct and low-rank residual streams
def test_residual_pre_attributions_and_products(name, Bs):
    from runtime.methods.apd.attributions import gradient_attributions

    arch = ARCHS[name]
    rng = np.random.default_rng(12)
    target = random_params(arch, I, rng)
    comps = {k: rng.normal(0, 0.5, v.shape) for k, v in apd.init_components(arch, C, M, I, 1.0, rng, np.float64).items()}
    x = inputs(arch, I, Bs, rng)
    x[:, :, 1] = 0.0  # a feature absent from the batch
    tgt = target_forward(arch, target, x)
    pre = ResidualPre(arch, target, tgt, comps, C, M, x, np.float64)
    np.testing.assert_allclose(pre.attr, gradient_attributions(arch, target, tgt, comps, C), rtol=1e-10, atol=1e-12)
    for n in apd.decomposed_params(arch):
        A, Bf = comps[f"{n}.A"], comps[f"{n}.B"]
        diff = A @ Bf - target[n]
        np.testing.assert_allclose(pre.diff[n], diff, rtol=1e-12, atol=1e-12)
        if n in pre.AtD:
            np.testing.assert_allclose(pre.AtD[n], np.swapaxes(A, 1, 2) @ diff, rtol=1e-10, atol=1e-12)
        if n in pre.DBt:
            np.testing.assert_allclose(pre.DBt[n], diff @ np.swapaxes(Bf, 1, 2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pre.inner0, tgt.pre["layers.0.W_in"] @ comps["layers.0.W_in.A"], rtol=1e-10, atol=1e-12)
    assert pre.matches(pre.factor_names, [comps[n] for n in pre.factor_names])
    assert not pre.matches(pre.factor_names, [comps[n].copy() for n in pre.factor_names])


@pytest.mark.parametrize("name", FUSED_ARCHS)
def test_training_step_equals_plain(name):
    """LossProblem.step_grads (what Trainer.step runs: compaction, precompute, fused kernels)
    against the plain autograd path, on dense inputs."""
    arch, target, comps, x, problem, tgt, mask = setup(name, LOSSES["paper_resid"], TOPKS["batch"], seed=13)
    plain = LossProblem(problem.exp, arch, target, fused=False)
    rec_f, rec_p = {}, {}
    g_f = problem.step_grads(comps, x, rec_f)
    g_p = plain.step_grads(comps, x, rec_p)
    assert problem.path.startswith("fused") and plain.path == "autograd"
    for k in comps:
        np.testing.assert_allclose(g_f[k], g_p[k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert list(rec_f) == list(rec_p)
    for k in rec_p:
        np.testing.assert_allclose(rec_f[k], rec_p[k], rtol=1e-10, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("name", ["resid_1l", "resid_2l_bias", "resid_gelu_outact", "gated"])
def test_reverse_mode_attributions_equal_forward_mode(name, monkeypatch):
    """Narrow-output residual nets use reverse mode (one backward pass per output)."""
    import runtime.methods.apd.attributions as AT

    arch, target, comps, x, problem, tgt, mask = setup(name, LOSSES["paper_resid"], TOPKS["batch"], seed=14)
    monkeypatch.setattr(apd_kernels_resid, "REVERSE_MAX_OUTPUTS", 1000)
    rev = AT.gradient_attributions(arch, target, tgt, comps, C)
    monkeypatch.setattr(apd_kernels_resid, "REVERSE_MAX_OUTPUTS", 0)
    fwd = AT.gradient_attributions(arch, target, tgt, comps, C)
    np.testing.assert_allclose(rev, fwd, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["resid_1l", "resid_2l_bias", "resid_gelu_outact", "gated"])
def test_plain_apd_forward_equals_apd_forward(name):
    from runtime.targets.resid_mlp.apd_kernels import apd_forward_residual_plain

    arch, target, comps, x, problem, tgt, mask = setup(name, LOSSES["paper_resid"], TOPKS["batch"], seed=15)
    a = apd.apd_forward(arch, target, comps, x)
    b, u = apd_forward_residual_plain(arch, target, comps, x)
    np.testing.assert_array_equal(b.y, a.y)
    for d1, d2 in ((a.pre, b.pre), (a.post, b.post), (a.preact, b.preact)):
        assert set(d1) == set(d2)
        for k in d1:
            np.testing.assert_array_equal(d2[k], d1[k])
    for (l, w), v in u.items():
        np.testing.assert_array_equal(v, a.pre[f"layers.{l}.{w}"] @ comps[f"layers.{l}.{w}.A"])


def test_fast_adam_non_contiguous_parameter():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(2, 6, 4)).astype(np.float32)
    p = {"a": base[:, ::2].copy(), "b": base[:, ::2]}  # "b" is a strided view
    q = {"a": base[:, ::2].copy(), "b": base.copy()[:, ::2]}
    o1, o2 = Adam(p, Optimizer(), folded=True), FastAdam(q, Optimizer())
    for t in range(3):
        g = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in p.items()}
        o1.step(p, g, 1e-2)
        o2.step(q, g, 1e-2)
    for k in p:
        np.testing.assert_array_equal(p[k], q[k])


def test_backward_recomputes_a_stale_forward():
    """The VJP must belong to the point it was made at, even if the loss object ran other
    forward passes in between (as check_grads' finite differences do)."""
    arch, target, comps, x, problem, tgt, mask = setup("resid_2l_bias", LOSSES["paper_resid"], TOPKS["batch"], seed=16)
    fl = problem.fused_loss(comps, x, tgt, mask)
    facs = [comps[n] for n in fl.factor_names]
    g = np.ones((len(fl.terms), I))
    fl.forward(facs)
    want = fl.backward(facs, g)
    fl.forward([f * 1.1 for f in facs])  # another point
    got = fl.backward(facs, g)
    again = fl.backward(facs, g)  # intermediates were consumed: recomputed
    for a, b, c in zip(want, got, again):
        np.testing.assert_allclose(b, a, rtol=1e-12)
        np.testing.assert_allclose(c, a, rtol=1e-12)


def test_compact_topk_with_ties_at_the_threshold():
    from runtime.methods.apd.attributions import batch_topk_mask

    attr = np.array([[[3.0, 1.0], [2.0, 2.0], [2.0, 0.5]]])  # k = 3: three 2.0's tie for places 2-4
    m = fused.compact_batch_topk(attr, 3)
    assert m.sum() == 3 and m[0, 0, 0] and m[0, 0, 1] == False  # noqa: E712
    assert fused.compact_batch_topk(attr, 6).all()  # every entry is positive
    attr[0, 2, 1] = 0.0
    assert fused.compact_batch_topk(attr, 6) is None  # would pick a zero: ambiguous
    np.testing.assert_array_equal(fused.compact_batch_topk(attr, 1), batch_topk_mask(attr, 1))

"""The mask rule (runtime/engine/masks.py), the persistent sources' Adam ascent
(runtime/methods/vpd/adversary.py) and the evaluation adversary (runtime/analysis/adversary.py);
notes §1, §4, §5."""
import autograd.numpy as anp
import numpy as np
import pytest
from autograd.tracer import getval

from runtime.engine.data import sample_inputs
from runtime.analysis.adversary import pgd_eval
from runtime.engine.masks import make_masks, output_mse as mse
from runtime.methods.vpd.adversary import PersistentSources
from runtime.methods.vpd.model import VpdModel
from runtime import Data, TmsTarget
from vpd_cases import tms_pentagon, vpd


def test_make_masks():
    ci = np.array([[[0.25, 1.0, 0.0]]])
    src = np.array([[[0.5, 0.1, 0.3, 0.7]]])
    mask, delta = make_masks(ci, src)
    assert np.allclose(mask, [[[0.625, 1.0, 0.3]]]) and np.allclose(delta, [[0.7]])
    mask, delta = make_masks(ci, src[..., :3], delta=False)
    assert np.allclose(mask, [[[0.625, 1.0, 0.3]]]) and delta is None
    shared = make_masks(np.zeros((1, 4, 3)), src)[0]  # one source row serves every row
    assert shared.shape == (1, 4, 3) and np.allclose(shared, src[..., :3])


def test_persistent_sources_first_step_and_clamp():
    rng = np.random.default_rng(0)
    adv = PersistentSources({"a": (1, 3, 2)}, rng, np.float32, 0.01, 0.99, 1e-8)
    s0 = adv.sources["a"].copy()
    assert adv.sources["a"].dtype == np.float32 and np.all((0 <= s0) & (s0 < 1))
    g = np.array([[[1.0, -2.0], [0.5, 0.0], [-3.0, 4.0]]], dtype=np.float32)
    adv.ascend({"a": g}, lr=0.05)
    # Adam's first bias-corrected step is lr sign(g) (up the gradient), then the clamp
    expected = np.clip(s0 + 0.05 * np.sign(g), 0, 1)
    assert np.allclose(adv.sources["a"], expected, atol=1e-6)
    adv.ascend({"a": 1e3 * np.ones_like(g)}, lr=5.0)
    assert np.all(adv.sources["a"] == 1.0)  # clamped, never above 1
    arrays, t = adv.state()
    assert t == 2 and set(arrays) == {"src.a", "src_m.a", "src_v.a"}


def poor_tms(seed=0):
    """TMS 5-2 pentagon decomposed faithfully (V U = W exactly) but badly: its two singular
    directions plus a large pair u w^T, -u w^T that cancels only while both are kept equally; the
    CI is switched off (every preactivation -1), so the masks are the sources themselves."""
    arch = TmsTarget(5, 2)
    model = VpdModel(arch, tms_pentagon(dtype=np.float64), vpd(C=4, ci_hidden=(3,)))
    rng = np.random.default_rng(seed)
    comps = model.init_params(1, rng, np.float64)
    for name in model.names:
        A, S, Bt = np.linalg.svd(model.W[name], full_matrices=False)  # rank 2
        u, w = rng.normal(0, 1.5, A.shape[:2] + (1,)), rng.normal(0, 1.5, (1, 1, Bt.shape[2]))
        comps[f"{name}.V"] = np.concatenate([A * S[:, None, :], u, -u], axis=2)
        comps[f"{name}.U"] = np.concatenate([Bt, w, w], axis=1)
        comps[f"{name}.ci.w1"][...] = 0.0
        comps[f"{name}.ci.b1"][...] = -1.0
    x = sample_inputs(arch, Data(probability=0.3), 1, 256, np.random.default_rng(seed + 1), np.float64)
    return model, comps, x


def test_eval_adversary_beats_random_sources_and_stays_in_the_box():
    model, comps, x = poor_tms()
    seen = []

    def masked_output(xb, masks, deltas):
        for v in list(masks.values()) + list(deltas.values()):
            seen.append((float(np.min(getval(v))), float(np.max(getval(v)))))
        return model.masked_output(comps, xb, masks, deltas)

    tgt = model.clean(x)
    ci = {k: np.asarray(v) for k, v in model.ci(comps, tgt.pre)[0].items()}
    assert all(np.all(v == 0) for v in ci.values())  # so masks are the sources themselves
    res = pgd_eval(masked_output, x, ci, tgt.y, np.random.default_rng(3), steps=20, step_size=0.1)
    assert min(lo for lo, _ in seen) >= 0.0 and max(hi for _, hi in seen) <= 1.0
    assert all(v.shape == (1, 5) and np.all((v >= 0) & (v <= 1)) for v in res.sources.values())
    rng = np.random.default_rng(4)
    random = [np.mean((np.asarray(model.adversarial_output(comps, x, ci, {k: rng.random((1, 1, 5)) for k in ci}))
                       - tgt.y) ** 2) for _ in range(20)]
    assert np.allclose(model.clean(x).y, tgt.y) and np.allclose(model.faithfulness(comps), 0.0, atol=1e-20)
    assert res.loss[0] > res.initial_loss[0]
    assert res.loss[0] > max(random) and res.loss[0] > 3 * np.mean(random)


def test_eval_adversary_with_a_topk_mask_as_ci():
    """A method without CI (APD) passes its top-k selection as "ci": selected components are pinned
    at 1, so only the unselected ones can be attacked; with everything selected nothing can."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(1, 3, 4, 2))  # 3 full-rank components of a 4 -> 2 map

    def apd_output(x, masks, deltas):
        assert deltas is None
        m = masks["W"]  # (I, B, 3)
        return anp.einsum("ibc,ibd,icde->ibe", m, x, A)

    x = rng.normal(size=(1, 16, 4))
    y = np.einsum("ibd,icde->ibe", x, A)
    everything = {"W": np.ones((1, 16, 3))}
    res = pgd_eval(apd_output, x, everything, y, rng, delta=False)
    assert res.loss[0] == 0.0 and res.sources["W"].shape == (1, 3)
    topk = np.zeros((1, 16, 3))
    topk[..., 0] = 1.0
    res = pgd_eval(apd_output, x, {"W": topk}, y, rng, delta=False)
    assert res.loss[0] > 0.0 and np.allclose(res.sources["W"][0, 1:], 0.0)  # it ablates the unselected ones


@pytest.mark.parametrize("steps", [0, 1])
def test_eval_adversary_step_counts(steps):
    model, comps, x = poor_tms()
    tgt = model.clean(x)
    ci = {k: np.asarray(v) for k, v in model.ci(comps, tgt.pre)[0].items()}
    res = pgd_eval(lambda xb, m, d: model.masked_output(comps, xb, m, d), x, ci, np.asarray(tgt.y),
                   np.random.default_rng(0), steps=steps)
    if steps == 0:
        assert np.array_equal(res.loss, res.initial_loss)
    else:
        assert res.loss[0] >= res.initial_loss[0]
    assert mse(model.clean(x).y, model.clean(x).y)[0] == 0.0

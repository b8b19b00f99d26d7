"""LR schedules (notes §6) and Adam/AdamW with PyTorch semantics."""
import math

import numpy as np
import pytest

from runtime.engine.optim import Adam, lr_at
from runtime.spec import Optimizer, Schedule

LR = 0.2


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine", "exponential"])
def test_warmup_is_linear_from_zero(kind):
    sch = Schedule(kind=kind, warmup=0.1, halflife=10.0)  # 100 steps -> 10 warmup steps
    assert lr_at(0, 100, LR, sch) == 0.0
    assert lr_at(1, 100, LR, sch) == pytest.approx(LR * 0.1)
    assert lr_at(5, 100, LR, sch) == pytest.approx(LR * 0.5)
    assert lr_at(10, 100, LR, sch) == pytest.approx(LR)  # first post-warmup step: f(0) = 1


def test_constant():
    assert [lr_at(s, 50, LR, Schedule()) for s in (0, 25, 49)] == [LR] * 3


def test_linear_with_warmup():
    sch = Schedule(kind="linear", warmup=0.1)
    assert lr_at(55, 100, LR, sch) == pytest.approx(LR * (1 - 45 / 90))
    assert lr_at(99, 100, LR, sch) == pytest.approx(LR / 90)
    assert lr_at(0, 100, LR, Schedule(kind="linear")) == LR  # no warmup: starts at full LR


def test_cosine_hits_zero_at_last_update():
    sch = Schedule(kind="cosine", warmup=0.1)
    assert lr_at(99, 100, LR, sch) == pytest.approx(0.0, abs=1e-15)
    assert lr_at(54, 100, LR, sch) == pytest.approx(LR * math.cos(math.pi / 2 * 44 / 89))
    assert lr_at(0, 1, LR, Schedule(kind="cosine")) == LR  # S = 1: no decay at all
    assert lr_at(9, 10, LR, Schedule(kind="cosine")) == pytest.approx(0.0, abs=1e-15)


def test_exponential_half_life():
    sch = Schedule(kind="exponential", warmup=0.1, halflife=10.0)
    assert lr_at(20, 100, LR, sch) == pytest.approx(LR / 2)
    assert lr_at(30, 100, LR, sch) == pytest.approx(LR / 4)
    assert lr_at(15, 100, LR, sch) == pytest.approx(LR / math.sqrt(2))


def test_adam_first_step_scalar_by_hand():
    cfg = Optimizer(name="adam", lr=0.0, beta1=0.9, beta2=0.999, eps=1e-8)
    p = {"w": np.array(1.5)}
    opt = Adam(p, cfg)
    g = 0.3
    opt.step(p, {"w": np.array(g)}, 0.01)
    m_hat = (1 - 0.9) * g / (1 - 0.9)
    v_hat = (1 - 0.999) * g * g / (1 - 0.999)
    assert p["w"] == pytest.approx(1.5 - 0.01 * m_hat / (math.sqrt(v_hat) + 1e-8), abs=1e-15)
    assert p["w"] == pytest.approx(1.5 - 0.01, abs=1e-9)  # the first Adam step is ~lr * sign(g)


def test_adamw_weight_decay_is_decoupled():
    opt_cfg = Optimizer(name="adamw", weight_decay=0.5)
    p = {"w": np.array([2.0, -4.0])}
    Adam(p, opt_cfg).step(p, {"w": np.zeros(2)}, 0.1)  # zero gradient: only the decay acts
    np.testing.assert_allclose(p["w"], [2.0 * (1 - 0.05), -4.0 * (1 - 0.05)], rtol=1e-15)
    # decay is not fed through the moments: the step on a nonzero gradient is the plain Adam step
    q = {"w": np.array([2.0])}
    Adam(q, opt_cfg).step(q, {"w": np.array([1.0])}, 0.1)
    assert q["w"][0] == pytest.approx(2.0 * 0.95 - 0.1 * 1.0 / (1.0 + 1e-8), rel=1e-12)


def reference_adamw(p, grads, lrs, b1, b2, eps, wd):
    """torch.optim.AdamW's documented algorithm, written independently."""
    p = p.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        p = p - lr * wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_matches_reference_over_several_steps(wd):
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) * 10.0 ** -k for k in range(6)]  # shrinking grads exercise eps and bias correction
    lrs = [lr_at(s, 6, 0.05, Schedule(kind="cosine", warmup=0.34)) for s in range(6)]
    cfg = Optimizer(name="adamw", weight_decay=wd, beta1=0.8, beta2=0.95, eps=1e-6)
    params = {"p": p0.copy()}
    opt = Adam(params, cfg)
    for g, lr in zip(grads, lrs):
        opt.step(params, {"p": g}, lr)
    want = reference_adamw(p0, grads, lrs, 0.8, 0.95, 1e-6, wd)
    np.testing.assert_allclose(params["p"], want, rtol=1e-12, atol=1e-14)
    assert opt.t == 6


def test_adam_keeps_float32_and_updates_in_place():
    w = np.ones((2, 3), dtype=np.float32)
    params = {"w": w}
    opt = Adam(params, Optimizer(name="adamw", weight_decay=0.01))
    opt.step(params, {"w": np.full((2, 3), 0.5, dtype=np.float32)}, 1e-3)
    assert params["w"] is w and w.dtype == np.float32
    assert opt.m["w"].dtype == np.float32 and opt.v["w"].dtype == np.float32
    assert np.all(w < 1)

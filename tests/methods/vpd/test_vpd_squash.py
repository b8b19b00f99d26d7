"""The two squashings (runtime/methods/vpd/squash.py, notes §2): forward values, the lower one's
hand-written backward in each of its cases, and that a closed gate is pushed open only by a loss
that would fall if it opened."""
import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad

from runtime.methods.vpd.squash import lower_leaky, upper_leaky

ALPHA = 0.01


def vjp_lower(z, g):
    """The backward of lower_leaky for incoming gradient g (reverse mode hands g to the VJP)."""
    return grad(lambda v: anp.sum(lower_leaky(v, ALPHA) * g))(np.asarray(z, dtype=np.float64))


def test_forward_values():
    z = np.array([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5, 3.0])
    assert np.array_equal(lower_leaky(z, ALPHA), [0.0, 0.0, 0.0, 0.3, 1.0, 1.0, 1.0])
    assert np.allclose(upper_leaky(z, ALPHA), [0.0, 0.0, 0.0, 0.3, 1.0, 1.005, 1.02], rtol=0, atol=1e-15)


@pytest.mark.parametrize("z, g, expected", [
    (-0.5, -2.0, -0.02),  # closed, the loss falls if it opens: alpha g
    (-0.5, 2.0, 0.0),  # closed, the loss falls if it closes further: nothing
    (0.0, -2.0, -0.02),  # the tie z = 0 takes the closed branch
    (0.0, 2.0, 0.0),
    (0.4, 2.0, 2.0),  # inside: g itself, either sign
    (0.4, -3.0, -3.0),
    (1.0, 3.0, 3.0),  # z = 1 is inside (0 < z <= 1)
    (1.5, -2.0, 0.0),  # saturated: nothing, either sign
    (1.5, 2.0, 0.0),
])
def test_lower_backward_cases(z, g, expected):
    assert vjp_lower(np.array([z]), np.array([g]))[0] == pytest.approx(expected, abs=1e-15)


def test_lower_backward_elementwise_mixed():
    z = np.array([-1.0, -1.0, 0.5, 2.0])
    g = np.array([-1.0, 1.0, 0.7, -5.0])
    assert np.allclose(vjp_lower(z, g), [-0.01, 0.0, 0.7, 0.0], rtol=0, atol=1e-15)


def test_closed_gate_opens_when_opening_lowers_the_loss():
    loss = lambda v: anp.sum((lower_leaky(v, ALPHA) - 0.5) ** 2)  # wants the gate at 0.5
    z = np.array([-0.05])
    d = grad(loss)(z)
    assert d[0] == pytest.approx(ALPHA * 2 * (0.0 - 0.5))  # negative: descent raises z
    for _ in range(2):
        z = z - 10.0 * grad(loss)(z)
    assert z[0] > 0 and lower_leaky(z, ALPHA)[0] > 0  # opened


def test_closed_gate_not_pushed_further_closed():
    loss = lambda v: anp.sum(lower_leaky(v, ALPHA))  # wants the gate shut
    assert grad(loss)(np.array([-0.3]))[0] == 0.0


def test_upper_gradient():
    z = np.array([-0.5, 0.5, 2.0])
    d = grad(lambda v: anp.sum(upper_leaky(v, ALPHA) * np.array([1.0, 2.0, 3.0])))(z)
    assert np.allclose(d, [0.0, 2.0, 3.0 * ALPHA], rtol=0, atol=1e-15)


def test_float32_kept():
    z = np.linspace(-1, 2, 7, dtype=np.float32)
    assert lower_leaky(z, ALPHA).dtype == np.float32 and upper_leaky(z, ALPHA).dtype == np.float32
    g = grad(lambda v: anp.sum(lower_leaky(v, ALPHA) * np.float32(-1)))(z)
    assert g.dtype == np.float32

"""VPD's causal-importance MLP of one site (notes §2) as a single autograd primitive: the input
activation a (I, B, d_in) -> widths (GELU) -> C preactivations z, with a hand-written VJP.

    h_0 = a,   h_j = act(h_{j-1} @ w_{j-1} + b_{j-1})  (hidden layers),   z = h_L @ w_L + b_L

The forward pass keeps every hidden layer's output and activation derivative (engine/gelu.py's
fast blocks give both at once) for the backward pass, which is then GEMMs and one multiply per
hidden unit. The input a is the clean target's (never differentiated). `ci_mlp_plain` is the
definition in autograd.numpy, the reference (tests/methods/vpd: float64 to 1e-12).
"""
from __future__ import annotations

import weakref

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp_argnums, primitive

from ...engine.gelu import act, value_and_derivative


def ci_mlp_plain(a, activation: str, *wb):
    """The definition: wb = (w_0, b_0, w_1, b_1, ...), w_j (I, fan_in, fan_out), b_j (I, fan_out)."""
    h = a
    n = len(wb) // 2
    for j in range(n):
        h = anp.matmul(h, wb[2 * j]) + anp.expand_dims(wb[2 * j + 1], 1)
        if j < n - 1:
            h = act(h, activation)
    return h


_KEPT: dict[int, tuple] = {}  # id(z) -> (inputs of every layer, derivatives of every hidden layer)


def _forget(key: int) -> None:
    _KEPT.pop(key, None)


def _forward(a, activation, wb):
    hs, ps = [a], []
    n = len(wb) // 2
    h = a
    for j in range(n):
        h = np.matmul(h, wb[2 * j])
        h += wb[2 * j + 1][:, None, :]
        if j < n - 1:
            h, p = value_and_derivative(h, activation)
            hs.append(h)
            ps.append(p)
    return h, hs, ps


@primitive
def ci_mlp(a, activation: str, *wb):
    """`ci_mlp_plain`'s value; keeps what the backward pass needs while z lives."""
    z, hs, ps = _forward(a, activation, wb)
    _KEPT[id(z)] = (hs, ps)
    weakref.finalize(z, _forget, id(z))
    return z


def _ci_mlp_vjp(argnums, ans, args, kwargs):
    a, activation, *wb = args
    kept = _KEPT.pop(id(ans), None)
    hs, ps = kept if kept is not None else _forward(a, activation, wb)[1:]
    n = len(wb) // 2

    def vjp(g):
        grads = {}
        d = g  # gradient w.r.t. layer j's output (pre-activation for the hidden layers' next step)
        for j in range(n - 1, -1, -1):
            grads[2 + 2 * j] = np.matmul(np.swapaxes(hs[j], -1, -2), d)  # w_j
            grads[3 + 2 * j] = np.sum(d, axis=1)  # b_j
            if j == 0 and 0 not in argnums:
                break
            d = np.matmul(d, np.swapaxes(wb[2 * j], -1, -2))
            if j > 0:
                d *= ps[j - 1]
        grads[0] = d
        return tuple(grads[i] for i in argnums)

    return vjp


defvjp_argnums(ci_mlp, _ci_mlp_vjp)

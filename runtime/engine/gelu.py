"""GELU for the causal-importance MLPs (SPD, VPD) and the targets: the autograd definitions (the
reference), fast in-place blocks that give the value G and the derivative P together, and an
autograd primitive on them.

    gelu         z Phi(z) with the exact erf (torch's default GELU, the papers')
    gelu_tanh    the tanh approximation 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))

In float32 the exact GELU is computed from fast ufuncs: Phi through erfc by Abramowitz & Stegun
7.1.26 (|error| <= 1.5e-7 in erf, i.e. <= 7.5e-8 in Phi: float32 rounding), which shares
exp(-z^2/2) with the derivative Phi(z) + z phi(z). scipy's erf costs ~11-17 ns per float32 element
here, this ~3.5 ns for value and derivative together (benchmarks/spd_kernels.py). In float64 (the
precise mode, gradient checks) the blocks use scipy's erf.
"""
from __future__ import annotations

import math
import weakref

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp, primitive

ACTIVATIONS = ("gelu", "gelu_tanh")
_TANH_C = math.sqrt(2.0 / math.pi)
_TANH_A = 0.044715


def gelu(z):
    """z Phi(z) with the exact erf (torch's default GELU, the papers')."""
    from autograd.scipy.special import erf  # lazy: runtime imports without scipy

    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


def gelu_tanh(z):
    """The tanh approximation 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))."""
    return 0.5 * z * (1.0 + anp.tanh(_TANH_C * (z + _TANH_A * z * z * z)))


def activation_fn(name: str):
    """The autograd definition of a causal-importance activation (the reference)."""
    if name == "gelu":
        return gelu
    if name == "gelu_tanh":
        return gelu_tanh
    raise ValueError(f"unknown causal-importance activation {name!r}; known: {', '.join(ACTIVATIONS)}")


# ------------------------------------------------------------------------------------------
# Fast activation blocks: value G and derivative P of a (K, W) block z, in place

# erfc(x) ~ t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-x^2), t = 1 / (1 + p x), x >= 0 (A&S 7.1.26).
# With x = |z| / sqrt(2) and the coefficients scaled by sqrt(2 pi) / 2, the polynomial times
# phi(z) = exp(-z^2/2) / sqrt(2 pi) is erfc(|z| / sqrt(2)) / 2 = Phi(-|z|) directly.
_AS_P = 0.3275911 / math.sqrt(2.0)
_AS_A = tuple(a * math.sqrt(2.0 * math.pi) / 2.0
              for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429))
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu_block_fast(z: np.ndarray, g: np.ndarray, p: np.ndarray, a: np.ndarray, t: np.ndarray) -> None:
    """G = z Phi(z) into g, P = Phi(z) + z phi(z) into p, for a float32 block z; a, t are scratch of
    z's shape. Branch-free, 24 in-place ufuncs: with Q = Phi(-|z|) (A&S), Phi(z) = 1/2 + sign(z) (1/2 - Q).
    Errors are absolute, at float32 rounding of the O(1) values (the far negative tail of G, below
    ~1e-8, is not resolved relatively)."""
    np.abs(z, out=a)
    np.multiply(a, _AS_P, out=t)
    t += 1.0
    np.reciprocal(t, out=t)
    a1, a2, a3, a4, a5 = _AS_A
    np.multiply(t, a5, out=p)  # p holds Q while it is built
    p += a4
    p *= t
    p += a3
    p *= t
    p += a2
    p *= t
    p += a1
    p *= t
    np.multiply(z, z, out=t)  # t: phi(z)
    t *= -0.5
    np.exp(t, out=t)
    t *= _INV_SQRT_2PI
    p *= t  # Q = Phi(-|z|)
    np.subtract(0.5, p, out=p)
    np.copysign(p, z, out=p)
    p += 0.5  # Phi(z)
    np.multiply(z, p, out=g)  # G
    t *= z
    p += t  # P = Phi + z phi


def gelu_block_exact(z: np.ndarray, g: np.ndarray, p: np.ndarray, a: np.ndarray, t: np.ndarray) -> None:
    """As `gelu_block_fast` with scipy's erf (the float64 path)."""
    from scipy.special import erf

    erf(z * (1.0 / math.sqrt(2.0)), out=a)
    a += 1.0
    a *= 0.5  # Phi
    np.multiply(z, a, out=g)
    np.multiply(z, z, out=t)
    t *= -0.5
    np.exp(t, out=t)
    t *= _INV_SQRT_2PI
    t *= z
    np.add(a, t, out=p)


def gelu_tanh_block(z: np.ndarray, g: np.ndarray, p: np.ndarray, a: np.ndarray, t: np.ndarray) -> None:
    """G and P of the tanh approximation: with u = c (z + a z^3), s = (1 + tanh u) / 2,
    G = z s and P = s + z (1 - tanh^2 u) c (1 + 3 a z^2) / 2."""
    np.multiply(z, z, out=a)  # z^2
    np.multiply(a, _TANH_A * _TANH_C, out=t)
    t += _TANH_C
    t *= z  # u
    np.tanh(t, out=t)
    np.multiply(a, 3.0 * _TANH_A * _TANH_C * 0.5, out=a)
    a += _TANH_C * 0.5  # c (1 + 3 a z^2) / 2
    a *= z
    np.multiply(t, t, out=p)
    np.subtract(1.0, p, out=p)
    p *= a  # z (1 - tanh^2) c (1 + 3 a z^2) / 2
    t += 1.0
    t *= 0.5  # s
    np.multiply(z, t, out=g)
    p += t


def block_fn(activation: str, dtype) -> callable:
    if activation == "gelu_tanh":
        return gelu_tanh_block
    if activation == "gelu":
        return gelu_block_fast if np.dtype(dtype) == np.float32 else gelu_block_exact
    raise ValueError(f"unknown causal-importance activation {activation!r}")


BLOCK = 1 << 16  # elements per block: the block's five arrays (256 KiB each in float32) stay in L2


def value_and_derivative(z: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray]:
    """(G, P): the activation and its derivative at z, by the fast blocks (any shape, z's dtype),
    BLOCK elements at a time so that the block's ~24 passes run in cache."""
    z = np.ascontiguousarray(z)
    g, p = np.empty_like(z), np.empty_like(z)
    zf, gf, pf = z.reshape(-1), g.reshape(-1), p.reshape(-1)
    n = zf.size
    a, t = np.empty(min(n, BLOCK), dtype=z.dtype), np.empty(min(n, BLOCK), dtype=z.dtype)
    block = block_fn(activation, z.dtype)
    for i in range(0, n, BLOCK):
        j = min(i + BLOCK, n)
        block(zf[i:j], gf[i:j], pf[i:j], a[:j - i], t[:j - i])
    return g, p


_DERIVATIVES: dict[int, np.ndarray] = {}  # id(G) -> P, kept from the forward pass for the backward


def _forget(key: int) -> None:
    _DERIVATIVES.pop(key, None)


@primitive
def act(z, activation: str):
    """The activation of a causal-importance MLP's hidden layer, as one primitive: its forward is a
    fast block that also gives the derivative, kept (while G lives) for the backward, which is then
    one multiply (no erf, no autograd graph of ~10 ufuncs per element)."""
    g, p = value_and_derivative(z, activation)
    _DERIVATIVES[id(g)] = p
    weakref.finalize(g, _forget, id(g))
    return g


def _act_vjp(ans, z, activation):
    p = _DERIVATIVES.pop(id(ans), None)
    if p is None:  # (not from this forward: recompute)
        p = value_and_derivative(z, activation)[1]
    return lambda g: g * p


defvjp(act, _act_vjp)

"""The two squashings of VPD's causal-importance preactivations z (notes §2).

lower (feeds every mask): forward clamp(z, 0, 1); backward by hand (not the clamp's derivative):

    d/dz  =  g           where 0 < z <= 1
             alpha g     where z <= 0 and g < 0      (else 0)
             0           where z > 1

Sign convention: g is the incoming gradient dL/d(out) of the loss L being *minimised* (what reverse
mode hands a VJP). g < 0 means "L would fall if the gate opened"; gradient descent then moves z by
-lr alpha g > 0, so a closed gate (z <= 0) can be pushed open but never pushed further closed. The
tie z = 0 takes the closed (z <= 0) branch, as the authors' spec pins it.

upper (feeds the sparsity penalty only): 1 + alpha (z - 1) for z > 1, else clamp(z, 0, 1), with
ordinary derivatives (slope alpha above 1, 1 inside, 0 below 0): the penalty can never push CI below
0. `upper_leaky` is one primitive; `upper_leaky_plain` the autograd.numpy definition (the reference).
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp, primitive


@primitive
def lower_leaky(z, alpha: float):
    """clamp(z, 0, 1) with the sign-gated leaky backward above."""
    return np.clip(z, 0.0, 1.0)


def lower_leaky_vjp(z: np.ndarray, g: np.ndarray, alpha: float) -> np.ndarray:
    """The backward of `lower_leaky` for incoming gradient g (the nested where, <= boundaries)."""
    closed = np.where(g < 0, alpha * g, np.zeros_like(g))
    return np.where(z > 1, np.zeros_like(g), np.where(z > 0, g, closed)).astype(np.result_type(z, g), copy=False)


defvjp(lower_leaky, lambda ans, z, alpha: lambda g: lower_leaky_vjp(z, g, alpha))


def upper_leaky_plain(z, alpha: float):
    """1 + alpha (z - 1) above 1, clamp(z, 0, 1) elsewhere (plain autodiff): the reference."""
    return anp.where(z > 1, 1.0 + alpha * (z - 1.0), anp.clip(z, 0.0, 1.0))


@primitive
def upper_leaky(z, alpha: float):
    """`upper_leaky_plain` as one primitive: its derivative is alpha above 1, 1 on [0, 1] (torch's clamp
    convention at the ends; autograd's clip gives 0 at exactly 0 and 1, a measure-zero difference),
    0 below 0."""
    return np.where(z > 1, 1.0 + alpha * (z - 1.0), np.clip(z, 0.0, 1.0)).astype(z.dtype, copy=False)


def upper_leaky_vjp(z: np.ndarray, g: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(z > 1, alpha * g, np.where(z < 0, np.zeros_like(g), g)).astype(np.result_type(z, g), copy=False)


defvjp(upper_leaky, lambda ans, z, alpha: lambda g: upper_leaky_vjp(z, g, alpha))

"""VPD's importance-minimality terms (notes §3): smooth L0 on the upper CI, firing frequencies per
site and subcomponent, the activity sum and the frequency (description-length) penalty.

    phi_g(c)  = c^2 / (c^2 + g^2)            (x (1 + g^2) with normalize_at_one: phi_g(1) = 1 for all g)
    f[s, c]   = sum_b phi_g(ci_upper[s, b, c]) / B
    activity  = sum_s sum_c f[s, c]
    freq      = sum_s sum_c f[s, c] log2(1 + a' f[s, c])

f is formed on the whole batch before the log (the penalty is convex in f: per-example or per-shard
frequencies combined after the log would be a different, larger number). Every value is per
replicate (leading axis I). g anneals over training by `schedules.linear(g_start, g_end)`.
"""
from __future__ import annotations

import math

import autograd.numpy as anp

_INV_LN2 = 1.0 / math.log(2.0)


def smooth_l0(c, g: float, normalize_at_one: bool = False):
    """phi_g(c), elementwise."""
    c2 = c * c
    phi = c2 / (c2 + g * g)
    return phi * (1.0 + g * g) if normalize_at_one else phi


def frequencies(ci_upper, g: float, normalize_at_one: bool = False, weights=None, batch: int | None = None):
    """f (I, C) of one site from its upper CI (I, R, C): the batch mean of phi_g; with row `weights`
    (I, R), the weighted sum over the R rows divided by `batch` (the rows a dropped all-zero row
    stands for counted through its weight)."""
    phi = smooth_l0(ci_upper, g, normalize_at_one)
    if weights is None:
        return anp.mean(phi, axis=1)
    return anp.sum(phi * weights[..., None], axis=1) / batch


def activity(freqs: dict):
    """sum over sites and subcomponents of f, per replicate (I,)."""
    return sum(anp.sum(f, axis=-1) for f in freqs.values())


def frequency_penalty(freqs: dict, reference: float):
    """sum over sites and subcomponents of f log2(1 + a' f), per replicate (I,); a' = `reference`."""
    return sum(anp.sum(f * anp.log1p(reference * f), axis=-1) * _INV_LN2 for f in freqs.values())

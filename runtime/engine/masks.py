"""The mask rule of the stochastic and adversarial methods (VPD notes §1): a *source* in [0, 1] per
channel of a decomposed matrix is mixed with the importance of each subcomponent,

    mask = importance + (1 - importance) * source[..., :C]        delta_mask = source[..., C]

(the (C+1)-th channel, when the method has one, masks the residual W - sum of the subcomponents,
raw, without importance). Shared by VPD's training adversary (runtime/methods/vpd) and the
evaluation adversary every method is measured with (runtime/analysis/adversary.py).
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp, primitive


@primitive
def channels(x, start: int, stop: int):
    """x[..., start:stop]; its backward writes the cotangent into zeros by slice assignment
    (autograd's own indexing backward uses np.add.at: a third of a TMS step at batch 2048)."""
    return x[..., start:stop]


def _channels_vjp(ans, x, start, stop):
    def vjp(g):
        out = np.zeros(np.shape(x), dtype=np.result_type(g))
        out[..., start:stop] = g
        return out

    return vjp


defvjp(channels, _channels_vjp)


def make_masks(importance, source, delta: bool = True):
    """(mask, delta_mask or None) from importances (..., C) and sources (..., C + delta); the
    source's leading axes broadcast against the importances' (an eval source (I, 1, C+1) serves
    every row)."""
    C = importance.shape[-1]
    mask = importance + (1.0 - importance) * channels(source, 0, C)
    return mask, (anp.reshape(channels(source, C, C + 1), np.shape(source)[:-1]) if delta else None)


def output_mse(y, y_ref):
    """Output reconstruction per replicate (I,): mean over rows and outputs of (y - y_ref)^2."""
    d = y - y_ref
    return anp.mean(d * d, axis=(1, 2))

"""VPD's adversaries (notes §4, §5): the persistent training adversary (PPGD) and the evaluation
adversary, with the mask rule they share.

A *source* is a value in [0, 1] per channel that a mask is built from (notes §1):

    mask = ci + (1 - ci) * source[..., :C]        delta_mask = source[..., C]   (raw, no CI)

Persistent sources (training): one row per batch index and site, (I, B, C+1), initialised U[0, 1],
moved by gradient *ascent* with their own Adam (denominator sqrt(v_hat) + eps) and clamped to
[0, 1] after every update; sources and moments persist across steps (and checkpoints). The ascents
themselves are driven by the trainer (train.py), which owns the losses.

Evaluation adversary (`pgd_eval`): a fresh attack on a fixed batch, usable by any method that can
run its model with per-component masks (see `MaskedOutput`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import autograd.numpy as anp
import numpy as np
from autograd import grad
from autograd.extend import defvjp, primitive

from ...engine.optim import Adam
from ...spec import Optimizer

# masked_output(x, masks, delta_masks) -> y (I, B, d_out): the method's model on inputs x (I, B, n_in)
# with every decomposed site s scaled per row and subcomponent by masks[s] (I, B, C_s), and (when the
# method has a delta channel) its residual W_s - (sum of its subcomponents) by delta_masks[s] (I, B);
# delta_masks is None for a method without one. Must be autograd-traceable in the masks.
MaskedOutput = Callable[[np.ndarray, dict, dict | None], object]


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


def make_masks(ci, source, delta: bool = True):
    """(mask, delta_mask) from causal importances ci (..., C) and sources (..., C + delta); the
    source's leading axes broadcast against ci's (an eval source (I, 1, C+1) serves every row)."""
    C = ci.shape[-1]
    mask = ci + (1.0 - ci) * channels(source, 0, C)
    return mask, (anp.reshape(channels(source, C, C + 1), np.shape(source)[:-1]) if delta else None)


def mse(y, y_ref):
    """Output reconstruction per replicate (I,): mean over rows and outputs of (y - y_ref)^2."""
    d = y - y_ref
    return anp.mean(d * d, axis=(1, 2))


class PersistentSources:
    """The PPGD adversary's state: sources {site: (I, B, n_channels)} and their Adam moments."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], rng: np.random.Generator, dtype,
                 beta1: float, beta2: float, eps: float):
        self.sources = {k: rng.random(shape, dtype=np.dtype(dtype)) for k, shape in shapes.items()}
        # lr is passed per step (the source schedule), so the config's lr is unused
        self.opt = Adam(self.sources, Optimizer("adam", 0.0, 0.0, beta1, beta2, eps))

    def ascend(self, grads: dict[str, np.ndarray], lr: float) -> None:
        """One Adam step up the gradient of the loss the sources attack, then the clamp to [0, 1]."""
        self.opt.step(self.sources, {k: -np.asarray(grads[k], dtype=v.dtype) for k, v in self.sources.items()}, lr)
        for v in self.sources.values():
            np.clip(v, 0.0, 1.0, out=v)

    def state(self) -> tuple[dict[str, np.ndarray], int]:
        """(arrays "src.<site>", "src_m.<site>", "src_v.<site>"; Adam's step count)."""
        arrays = {}
        for prefix, d in (("src.", self.sources), ("src_m.", self.opt.m), ("src_v.", self.opt.v)):
            arrays.update({prefix + k: v for k, v in d.items()})
        return arrays, self.opt.t

    def restore(self, arrays: dict[str, np.ndarray], t: int) -> None:
        for prefix, d in (("src.", self.sources), ("src_m.", self.opt.m), ("src_v.", self.opt.v)):
            for k, v in d.items():
                v[...] = arrays[prefix + k]
        self.opt.t = int(t)


@dataclass
class PgdResult:
    """What the evaluation adversary reached: per-replicate reconstruction (I,) at its final
    sources and at its random start, and the final sources {site: (I, n_channels)}."""

    loss: np.ndarray
    initial_loss: np.ndarray
    sources: dict


def pgd_eval(masked_output: MaskedOutput, x: np.ndarray, ci: dict, y_ref: np.ndarray, rng: np.random.Generator,
             delta: bool = True, steps: int = 20, step_size: float = 0.1,
             recon: Callable = mse) -> PgdResult:
    """The evaluation adversary (notes §5): one source vector per site and replicate, shared by
    every row of the batch, drawn U[0, 1], then `steps` sign-gradient ascents of `step_size` on the
    reconstruction (each followed by the clamp to [0, 1]); returns the loss at the final sources.

    `ci` {site: (I, B, C)} are the causal importances the sources are mixed with (mask = ci + (1 -
    ci) source). Methods without a learned CI pass what decides importance instead: for APD the
    top-k mask (0/1) of the batch, so the adversary can only perturb the components top-k left
    out. `delta`: sources get a (C+1)-th channel for the delta mask."""
    I = y_ref.shape[0]
    dtype = y_ref.dtype
    src = {k: rng.random((I, 1, c.shape[-1] + int(delta))).astype(dtype) for k, c in ci.items()}

    def objective(s):
        masks, deltas = {}, {}
        for k, c in ci.items():
            masks[k], deltas[k] = make_masks(c, s[k], delta)
        return recon(masked_output(x, masks, deltas if delta else None), y_ref)

    ascent = grad(lambda s: anp.sum(objective(s)))
    initial = np.asarray(objective(src))
    for _ in range(steps):
        g = ascent(src)
        src = {k: np.clip(v + step_size * np.sign(g[k]), 0.0, 1.0).astype(dtype) for k, v in src.items()}
    return PgdResult(np.asarray(objective(src)), initial, {k: v[:, 0, :] for k, v in src.items()})

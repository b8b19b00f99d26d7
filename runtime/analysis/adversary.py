"""The evaluation adversary (VPD notes §5), for every method: how far an adversarial choice of the
unimportant components' masks can break the decomposed model.

A fresh attack on a fixed batch, not the training one: one source vector per decomposed matrix and
replicate, shared by every row of the batch, drawn U[0, 1], then `steps` sign-gradient ascents of
`step_size` on the output reconstruction, each followed by the clamp to [0, 1]. Masks follow
engine/masks.py: mask = importance + (1 - importance) source. What "importance" is comes from the
method (`RunAnalysis.adversary_view`): SPD and VPD's causal importances, APD's batch top-k mask
(0/1: the adversary can scale only the components top-k left out, by any amount in [0, 1]).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import autograd.numpy as anp
import numpy as np
from autograd import grad

from ..engine.masks import make_masks, output_mse as mse
from .metrics import COMPUTED

# masked_output(x, masks, delta_masks) -> y (I, B, d_out): the method's model on inputs x (I, B, n_in)
# with every decomposed matrix s scaled per row and component by masks[s] (I, B, C_s), and (when the
# method has a delta channel) its residual W_s - (sum of its components) by delta_masks[s] (I, B);
# delta_masks is None for a method without one. Must be autograd-traceable in the masks.
MaskedOutput = Callable[[np.ndarray, dict, "dict | None"], object]


@dataclass
class PgdResult:
    """What the evaluation adversary reached: per-replicate reconstruction (I,) at its final
    sources and at its random start, and the final sources {matrix: (I, n_channels)}."""

    loss: np.ndarray
    initial_loss: np.ndarray
    sources: dict


def pgd_eval(masked_output: MaskedOutput, x: np.ndarray, importance: dict, y_ref: np.ndarray,
             rng: np.random.Generator, delta: bool = True, steps: int = 20, step_size: float = 0.1,
             recon: Callable = mse) -> PgdResult:
    """The attack of the module docstring on batch x: `importance` {matrix: (I, B, C)} are what the
    sources are mixed with; `delta`: the sources get a (C+1)-th channel for the delta mask."""
    I = y_ref.shape[0]
    dtype = y_ref.dtype
    src = {k: rng.random((I, 1, c.shape[-1] + int(delta))).astype(dtype) for k, c in importance.items()}

    def objective(s):
        masks, deltas = {}, {}
        for k, c in importance.items():
            masks[k], deltas[k] = make_masks(c, s[k], delta)
        return recon(masked_output(x, masks, deltas if delta else None), y_ref)

    ascent = grad(lambda s: anp.sum(objective(s)))
    initial = np.asarray(objective(src))
    for _ in range(steps):
        g = ascent(src)
        src = {k: np.clip(v + step_size * np.sign(g[k]), 0.0, 1.0).astype(dtype) for k, v in src.items()}
    return PgdResult(np.asarray(objective(src)), initial, {k: v[:, 0, :] for k, v in src.items()})


@dataclass
class AdversaryView:
    """What a method shows the evaluation adversary on one batch: its importances {matrix: (I, B,
    C)}, its masked model (MaskedOutput), whether it has a delta channel, and the reference output."""

    importance: dict
    masked_output: MaskedOutput
    delta: bool
    y_ref: np.ndarray


def adversarial_recon(an) -> dict:
    """{"adv_recon", "clean_recon", "stoch_recon"}: (I,) each, the mean over report.adversary.batches
    batches of the training distribution (stream "eval.adversary"): the attack's final loss, the
    loss with every source 0 (masks = importances) and with one uniform draw per row and channel."""
    cfg = an.exp.report.adversary
    rng = an.rng("adversary")
    out = {"adv_recon": [], "clean_recon": [], "stoch_recon": []}
    for _ in range(max(1, cfg.batches)):
        x = an.sample(rng)
        view = an.adversary_view(x)
        res = pgd_eval(view.masked_output, x, view.importance, view.y_ref, rng, view.delta, cfg.steps, cfg.step_size)
        out["adv_recon"].append(res.loss)
        zero = {k: np.zeros((v.shape[0], 1, v.shape[-1] + int(view.delta)), dtype=v.dtype)
                for k, v in view.importance.items()}
        draw = {k: rng.random(v.shape[:-1] + (v.shape[-1] + int(view.delta),)).astype(v.dtype)
                for k, v in view.importance.items()}
        for name, src in (("clean_recon", zero), ("stoch_recon", draw)):
            masks, deltas = {}, {}
            for k, c in view.importance.items():
                masks[k], deltas[k] = make_masks(c, src[k], view.delta)
            out[name].append(np.asarray(mse(view.masked_output(x, masks, deltas if view.delta else None), view.y_ref)))
    return {k: np.mean(np.stack(v), axis=0).astype(np.float64) for k, v in out.items()}


def _cached(an) -> dict:
    if "adversarial_recon" not in an._cache:
        an._cache["adversarial_recon"] = adversarial_recon(an)
    return an._cache["adversarial_recon"]


COMPUTED.update({name: (lambda an, name=name: _cached(an)[name]) for name in ("adv_recon", "clean_recon", "stoch_recon")})

"""The APD training loop, in the exact step order of notes §4.1.

    for step in 0..steps (the last iteration only logs):
      1. unit-norm: divide every A's columns by their norm (B untouched)          [if unit_norm]
      2. LR for this step (warmup + schedule)
      3. draw a batch x
      4. target forward -> y*, layer inputs/outputs (constants)
      5. attributions and the top-k mask, outside the traced loss (top-k mode)
      6. traced loss: faithfulness, minimality (masked pass), act-recon, Schatten, Lp, out-recon
      7. backward; project A's gradient onto the unit sphere's tangent space; Adam step

Per-term losses are per replicate; the optimised total sums replicates (each replicate's gradient
is exactly that of an independent run) and logs their mean.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
from autograd import value_and_grad
from autograd.tracer import getval

from . import apd
from .attributions import attributions, topk_mask
from .models import Params, layers_of, n_outputs, target_forward
from .optim import Adam, lr_at
from .spec import Experiment, Target

TERMS = ("faithfulness", "minimality", "act_recon", "simplicity", "sparsity", "output_recon")


@dataclasses.dataclass
class Decomposition:
    """Trained components (flat layout of `apd.py`, leading replicate axis) and the loss history."""

    arch: Target
    C: int
    m: int
    comps: apd.Comps
    history: list
    wall_time: float = 0.0
    steps_per_second: float = 0.0

    def components(self, name: str, replicate: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A (C, d_in, m), B (C, m, d_out) of one decomposed parameter and replicate."""
        A, B = apd.to_components(self.comps, name, self.C)
        return A[replicate], B[replicate]


def normalise_columns(comps: apd.Comps, arch: Target) -> None:
    """Unit-norm every column A_c[:, r] over d_in, in place (notes §3.5). Tied uses are derived."""
    for name in apd.decomposed_params(arch):
        A = comps[f"{name}.A"]
        A /= np.linalg.norm(A, axis=1, keepdims=True)


def project_gradients(grads: apd.Comps, comps: apd.Comps, arch: Target) -> None:
    """g <- g - <g, A> A per column: the tangent space of the unit sphere (A is unit-norm)."""
    for name in apd.decomposed_params(arch):
        A, g = comps[f"{name}.A"], grads[f"{name}.A"]
        g -= np.sum(g * A, axis=1, keepdims=True) * A


class LossProblem:
    """Builds the traced loss of one step for a given experiment and target."""

    def __init__(self, exp: Experiment, arch: Target, target: Params):
        self.exp, self.arch, self.target = exp, arch, target
        dc = exp.decompose
        self.C, self.m = dc.components, dc.rank
        self.L = dc.loss
        self.topk = dc.topk
        self.attr = dc.attribution
        self.d_out = n_outputs(arch)
        L = self.L
        # The unmasked APD pass is needed only for these (notes §10.3.4).
        self.needs_full = (L.output_recon is not None
                           or (L.act_recon is not None and self.topk is None)
                           or (L.sparsity is not None and not (self.attr.kind == "gradient" and self.attr.source == "target")))
        self.needs_traced_attr = L.sparsity is not None

    def constant_mask(self, comps: apd.Comps, x: np.ndarray, tgt) -> np.ndarray | None:
        """Top-k mask from attributions computed on plain arrays (no gradient needed)."""
        if self.topk is None or self.needs_traced_attr:
            return None
        a = attributions(self.attr.kind, self.attr.source, self.arch, self.target, tgt, comps, x, self.C, self.m)
        return topk_mask(self.topk.mode, self.topk.value, np.asarray(a), x)

    def loss(self, comps: apd.Comps, x: np.ndarray, tgt, mask: np.ndarray | None, record: dict):
        arch, L, C, m = self.arch, self.L, self.C, self.m
        terms = {}
        full = apd.apd_forward(arch, self.target, comps, x) if self.needs_full else None
        if L.faithfulness is not None:
            terms["faithfulness"] = apd.faithfulness_loss(arch, comps, self.target)
        lp = None
        if self.needs_traced_attr:
            a = attributions(self.attr.kind, self.attr.source, arch, self.target, tgt, comps, x, C, m, apd_trace=full)
            lp = apd.lp_terms(a, self.d_out, L.sparsity_p)
            terms["sparsity"] = apd.lp_sparsity_loss(lp)
            if self.topk is not None:
                mask = topk_mask(self.topk.mode, self.topk.value, np.asarray(getval(a)), x)
        masked = None
        if mask is not None:
            masked = apd.apd_forward(arch, self.target, comps, x, mask=mask.astype(x.dtype), m=m)
            if L.minimality is not None:
                terms["minimality"] = apd.mse_loss(masked.y, tgt.y)
            record["mean_active"] = mask.sum(axis=2).mean(axis=1)
        if L.act_recon is not None:
            terms["act_recon"] = apd.act_recon_loss(arch, masked if masked is not None else full, tgt)
        if L.simplicity is not None:
            terms["simplicity"] = apd.schatten_loss(arch, comps, mask if mask is not None else lp, C, L.simplicity_p)
        if L.output_recon is not None:
            terms["output_recon"] = apd.mse_loss(full.y, tgt.y)
        total = 0.0
        for name, value in terms.items():
            total = total + getattr(L, name) * value
            record[name] = np.asarray(getval(value))
        record["total"] = np.asarray(getval(total))
        import autograd.numpy as anp

        return anp.sum(total)


def decompose(exp: Experiment, arch: Target, target: Params, sample: Callable[[int], np.ndarray],
              rng_init: np.random.Generator, log: Callable[[dict], None] | None = None,
              progress: Callable[[int, int, dict], None] | None = None,
              comps: apd.Comps | None = None) -> Decomposition:
    """Run APD on `target` (params with a leading replicate axis) with batches from `sample(B)`.

    `log(record)` is called every `decompose.log_every` steps and at the end with every loss term
    (mean over replicates, and per replicate under "<term>/replicates")."""
    dc = exp.decompose
    dtype = np.dtype(exp.dtype)
    I = exp.replicates
    if comps is None:
        comps = apd.init_components(arch, dc.components, dc.rank, I, dc.init_scale, rng_init, dtype)
    problem = LossProblem(exp, arch, target)
    opt = Adam(comps, dc.optimizer)
    history: list[dict] = []
    t0 = time.perf_counter()
    for step in range(dc.steps + 1):
        if dc.unit_norm:
            normalise_columns(comps, arch)
        lr = lr_at(step, dc.steps, dc.optimizer.lr, dc.schedule) if step < dc.steps else 0.0
        x = sample(dc.batch)
        tgt = target_forward(arch, target, x)
        mask = problem.constant_mask(comps, x, tgt)
        record: dict = {}
        _, grads = value_and_grad(lambda c: problem.loss(c, x, tgt, mask, record))(comps)
        is_log = step % dc.log_every == 0 or step == dc.steps
        if is_log or progress is not None:
            entry = {"step": step, "lr": lr}
            for k, v in record.items():
                entry[k] = float(np.mean(v))
                if I > 1 and is_log:
                    entry[f"{k}/replicates"] = [float(u) for u in np.ravel(v)]
            if is_log:
                history.append(entry)
                if log is not None:
                    log(entry)
            if progress is not None:
                progress(step, dc.steps, entry)
        if step == dc.steps:
            break
        grads = {k: np.asarray(g, dtype=dtype) for k, g in grads.items()}
        if dc.unit_norm:
            project_gradients(grads, comps, arch)
        opt.step(comps, grads, lr)
    wall = time.perf_counter() - t0
    return Decomposition(arch, dc.components, dc.rank, comps, history, wall, dc.steps / max(wall, 1e-9))

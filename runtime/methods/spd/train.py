"""The SPD training step and its trainer: what `decompose.decompose` runs for `method = "spd"`.

    for step in 0..steps (the last iteration only logs, as for APD):
      0. before step 0 only, with decompose.faithfulness_warmup (not in the paper): AdamW steps on the
         faithfulness loss alone (V, U), their own optimiser state
      1. LR of the step (warmup + schedule, `optim.lr_at`), beta_3 of the step (importance warmup)
      2. a batch x (stream "apd_data")
      3. rows with an all-zero input dropped where that is exact (`spd.zero_rows_inert`): such a row
         has h = 0 in every matrix and the same output under every mask, so it adds only gamma(0)'s
         importance; one zero row is kept and weighted for all of them (TMS 5-2: ~77% of rows)
      4. the mask noise R of the rows kept, (S, I, R, C) per matrix (stream "spd_masks",
         `spd.draw_uniforms`; the noise of a dropped row could not change anything)
      5. target forward, then the loss (`spd.SpdLoss.terms`) and its gradient (autograd, with the
         causal-importance MLPs as the hand-written primitive `ci.ci_mlp`)
      6. non-finite guard, Adam (`kernels.FastAdam`)

Per-term losses are per replicate; the optimised total sums replicates, so each replicate's
gradient is exactly an independent run's (given its batch and mask noise).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import autograd.numpy as anp
import numpy as np
from autograd import value_and_grad
from autograd.tracer import getval

from ...engine import seeding
from ...engine.decompose import GRAD_CHECK_EVERY, Decomposition, MethodEngine, first_non_finite, replicate_sums
from ...engine.kernels import FastAdam, default_blas_threads, tune_malloc
from ...engine.models import Params, target_forward
from ...engine.optim import lr_at
from ...engine.rows import compact_index, nonzero_rows, row_weights
from ...engine.registry import ENGINES
from ...spec import METHODS, Experiment, Optimizer, Target
from .ci import sigma_lower as ci_sigma_lower
from .kinds import hooks
from .model import (SpdLoss, SpdParams, draw_uniforms, faithfulness_value_and_grad, init_spd, spd_layers,
                    step_cost, zero_rows_inert)

CI_ACTIVE = 0.1  # a subcomponent counts as causally important on a sample when g > CI_ACTIVE (logs, metrics)


class SpdProblem:
    """The loss and gradient of one SPD step for an experiment and target."""

    def __init__(self, exp: Experiment, arch: Target, target: Params, fused: bool = True):
        dc = exp.decompose
        self.exp, self.arch, self.target = exp, arch, target
        self.loss = SpdLoss(arch, target, dc, fused=fused)
        self.compact = zero_rows_inert(arch)
        # a kind's whole loss and gradient by hand (TMS: targets/tms/spd_kernels.py); otherwise autograd
        # around the CI kernel
        own = hooks(arch)
        self.tms = own.fused(self.loss) if fused and own.fused is not None else None
        self.path = own.path if self.tms is not None else ("spd-fused" if fused else "spd-autograd")
        self._last: tuple | None = None  # (causal importances, nonzero-row mask) of the last step

    def step_grads(self, params: SpdParams, x: np.ndarray, uniforms, record: dict, step: int = 0,
                   need_grad: bool = True) -> dict | None:
        """Fill `record` with the loss terms and total (per replicate) of this step on inputs x;
        return the gradient of the total summed over replicates. `uniforms` is the mask noise: a
        dict name -> (S, I, B, C) for the whole batch, or a function rows -> such a dict for the
        rows the step keeps (what the trainer passes: no noise is drawn for dropped rows)."""
        B = x.shape[1]
        xs, weights, idx = x, None, None
        if self.compact:
            idx, R = compact_index(x)
            if R < B:
                xs = np.take_along_axis(x, idx[..., None], axis=1)
                weights = row_weights(idx, B, x.dtype)  # the last kept row is all-zero: it stands for the B - R dropped
            else:
                idx = None
        if callable(uniforms):
            us = uniforms(xs.shape[1])
        elif idx is not None:
            us = {k: np.take_along_axis(u, idx[None, :, :, None], axis=2) for k, u in uniforms.items()}
        else:
            us = uniforms
        if self.tms is not None:
            tgt = target_forward(self.arch, self.target, xs)
        else:
            tgt = self.loss.view.prepare(xs)
        coef = self.loss.coefficients(step, self.exp.decompose.steps)
        if self.tms is not None:
            terms, grads = self.tms.value_and_grad(params, xs, tgt, us, B, weights, coef, need_grad)
            tot = 0.0
            for name, value in terms.items():
                tot = tot + coef[name] * value
                record[name] = value
            record["total"] = np.asarray(tot)
            lo = self.loss.ci.lower_leak
            self._last = ({k: ci_sigma_lower(v, lo) for k, v in self.tms.last_gamma.items()}, nonzero_rows(xs))
            return grads

        def total(p):
            terms = self.loss.terms(p, xs, tgt, us, rows=B, row_weights=weights)
            tot = 0.0
            for name, value in terms.items():
                tot = tot + coef[name] * value
                record[name] = np.asarray(getval(value))
            record["total"] = np.asarray(getval(tot))
            return anp.sum(tot)

        if need_grad:
            _, grads = value_and_grad(total)(params)
        else:
            total(params)
            grads = None
        self._last = (self.loss.last_ci, nonzero_rows(xs))
        return grads

    def mask_stats(self) -> dict:
        """`ci_l0` of the last step: per replicate, the mean number of subcomponents (all matrices)
        with causal importance > CI_ACTIVE on the rows with a nonzero input."""
        if self._last is None:
            return {}
        g, nz = self._last
        active = sum(np.count_nonzero(getval(v) > CI_ACTIVE, axis=-1) for v in g.values())  # (I, R)
        n = np.maximum(nz.sum(axis=1), 1)
        return {"ci_l0": np.where(nz, active, 0).sum(axis=1) / n}


class SpdTrainer:
    """One SPD iteration per `step()` call (the interface of `decompose.Trainer`: step, state,
    restore, problem.mask_stats, comps)."""

    result_cls = None  # SpdDecomposition, set below
    terms = METHODS["spd"].terms()  # the loss terms, in order

    def __init__(self, exp: Experiment, arch: Target, target: Params, sample: Callable[[int], np.ndarray],
                 rng_init: np.random.Generator, comps: SpdParams | None = None, fused: bool = True):
        dc = exp.decompose
        self.exp, self.arch, self.target, self.sample = exp, arch, target, sample
        self.dtype = np.dtype(exp.dtype)
        tune_malloc()
        default_blas_threads()
        if comps is None:
            comps = init_spd(arch, dc.components, dc.causal_importance.hidden, exp.replicates, dc.init_scale,
                             rng_init, self.dtype)
        self.comps = comps
        self.problem = SpdProblem(exp, arch, target, fused=fused)
        self.opt = FastAdam(comps, dc.optimizer)
        self.rng_masks = seeding.stream(dc.seed, "spd_masks")
        self.step_index = 0
        self.m = None  # subcomponents are rank one: no inner rank

    def faithfulness_warmup(self) -> np.ndarray:
        """`decompose.faithfulness_warmup` (not in the paper): AdamW steps on the faithfulness loss
        alone, V and U only, in place, with their own optimiser state (the main Adam starts fresh).
        Returns the final faithfulness per replicate (I,), like every logged term."""
        fw = self.exp.decompose.faithfulness_warmup
        sub = {k: v for k, v in self.comps.items() if k.endswith(".V") or k.endswith(".U")}
        opt = FastAdam(sub, Optimizer("adamw", fw.lr, weight_decay=fw.weight_decay))
        for step in range(fw.steps + 1):
            value, grads = faithfulness_value_and_grad(self.arch, sub, self.target)
            first_non_finite({"faithfulness (warmup)": value}, 0)
            if step < fw.steps:
                opt.step(sub, {k: g.astype(self.dtype, copy=False) for k, g in grads.items()}, fw.lr)
        return np.asarray(value, dtype=np.float64)

    def uniforms(self, batch: int) -> dict:
        dc = self.exp.decompose
        return draw_uniforms(self.arch, dc.components, dc.mask_samples, self.exp.replicates, batch, self.rng_masks,
                             self.dtype)

    def step(self) -> tuple[float, dict]:
        dc = self.exp.decompose
        step = self.step_index
        last = step >= dc.steps
        record: dict = {}
        if step == 0 and dc.faithfulness_warmup is not None:  # before the first step (never after a resume)
            record["warmup_faithfulness"] = self.faithfulness_warmup()
        lr = lr_at(step, dc.steps, dc.optimizer.lr, dc.schedule) if not last else 0.0
        x = self.sample(dc.batch)
        grads = self.problem.step_grads(self.comps, x, self.uniforms, record, step, need_grad=not last)
        first_non_finite(record, step)
        checking = not last and (step % GRAD_CHECK_EVERY == 0 or step == dc.steps - 1)
        if checking:
            first_non_finite({f"gradient of {k}": replicate_sums(g) for k, g in grads.items()}, step)
        if not last:
            grads = {k: g if isinstance(g, np.ndarray) and g.dtype == self.dtype else np.asarray(g, dtype=self.dtype)
                     for k, g in grads.items()}
            self.opt.step(self.comps, grads, lr)
            if checking:
                first_non_finite({f"Adam's second moment of {k}": replicate_sums(v) for k, v in self.opt.v.items()},
                                  step)
        self.step_index += 1
        return lr, record

    def events(self) -> list:
        return []

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {}
        for prefix, d in (("comp.", self.comps), ("adam_m.", self.opt.m), ("adam_v.", self.opt.v)):
            arrays.update({prefix + k: v for k, v in d.items()})
        return arrays, {"step": self.step_index, "adam_t": self.opt.t, "spd_masks": seeding.rng_state(self.rng_masks)}

    def restore(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        for prefix, d in (("comp.", self.comps), ("adam_m.", self.opt.m), ("adam_v.", self.opt.v)):
            for k, v in d.items():
                v[...] = arrays[prefix + k]
        self.step_index, self.opt.t = int(scalars["step"]), int(scalars["adam_t"])
        seeding.set_rng_state(self.rng_masks, scalars["spd_masks"])


@dataclasses.dataclass
class SpdDecomposition(Decomposition):
    """A trained SPD decomposition: `comps` holds the flat parameters of `spd.py` (leading replicate
    axis); C is the number of subcomponents per matrix, m is None."""

    method = "spd"

    def components(self, name: str, replicate: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """V (d_in, C) and U (C, d_out) of decomposed matrix `name` (a layer name, e.g. "W.T")."""
        return self.comps[f"{name}.V"][replicate], self.comps[f"{name}.U"][replicate]

    def layer_names(self) -> list[str]:
        return [layer.name for layer in spd_layers(self.arch)]


SpdTrainer.result_cls = SpdDecomposition

ACTIVATIONS = 1.5  # floats a step holds per float counted by SpdEngine.sample_floats (benchmarks/memory.py)


class SpdEngine(MethodEngine):
    trainer = SpdTrainer
    decomposition = SpdDecomposition

    def step_cost(self, exp: Experiment, arch: Target) -> dict:
        """model.step_cost (per replicate and step, with the expected rows R after all-zero input
        rows are dropped) for all replicates and restarts: trainable parameters C (d_in + d_out) +
        C (3 K + 1) per matrix; the causal-importance MLPs' R C K hidden units (~30 FLOPs each,
        elementwise: what dominates TMS 40-10); the S (1 + L) masked passes; faithfulness."""
        I = exp.replicates * exp.decompose.restarts
        c = step_cost(exp, arch)
        return {**c, "params": int(I * c["params"]), "flops": int(I * c["total"])}

    def memory_parts(self, exp: Experiment, arch: Target) -> list:
        """The subcomponents and causal-importance MLPs; while training, every restart's, with a
        gradient and 2 Adam moments each, and one step's batch: the inputs, and per remaining row
        (all-zero rows are dropped where exact, model.expected_rows) `sample_floats`."""
        from ...engine.memory import decomposition_parts
        from ...engine.models import n_inputs

        c = step_cost(exp, arch)
        return decomposition_parts(exp, c["params"], c["rows"], self.sample_floats(exp, arch), n_inputs(arch),
                                   params_what="SPD subcomponents and causal-importance MLPs",
                                   grads_what="gradients and 2 Adam moments of them",
                                   batch_what="one step's batch: inputs, causal importances, mask noise, masked passes",
                                   restarts_what="the parameters of the other restarts")

    def sample_floats(self, exp: Experiment, arch: Target) -> float:
        """ACTIVATIONS x per row: the MLPs' stored G and P (2 C K per matrix), ~8 (row, C) arrays per
        matrix (h, gamma, g, masks, ...), the mask noise (S C per matrix) and the S (1 + L) masked
        forward passes."""
        from ...engine.registry import model_of

        d = exp.decompose
        L, C, K, S = len(spd_layers(arch)), d.components, d.causal_importance.hidden, d.mask_samples
        return ACTIVATIONS * (L * C * (2 * K + 8 + S) + S * (1 + L) * model_of(arch).forward_floats(arch))


    def step_flops(self, exp: Experiment, arch: Target) -> dict:
        """The analytic FLOPs per step, all replicates: model.step_cost by term, and "total"."""
        c = step_cost(exp, arch)
        terms = ("causal_importance", "inner_acts", "masked_passes", "faithfulness", "total")
        return {k: c[k] * exp.replicates for k in terms}

    def describe(self, exp: Experiment) -> str:
        dc = exp.decompose
        L, ci = dc.loss, dc.causal_importance
        terms = ", ".join(f"{n} {getattr(L, n):g}" for n in SpdTrainer.terms if getattr(L, n) is not None)
        return (f"SPD; B {dc.batch}; C {dc.components} per matrix; I {exp.replicates}; causal importance "
                f"{ci.hidden} {ci.activation}; S {dc.mask_samples}; {terms} (p {L.importance_minimality_p:g}); {exp.dtype}")


ENGINES["spd"] = SpdEngine()

"""The VPD training step and its trainer (notes §3-§4): the interface of the engine's APD `Trainer`
and `SpdTrainer` (step, state, restore, problem.mask_stats, comps, result_cls), so the engine's
`decompose()` loop can run it once the integrator maps an experiment onto a `VpdRun`.

    before step 0 only: faithfulness warmup (AdamW on the faithfulness term alone, V and U only;
        its optimiser state discarded)
    step t < steps:
      1. lr of the step (run.lr x run.schedule), source lr (settings.source_lr with its warmup),
         g of the smooth L0, coefficients (schedules.py: t / (steps - 1))
      2. a batch x = sample(B); the clean target pass (reconstruction target, CI inputs)
      3. n_warmup ascents of the persistent sources on the all-rows adversarial reconstruction,
         components and CI detached (plain arrays)
      4. the rows' draws (stream "vpd_masks"): adversarial rows, routing, fresh sources
      5. loss = faith_coeff faithfulness + recon_coeff merged_recon + imp_coeff activity
                + freq_coeff freq, and its gradient w.r.t. V, U, the CI MLPs and the sources, in one
         backward pass (pre-update components)
      6. the sources' final ascent with that gradient (of the reconstruction alone: the coefficient
         scales only the parameters' side, `model.scale_grad`)
      7. per replicate: clip the gradient norm of V, U (and, separately, of the CI MLPs); AdamW
    step t = steps: the loss only (no update), for the last log entry, as APD and SPD.

Per-term losses are per replicate (I,); the differentiated total sums replicates, so each
replicate's gradients, clipping and updates are exactly an independent run's.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import autograd.numpy as anp
import numpy as np
from autograd import value_and_grad
from autograd.tracer import getval

from ...engine import seeding
from ...engine.models import Params, layers_of
from ...engine.optim import Adam
from ...spec import Optimizer
from . import sparsity
from .adversary import PersistentSources, mse
from .model import RowDraws, VpdModel, VpdParams, draw_rows, row_errors, scale_grad
from .schedules import linear, value_at, warmup_then_constant
from .settings import VpdRun

CI_ACTIVE = 0.1  # a subcomponent counts as causally important on a row when its lower CI > CI_ACTIVE (logs)
CLIP_EPS = 1e-6  # clip factor min(1, max_norm / (norm + CLIP_EPS)), torch's clip_grad_norm_ convention


def clip_per_replicate(grads: dict, max_norm: float | None) -> np.ndarray:
    """Scale every gradient (leading replicate axis) in place so that each replicate's global norm
    over `grads` is at most max_norm; returns the norms before clipping (I,)."""
    sq = sum(np.sum(np.square(g, dtype=np.float64).reshape(g.shape[0], -1), axis=1) for g in grads.values())
    norm = np.sqrt(sq)
    if max_norm is not None:
        factor = np.minimum(1.0, max_norm / (norm + CLIP_EPS))
        for g in grads.values():
            g *= factor.astype(g.dtype).reshape((-1,) + (1,) * (g.ndim - 1))
    return norm


def check_finite(record: dict, step: int) -> None:
    """Raise FloatingPointError naming the first term and replicate of `record` that is not finite
    (the integrator may map it onto the engine's NonFiniteError)."""
    for name, v in record.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(v, dtype=np.float64).ravel()))
        if bad.size:
            raise FloatingPointError(f"{name} is not finite in replicate {int(bad[0])} at step {step}")


class VpdProblem:
    """The VPD loss of one batch and its gradient, and the CI statistics of the last step."""

    def __init__(self, model: VpdModel, run: VpdRun):
        self.model, self.run, self.settings = model, run, run.settings
        self.g_schedule = linear(self.settings.g_start, self.settings.g_end)
        self._last: tuple | None = None  # (lower CI, nonzero-row mask) of the last loss

    def coefficients(self, step: int) -> dict:
        st, steps = self.settings, self.run.steps
        return {"faithfulness": value_at(st.faithfulness_coeff, step, steps),
                "recon": value_at(st.recon_coeff, step, steps),
                "activity": value_at(st.imp_coeff, step, steps),
                "freq": value_at(st.freq_coeff, step, steps),
                "g": value_at(self.g_schedule, step, steps),
                "adv_fraction": value_at(st.adv_fraction, step, steps)}

    def terms(self, comps: VpdParams, sources: dict, x: np.ndarray, tgt, draws: RowDraws, coef: dict) -> tuple:
        """(terms {name: (I,)}, row errors (I, B)) on batch x: faithfulness, recon (merged), activity,
        freq. The reconstruction's gradient w.r.t. V, U and the CI is scaled by coef["recon"] inside
        (`scale_grad`); the sources' gradient is the reconstruction's own."""
        model, st = self.model, self.settings
        ci_lower, ci_upper = model.ci(comps, tgt.pre)
        cr = coef["recon"]
        scaled = {k: scale_grad(v, cr) for k, v in comps.items() if k.endswith((".V", ".U"))}
        errors = row_errors(model.merged_output(scaled, x, {k: scale_grad(v, cr) for k, v in ci_lower.items()},
                                                sources, draws), tgt.y)
        freqs = {k: sparsity.frequencies(v, coef["g"], st.normalize_at_one) for k, v in ci_upper.items()}
        self._last = ({k: np.asarray(getval(v)) for k, v in ci_lower.items()}, np.any(x != 0, axis=-1))
        return {"faithfulness": model.faithfulness(comps), "recon": anp.mean(errors, axis=1),
                "activity": sparsity.activity(freqs), "freq": sparsity.frequency_penalty(freqs, st.freq_reference)}, errors

    def step_grads(self, comps: VpdParams, sources: dict, x: np.ndarray, tgt, draws: RowDraws, coef: dict,
                   record: dict, need_grad: bool = True) -> tuple[dict, dict] | None:
        """Fill `record` with the terms (I,) and their weighted total; return (gradients of the
        parameters, gradient of the reconstruction w.r.t. the sources), or None."""

        def objective(both):
            terms, errors = self.terms(both["comps"], both["sources"], x, tgt, draws, coef)
            total, differentiated = 0.0, 0.0
            for name, value in terms.items():
                total = total + coef[name] * value
                differentiated = differentiated + (value if name == "recon" else coef[name] * value)
                record[name] = np.asarray(getval(value))
            record["total"] = np.asarray(getval(total))
            adv = draws.adversarial
            e = np.asarray(getval(errors))
            record["recon_adversarial"] = np.sum(e * adv, axis=1) / np.maximum(adv.sum(axis=1), 1)
            record["recon_stochastic"] = np.sum(e * ~adv, axis=1) / np.maximum((~adv).sum(axis=1), 1)
            return anp.sum(differentiated)

        both = {"comps": comps, "sources": sources}
        if not need_grad:
            objective(both)
            return None
        _, g = value_and_grad(objective)(both)
        return g["comps"], g["sources"]

    def mask_stats(self) -> dict:
        """`ci_l0` of the last step: per replicate, the mean number of subcomponents (all sites) with
        lower CI > CI_ACTIVE over the rows with a nonzero input."""
        if self._last is None:
            return {}
        ci_lower, nz = self._last
        active = sum(np.count_nonzero(v > CI_ACTIVE, axis=-1) for v in ci_lower.values())
        return {"ci_l0": np.where(nz, active, 0).sum(axis=1) / np.maximum(nz.sum(axis=1), 1)}


class VpdTrainer:
    """One VPD iteration per `step()` call.

    `run` (a `VpdRun`) stands where APD/SPD take the Experiment: the integrator builds it from the
    experiment (settings from the VPD block; steps, batch, lr and its schedule, replicates, dtype,
    seed). `target` holds the target's parameters (leading replicate axis) in the run's dtype;
    `sample(B)` returns a fresh (I, B, n_in) batch (its stream is the caller's, as for APD/SPD);
    `rng_init` initialises V, U and the CI MLPs unless `comps` are given. The persistent sources
    are drawn from `rngs["vpd_sources"]` and every per-step draw from `rngs["vpd_masks"]`, by
    default the named streams of run.seed (seeding.stream); only "vpd_masks" is stepped later, and
    its state is in `state()`.

    `step()` returns (lr, record); record holds per replicate (I,) arrays: faithfulness, recon,
    recon_adversarial, recon_stochastic, activity, freq, total, ppgd_recon (the all-rows
    adversarial reconstruction after the warmup ascents; absent with n_warmup 0 and at the last step), grad_norm and
    ci_grad_norm (before clipping), adv_rows (fraction of adversarial rows), g, source_lr, and at
    step 0 warmup_faithfulness."""

    result_cls = None  # VpdDecomposition, set below

    def __init__(self, run: VpdRun, arch, target: Params, sample: Callable[[int], np.ndarray],
                 rng_init: np.random.Generator, comps: VpdParams | None = None,
                 rngs: dict[str, np.random.Generator] | None = None):
        self.run, self.settings = run, run.settings
        self.dtype = np.dtype(run.dtype)
        self.arch, self.sample = arch, sample
        self.target = {k: np.asarray(v, dtype=self.dtype) for k, v in target.items()}
        rngs = {name: (rngs or {}).get(name) or seeding.stream(run.seed, name) for name in ("vpd_sources", "vpd_masks")}
        self.model = VpdModel(arch, self.target, self.settings)
        self.comps = comps if comps is not None else self.model.init_params(run.replicates, rng_init, self.dtype)
        self.problem = VpdProblem(self.model, run)
        adamw = Optimizer("adamw", run.lr, 0.0, 0.9, 0.999, 1e-8)
        self.comp_keys, self.ci_keys = self.model.component_keys(), self.model.ci_keys()
        self.opt = Adam({k: self.comps[k] for k in self.comp_keys}, adamw)
        self.ci_opt = Adam({k: self.comps[k] for k in self.ci_keys}, adamw)
        st = self.settings
        shapes = {n: (run.replicates, run.batch, self.model.channels(n)) for n in self.model.names}
        self.adversary = PersistentSources(shapes, rngs["vpd_sources"], self.dtype,
                                           st.source_beta1, st.source_beta2, st.source_eps)
        self.source_schedule = warmup_then_constant(st.source_lr, st.source_warmup)
        self.rng_masks = rngs["vpd_masks"]
        self.step_index = 0
        self.reviver = None  # the engine loop asks (APD's dead-component revival); VPD has none

    def faithfulness_warmup(self) -> np.ndarray:
        """AdamW on the faithfulness term alone (V, U), in place, with its own (discarded) state;
        returns the faithfulness after the last update (I,)."""
        st = self.settings
        sub = {k: self.comps[k] for k in self.comp_keys}
        opt = Adam(sub, Optimizer("adamw", st.faithfulness_warmup_lr, st.faithfulness_warmup_weight_decay))
        step = value_and_grad(lambda p: anp.sum(self.model.faithfulness(p)))
        for _ in range(st.faithfulness_warmup_steps):
            _, g = step(sub)
            opt.step(sub, {k: np.asarray(v, dtype=self.dtype) for k, v in g.items()}, st.faithfulness_warmup_lr)
        return np.asarray(self.model.faithfulness(sub), dtype=np.float64)

    def warmup_ascents(self, x: np.ndarray, tgt, lr: float, record: dict) -> None:
        """n_warmup ascents of the persistent sources on the adversarial reconstruction of every row,
        with V, U and the CI as constants (notes §4)."""
        model, adv = self.model, self.adversary
        ci_lower = {k: np.asarray(v) for k, v in model.ci(self.comps, tgt.pre)[0].items()}
        y_ref = np.asarray(tgt.y)
        objective = value_and_grad(lambda s: anp.sum(mse(model.adversarial_output(self.comps, x, ci_lower, s), y_ref)))
        for _ in range(self.settings.n_warmup):
            value, g = objective(adv.sources)
            adv.ascend(g, lr)
        if self.settings.n_warmup:
            record["ppgd_recon"] = np.asarray(mse(model.adversarial_output(self.comps, x, ci_lower, adv.sources), y_ref))

    def step(self) -> tuple[float, dict]:
        run, st = self.run, self.settings
        step = self.step_index
        last = step >= run.steps
        I = run.replicates
        record: dict = {}
        if step == 0 and st.faithfulness_warmup_steps:  # before the first step (never after a resume)
            record["warmup_faithfulness"] = self.faithfulness_warmup()
        lr = run.lr * value_at(run.schedule, step, run.steps) if not last else 0.0
        src_lr = value_at(self.source_schedule, step, run.steps)
        coef = self.problem.coefficients(step)
        x = self.sample(run.batch)
        tgt = self.model.clean(x)
        if not last:
            self.warmup_ascents(x, tgt, src_lr, record)
        draws = draw_rows(self.model, self.rng_masks, I, run.batch, coef["adv_fraction"], self.dtype)
        out = self.problem.step_grads(self.comps, self.adversary.sources, x, tgt, draws, coef, record,
                                      need_grad=not last)
        record.update(adv_rows=draws.adversarial.mean(axis=1), g=np.full(I, coef["g"]), source_lr=np.full(I, src_lr))
        if out is not None:
            grads, src_grads = out
            self.adversary.ascend(src_grads, src_lr)
            grads = {k: np.array(v, dtype=self.dtype) for k, v in grads.items()}
            record["grad_norm"] = clip_per_replicate({k: grads[k] for k in self.comp_keys}, st.grad_clip_norm)
            record["ci_grad_norm"] = clip_per_replicate({k: grads[k] for k in self.ci_keys}, st.ci_grad_clip_norm)
            self.opt.step({k: self.comps[k] for k in self.comp_keys}, grads, lr)
            self.ci_opt.step({k: self.comps[k] for k in self.ci_keys}, grads, lr)
        check_finite(record, step)
        self.step_index += 1
        return lr, record

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able scalars): everything the next `step()` depends on except the data
        stream (the caller's, in `sample`). Arrays: "comp.<k>" (V, U, CI MLPs), "adam_m.<k>" /
        "adam_v.<k>" (both AdamW optimisers; their keys are disjoint), "src.<site>", "src_m.<site>",
        "src_v.<site>" (persistent sources and their Adam moments). Scalars: step, adam_t,
        ci_adam_t, src_adam_t, vpd_masks (the draw stream's state)."""
        arrays = {"comp." + k: v for k, v in self.comps.items()}
        for opt in (self.opt, self.ci_opt):
            arrays.update({"adam_m." + k: v for k, v in opt.m.items()})
            arrays.update({"adam_v." + k: v for k, v in opt.v.items()})
        src_arrays, src_t = self.adversary.state()
        arrays.update(src_arrays)
        return arrays, {"step": self.step_index, "adam_t": self.opt.t, "ci_adam_t": self.ci_opt.t,
                        "src_adam_t": src_t, "vpd_masks": seeding.rng_state(self.rng_masks)}

    def restore(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        """Undo `state()`, in place (the optimisers keep holding the same arrays)."""
        for k, v in self.comps.items():
            v[...] = arrays["comp." + k]
        for opt in (self.opt, self.ci_opt):
            for prefix, d in (("adam_m.", opt.m), ("adam_v.", opt.v)):
                for k, v in d.items():
                    v[...] = arrays[prefix + k]
        self.adversary.restore(arrays, scalars["src_adam_t"])
        self.step_index, self.opt.t, self.ci_opt.t = (int(scalars["step"]), int(scalars["adam_t"]),
                                                      int(scalars["ci_adam_t"]))
        seeding.set_rng_state(self.rng_masks, scalars["vpd_masks"])


@dataclasses.dataclass
class VpdDecomposition:
    """A trained VPD decomposition, with the fields (and positional order) of the engine's
    `Decomposition`, which `decompose()` fills: `comps` holds model.py's flat parameters, C the
    subcomponents per site, m is None."""

    method = "vpd"  # class attribute, not a field

    arch: object
    C: int
    m: int | None
    comps: VpdParams
    history: list
    wall_time: float = 0.0
    steps_per_second: float = 0.0
    revivals: list = dataclasses.field(default_factory=list)

    def components(self, name: str, replicate: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """V (d_in, C) and U (C, d_out) of site `name` (a layer name, e.g. "W.T")."""
        return self.comps[f"{name}.V"][replicate], self.comps[f"{name}.U"][replicate]

    def layer_names(self) -> list[str]:
        return [layer.name for layer in layers_of(self.arch)]


VpdTrainer.result_cls = VpdDecomposition

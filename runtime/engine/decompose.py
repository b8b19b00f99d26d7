"""The APD training loop, in the exact step order of notes §4.1.

    for step in 0..steps (the last iteration only logs):
      1. unit-norm: divide every A's columns by their norm (B untouched)          [if unit_norm]
      2. LR for this step (warmup + schedule)
      3. draw a batch x
      4. target forward -> y*, layer inputs/outputs (constants)
      5. attributions and the top-k mask, outside the traced loss (top-k mode)
      6. traced loss: faithfulness, minimality (masked pass), act-recon, Schatten, Lp, out-recon
      7. backward; project A's gradient onto the unit sphere's tangent space; Adam step
      8. with decompose.revive (not part of APD): count top-k choices, split busy components
         into dead ones at revival steps (runtime/engine/revive.py)

`Trainer.step()` is one iteration (what `runtime.pipeline.bench` times). In top-k mode without Lp or
output-reconstruction terms, steps 4-7 run on the hand-written kernels of runtime/engine/fused.py (same
values and gradients as autograd on `LossProblem.loss`, which every other configuration uses and
which the tests compare against); all-zero input rows are dropped where that is exact.

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
from . import fused as fused_kernels
from .attributions import attributions, live_choices, topk_mask
from .models import Params, n_outputs, target_forward
from .kernels import (CHUNK, FastAdam, GradParts, add_scaled, blocked_sq_norms, default_blas_threads,
                      normalise_columns_blocked, tune_malloc)
from .optim import lr_at
from .revive import Reviver
from .seeding import rng_state, set_rng_state
from ..spec import Experiment, Target

TERMS = ("faithfulness", "minimality", "act_recon", "simplicity", "sparsity", "output_recon")


def used_components(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(I,) how many components the top-k mask (I, B, C) switches on for at least one sample of the
    batch x (I, B, n_in) with a nonzero input (`live_choices`). Logged during training: a component
    that drops out of this count for good has died, and the curve shows when."""
    return np.count_nonzero(np.any(live_choices(mask, x), axis=1), axis=-1)


@dataclasses.dataclass
class Decomposition:
    """Trained components (flat layout of `apd.py`, leading replicate axis) and the loss history.
    SPD runs return the subclass `spd_train.SpdDecomposition` (method "spd")."""

    method = "apd"  # class attribute, not a field

    arch: Target
    C: int
    m: int
    comps: apd.Comps
    history: list
    wall_time: float = 0.0
    steps_per_second: float = 0.0
    revivals: list = dataclasses.field(default_factory=list)  # decompose.revive splits (revive.py)

    def components(self, name: str, replicate: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A (C, d_in, m), B (C, m, d_out) of one decomposed parameter and replicate."""
        A, B = apd.to_components(self.comps, name, self.C)
        return A[replicate], B[replicate]


def normalise_columns(comps: apd.Comps, arch: Target, col_sq: dict | None = None) -> dict:
    """Unit-norm every column A_c[:, r] over d_in, in place (notes §3.5). Tied uses are derived.

    `col_sq` {A name: squared column norms} known for the current values (`Trainer` keeps them from
    FastAdam's pass) saves a pass; returns the new squared column norms, summed while dividing."""
    col_sq = col_sq or {}
    out = {}
    for name in apd.decomposed_params(arch):
        A = comps[f"{name}.A"]
        sq = col_sq.get(f"{name}.A")
        out[f"{name}.A"] = normalise_columns_blocked(A, blocked_sq_norms(A, 1) if sq is None else sq)
    return out


def project_gradients(grads: apd.Comps, comps: apd.Comps, arch: Target) -> None:
    """g <- g - <g, A> A per column: the tangent space of the unit sphere (A is unit-norm). A lazy
    gradient (`kernels.GradParts`) only changes its per-column scale of A."""
    for name in apd.decomposed_params(arch):
        A, g = comps[f"{name}.A"], grads[f"{name}.A"]
        if isinstance(g, GradParts):
            g.project_columns(A)
            continue
        if not g.flags.writeable:
            g = grads[f"{name}.A"] = g.copy()
        dots = np.einsum("idn,idn->in", g, A)  # <g, A> per column, no temporary
        add_scaled(g, A, -dots, axis=1)


class LossProblem:
    """Builds the traced loss of one step for a given experiment and target."""

    def __init__(self, exp: Experiment, arch: Target, target: Params, fused: bool = True):
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
        # Which implementation computes the loss and its gradient (runtime.pipeline.bench reports it): the
        # fused kernels of runtime/engine/fused.py where they apply, else autograd on LossProblem.loss.
        self.fused = fused and fused_kernels.applies(arch, L, self.topk)
        self.path = fused_kernels.path_name(arch) if self.fused else "autograd"
        # Rows with an all-zero input can be dropped from the whole step (notes §11.1.15: their
        # attributions are exactly zero, and they contribute nothing to any term).
        self.compact = (self.fused and fused_kernels.zero_rows_inert(arch)
                        and self.topk is not None and self.topk.mode in ("batch", "exact"))
        # Residual MLPs: attributions and loss share their largest GEMMs (fused.ResidualPre)
        self.use_pre = self.fused and fused_kernels.residual_pre_applies(arch, self.attr)
        self.last_mask: tuple[np.ndarray, np.ndarray] | None = None  # (mask, inputs) of the last loss
        # True: gradients may come back as kernels.GradParts (what Trainer consumes); False: arrays
        self.lazy_grads = False
        # {factor name: (array, squared column/row norms)} known for the current factors (Trainer)
        self.sq_norm_hints: dict = {}

    def mask_stats(self) -> dict:
        """Statistics of the top-k mask of the last loss evaluated (empty without top-k); computed
        on request, so that only logged steps pay for them."""
        if self.last_mask is None:
            return {}
        return {"used_components": used_components(*self.last_mask)}

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
            self.last_mask = (mask, x)
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

    def step_grads(self, comps: apd.Comps, x: np.ndarray, record: dict, need_grad: bool = True):
        """The loss terms (into `record`) and gradient of one step on inputs x, target pass
        included: what `Trainer.step` runs. Same results as `value_and_grad` (up to rounding and
        the arbitrary choice among tied top-k entries)."""
        if not self.fused:
            return self.value_and_grad(comps, x, target_forward(self.arch, self.target, x), record, need_grad)
        Bsz = x.shape[1]
        batches = [x]
        if self.compact:
            xc, R = fused_kernels.compact_rows(x)
            if R < Bsz:
                batches.insert(0, xc)
        for xb in batches:  # the nonzero rows first; the full batch if their mask is ambiguous
            tgt = target_forward(self.arch, self.target, xb)
            pre = None
            if self.use_pre:
                pre = fused_kernels.ResidualPre(self.arch, self.target, tgt, comps, self.C, self.m, xb,
                                                next(iter(comps.values())).dtype)
                a = pre.attr
            else:
                a = attributions(self.attr.kind, self.attr.source, self.arch, self.target, tgt, comps, xb,
                                 self.C, self.m)
            if xb is x:
                mask = topk_mask(self.topk.mode, self.topk.value, np.asarray(a), x)
            else:
                k = int(self.topk.value * Bsz) if self.topk.mode == "batch" else int(np.count_nonzero(x))
                mask = fused_kernels.compact_batch_topk(np.asarray(a), k)
                if mask is None:
                    continue
            return self._fused_from_mask(comps, xb, tgt, mask, record, need_grad, Bsz, pre)

    def value_and_grad(self, comps: apd.Comps, x: np.ndarray, tgt, record: dict, need_grad: bool = True):
        """Fill `record` with the loss terms of this step; return the gradient of the total (summed
        over replicates) with respect to every component factor (None if not `need_grad`)."""
        mask = self.constant_mask(comps, x, tgt)
        if self.fused:
            return self._fused_from_mask(comps, x, tgt, mask, record, need_grad)
        if not need_grad:
            self.loss(comps, x, tgt, mask, record)
            return None
        _, grads = value_and_grad(lambda c: self.loss(c, x, tgt, mask, record))(comps)
        return grads

    def fused_loss(self, comps: apd.Comps, x: np.ndarray, tgt, mask: np.ndarray, B_total: int | None = None,
                   variant: str | None = None, pre=None):
        """The fused loss object (runtime/engine/fused.py) of this batch and mask."""
        dtype = next(iter(comps.values())).dtype
        return fused_kernels.build(self.arch, self.target, self.C, self.m, self.L, x, tgt, mask, dtype, B_total,
                                   variant, pre)

    def _fused_from_mask(self, comps, x, tgt, mask, record, need_grad, B_total=None, pre=None):
        """Same record and gradient as the autograd path, from the hand-written forward/backward."""
        fl = self.fused_loss(comps, x, tgt, mask, B_total, pre=pre)
        fl.sq_hints = self.sq_norm_hints
        factors = [comps[n] for n in fl.factor_names]
        vals = fl.forward(factors)
        record["mean_active"] = mask.sum(axis=(1, 2)) / fl.B
        self.last_mask = (mask, x)
        total = 0.0
        coeffs = []
        for k, name in enumerate(fl.terms):
            c = getattr(self.L, name)
            coeffs.append(c)
            total = total + c * vals[k]
            record[name] = vals[k]
        record["total"] = np.asarray(total)
        if not need_grad:
            return None
        g = np.repeat(np.asarray(coeffs, dtype=vals.dtype)[:, None], vals.shape[1], axis=1)
        if self.lazy_grads and hasattr(fl, "backward_lazy"):
            fl.want_col_dots = self.exp.decompose.unit_norm
            return fl.backward_lazy(factors, g)
        grads = fl.backward(factors, g)
        return dict(zip(fl.factor_names, grads))


class NonFiniteError(FloatingPointError):
    """A loss term, gradient or parameter of the decomposition became NaN or infinite.

    `what` is the loss term (or "gradient of <param>"), `replicate` the replicate (the runner maps
    the instances of a restarts run back to replicate and `restart`), `step` the iteration."""

    def __init__(self, what: str, replicate: int, step: int, value: float, restart: int | None = None,
                 hint: str | None = None):
        self.what, self.replicate, self.step, self.value, self.restart = what, replicate, step, value, restart
        where = f"replicate {replicate}" + (f" (restart {restart})" if restart is not None else "")
        super().__init__(f"{what} is {value} in {where} at step {step}")
        if hint is not None:
            self.hint = hint

    hint = ("the optimisation diverged: lower decompose.optimizer's lr (e.g. by 10x), or add warmup to "
            "decompose.schedule; a very large loss coefficient or init_scale does the same")


def _first_non_finite(record: dict, step: int) -> None:
    """Raise NonFiniteError for the first term of `record` (per-replicate values) that is not finite."""
    for name, v in record.items():
        a = np.asarray(v, dtype=np.float64).ravel()
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise NonFiniteError(name, int(bad[0]), step, float(a[bad[0]]))


def _replicate_sums(a) -> np.ndarray:
    """(I,) sums over everything but the leading replicate axis: NaN or inf if any entry is."""
    if isinstance(a, GradParts):
        return a.replicate_sums()
    a = np.asarray(a)
    return np.sum(a.reshape(a.shape[0], -1), axis=1, dtype=np.float64)


GRAD_CHECK_EVERY = 50  # gradients are summed (one pass over them) every this many steps, and at the end


class Trainer:
    """One APD iteration per `step()` call: exactly the body of `decompose`'s loop (which uses it),
    exposed so that a step can be timed on its own (`runtime.pipeline.bench`).

    `step()` runs iteration `self.step_index` (unit-norm, LR, batch, target forward, attributions
    and mask, loss and gradient, gradient projection, Adam) and returns (lr, record); iteration
    `decompose.steps` (the last one) only evaluates the loss, as in the reference."""

    def __init__(self, exp: Experiment, arch: Target, target: Params, sample: Callable[[int], np.ndarray],
                 rng_init: np.random.Generator, comps: apd.Comps | None = None):
        dc = exp.decompose
        self.exp, self.arch, self.target, self.sample = exp, arch, target, sample
        self.dtype = np.dtype(exp.dtype)
        tune_malloc()  # reuse freed step temporaries instead of page-faulting fresh ones (kernels.py)
        default_blas_threads()  # 1 BLAS thread unless OPENBLAS/OMP/MKL_NUM_THREADS is set (kernels.py)
        if comps is None:
            comps = apd.init_components(arch, dc.components, dc.rank, exp.replicates, dc.init_scale, rng_init, self.dtype)
        self.comps = comps
        self.problem = LossProblem(exp, arch, target)
        self.problem.lazy_grads = True  # FastAdam and the projection take kernels.GradParts as they are
        # second factors (C m, d) are updated in row blocks of whole components (lazy gradient parts)
        self.opt = FastAdam(comps, dc.optimizer, row_align={k: dc.rank for k in comps if k.endswith(".B")})
        # squared column (A) / row (B) norms of the current factors, for the unit-norm step and the
        # Schatten term: summed by FastAdam in the pass that writes the parameters (None: stale,
        # recomputed with the same blocked sums, so a resumed run sees the same bits)
        # (only for factors of at least a block: small ones are cheaper computed on the spot)
        self.norm_axes = ({n: (1 if n.endswith(".A") else 2) for n, v in comps.items() if v.size >= CHUNK}
                          if self.problem.fused and (dc.unit_norm or dc.loss.simplicity is not None) else {})
        self.sq_norms: dict | None = None
        self.step_index = 0
        self.reviver = None if dc.revive is None else Reviver(dc.revive, exp.replicates, dc.components, dc.rank)

    def step(self) -> tuple[float, dict]:
        dc = self.exp.decompose
        step, comps, arch = self.step_index, self.comps, self.arch
        last = step >= dc.steps
        sq = self.sq_norms
        if self.norm_axes and sq is None:
            sq = {k: blocked_sq_norms(comps[k], ax, self.opt.block_rows(k, comps[k].shape))
                  for k, ax in self.norm_axes.items()}
        hints = dict(sq or {})
        if dc.unit_norm:
            hints.update(normalise_columns(comps, arch, sq))
        self.problem.sq_norm_hints = {k: (comps[k], v) for k, v in hints.items()}
        self.sq_norms = None
        lr = lr_at(step, dc.steps, dc.optimizer.lr, dc.schedule) if not last else 0.0
        x = self.sample(dc.batch)
        record: dict = {}
        grads = self.problem.step_grads(comps, x, record, need_grad=not last)
        # loss terms every step (I numbers each: free); a NaN gradient makes the parameters, and so
        # the next step's losses, NaN, but its sum is checked now and then to name it as the cause
        _first_non_finite(record, step)
        checking = not last and (step % GRAD_CHECK_EVERY == 0 or step == dc.steps - 1)
        if checking:
            _first_non_finite({f"gradient of {k}": _replicate_sums(g) for k, g in grads.items()}, step)
        if not last:
            grads = {k: g if isinstance(g, (np.ndarray, GradParts)) and g.dtype == self.dtype
                     else np.asarray(g, dtype=self.dtype) for k, g in grads.items()}
            if dc.unit_norm:
                project_gradients(grads, comps, arch)
            sq_out = self.opt.step(comps, grads, lr, sq_norms=self.norm_axes)
            self.sq_norms = sq_out if self.norm_axes else None
            if checking:  # a finite gradient whose square overflows (float32: |g| > 1.8e19) stalls Adam silently
                _first_non_finite({f"Adam's second moment of {k}": _replicate_sums(v) for k, v in self.opt.v.items()}, step)
        rv = self.reviver
        if rv is not None and not last:
            if rv.watching(step):
                rv.observe(*self.problem.last_mask)
            if rv.is_revival_step(step):
                self.sq_norms = None  # revival edits the factors
                # logged with this step's losses (revival steps are multiples of `every`)
                revived, still_dead = np.zeros((2, self.exp.replicates), dtype=np.int64)
                for e in rv.revive(step, comps, (self.opt.m, self.opt.v), self.layer_inputs):
                    revived[e["replicate"]] = len(e["dead"]) + len(e["adopted"])
                    still_dead[e["replicate"]] = len(e["still_dead"])
                record["revived"], record["still_dead"] = revived, still_dead
        self.step_index += 1
        return lr, record

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able scalars): everything the next `step()` depends on, for a checkpoint.
        The random streams are the caller's (they live in `sample`)."""
        arrays = {}
        for prefix, d in (("comp.", self.comps), ("adam_m.", self.opt.m), ("adam_v.", self.opt.v)):
            arrays.update({prefix + k: v for k, v in d.items()})
        scalars: dict = {"step": self.step_index, "adam_t": self.opt.t}
        rv = self.reviver
        if rv is not None:
            arrays["revive.counts"], arrays["revive.present"] = rv.counts, rv.present
            for j, (chosen, x) in enumerate(rv.probes):
                arrays[f"revive.probe.{j}.chosen"], arrays[f"revive.probe.{j}.x"] = chosen, x
            scalars.update(revive_steps=rv.steps, revive_probes=len(rv.probes), revive_events=rv.events)
        return arrays, scalars

    def restore(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        """Undo `state()`: in place, so the arrays the optimiser and problem hold stay the same objects."""
        self.sq_norms = None
        for prefix, d in (("comp.", self.comps), ("adam_m.", self.opt.m), ("adam_v.", self.opt.v)):
            for k, v in d.items():
                v[...] = arrays[prefix + k]
        self.step_index, self.opt.t = int(scalars["step"]), int(scalars["adam_t"])
        rv = self.reviver
        if rv is not None:
            rv.counts[...], rv.present[...] = arrays["revive.counts"], arrays["revive.present"]
            rv.steps, rv.events = int(scalars["revive_steps"]), list(scalars["revive_events"])
            rv.probes = [(arrays[f"revive.probe.{j}.chosen"], arrays[f"revive.probe.{j}.x"])
                         for j in range(int(scalars["revive_probes"]))]

    def layer_inputs(self, x: np.ndarray) -> dict:
        """The target's input to every decomposed parameter on inputs x (what revive.py splits by)."""
        pre = target_forward(self.arch, self.target, x).pre
        return {name: pre[name] for name in apd.param_shapes(self.arch)}


class Interrupted(Exception):
    """A loop stopped at a step boundary on request (a signal). In the "decompose" phase a
    checkpoint was written first; in the "target" phase (target training) nothing was saved yet."""

    def __init__(self, signum: int, step: int, phase: str = "decompose"):
        self.signum, self.step, self.phase = signum, step, phase
        where = "target training" if phase == "target" else "the decomposition"
        super().__init__(f"interrupted by signal {signum} before step {step} of {where}")

    def __reduce__(self):  # crosses process boundaries (sweep workers) with its fields intact
        return (Interrupted, (self.signum, self.step, self.phase))


@dataclasses.dataclass
class Checkpointing:
    """How `decompose` checkpoints: `save(arrays, state)` every `every` steps, and when `stop()`
    returns a signal number."""

    save: Callable[[dict, dict], None]
    every: int
    stop: Callable[[], int | None] = lambda: None


def decompose(exp: Experiment, arch: Target, target: Params, sample: Callable[[int], np.ndarray],
              rng_init: np.random.Generator, log: Callable[[dict], None] | None = None,
              progress: Callable[[int, int, dict], None] | None = None,
              comps: apd.Comps | None = None, checkpoint: Checkpointing | None = None,
              resume: tuple[dict, dict] | None = None, rngs: dict | None = None,
              make_trainer: Callable | None = None) -> Decomposition:
    """Run APD on `target` (params with a leading replicate axis) with batches from `sample(B)`.

    `log(record)` is called every `decompose.log_every` steps and at the end with every loss term
    (mean over replicates, and per replicate under "<term>/replicates"). With `checkpoint`, the
    full state is saved every `checkpoint.every` steps; `resume` = (arrays, state) of such a
    checkpoint continues from it exactly. `rngs` (name -> Generator) are the random streams
    `sample` draws from: their states are saved and restored with the rest. `make_trainer` builds the
    per-step trainer (default `Trainer`, APD; `spd_train.decompose_spd` passes SPD's); the result is
    of its `result_cls` (default `Decomposition`)."""
    rngs = rngs or {}
    dc = exp.decompose
    I = exp.replicates
    if make_trainer is None and dc.method != "apd":
        raise ValueError(f"decompose() runs APD; method = {dc.method} runs through runtime.engine.spd_train.decompose_spd "
                         "(runtime.run dispatches on the method)")
    trainer = (make_trainer or Trainer)(exp, arch, target, sample, rng_init, comps)
    history: list[dict] = []
    start, elapsed = 0, 0.0
    if resume is not None:
        arrays, state = resume
        trainer.restore(arrays, state)
        history = list(state["history"])
        for name, rng in rngs.items():
            set_rng_state(rng, state["rngs"][name])
        start, elapsed = trainer.step_index, float(state.get("elapsed_s", 0.0))
    t0 = time.perf_counter() - elapsed
    for step in range(start, dc.steps + 1):
        lr, record = trainer.step()
        is_log = step % dc.log_every == 0 or step == dc.steps
        if is_log or progress is not None:
            record.update(trainer.problem.mask_stats())
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
        if checkpoint is not None and step < dc.steps:
            signum = checkpoint.stop()
            if signum or (step + 1) % checkpoint.every == 0:
                arrays, state = trainer.state()
                state.update(history=history, elapsed_s=time.perf_counter() - t0,
                             rngs={k: rng_state(r) for k, r in rngs.items()})
                checkpoint.save(arrays, state)
            if signum:
                raise Interrupted(signum, step + 1)
    wall = time.perf_counter() - t0
    revivals = [] if trainer.reviver is None else trainer.reviver.events
    result_cls = getattr(trainer, "result_cls", Decomposition)
    return result_cls(arch, dc.components, dc.rank, trainer.comps, history, wall, dc.steps / max(wall, 1e-9), revivals)

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
         into dead ones at revival steps (revive.py)

`Trainer.step()` is one iteration (what `runtime.pipeline.bench` times). In top-k mode without Lp or
output-reconstruction terms, steps 4-7 run on the kinds' hand-written kernels (fused.py, kinds.py; same
values and gradients as autograd on `LossProblem.loss`, which every other configuration uses and
which the tests compare against); all-zero input rows are dropped where that is exact.

Per-term losses are per replicate; the optimised total sums replicates (each replicate's gradient
is exactly that of an independent run) and logs their mean.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from autograd import value_and_grad
from autograd.tracer import getval

from ...engine.decompose import (GRAD_CHECK_EVERY, Decomposition, MethodEngine, first_non_finite,
                                 replicate_sums)
from ...engine.kernels import (CHUNK, FastAdam, GradParts, add_scaled, blocked_sq_norms, default_blas_threads,
                               normalise_columns_blocked, tune_malloc)
from ...engine.models import Params, n_outputs, target_forward
from ...engine.optim import lr_at
from ...engine.registry import ENGINES
from ...spec import Experiment, Target
from . import components as apd
from . import fused as fused_kernels
from .attributions import attributions, live_choices, topk_mask
from .kinds import hooks
from .revive import Reviver
from .spec import ApdDecompose


def used_components(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(I,) how many components the top-k mask (I, B, C) switches on for at least one sample of the
    batch x (I, B, n_in) with a nonzero input (`live_choices`). Logged during training: a component
    that drops out of this count for good has died, and the curve shows when."""
    return np.count_nonzero(np.any(live_choices(mask, x), axis=1), axis=-1)


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
        # kinds' fused kernels (fused.py, kinds.APD_KINDS) where they apply, else autograd on LossProblem.loss.
        self.fused = fused and fused_kernels.applies(arch, L, self.topk)
        self.path = fused_kernels.path_name(arch) if self.fused else "autograd"
        # Rows with an all-zero input can be dropped from the whole step (notes §11.1.15: their
        # attributions are exactly zero, and they contribute nothing to any term).
        self.compact = (self.fused and fused_kernels.zero_rows_inert(arch)
                        and self.topk is not None and self.topk.mode in ("batch", "exact"))
        # Some kinds' attributions and loss share their largest GEMMs (the residual MLP's ResidualPre)
        shares = hooks(arch).shares_precompute
        self.use_pre = self.fused and shares is not None and shares(arch, self.attr)
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
        return topk_mask(self.topk, np.asarray(a), x)

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
                mask = topk_mask(self.topk, np.asarray(getval(a)), x)
        masked = None
        if mask is not None:
            masked = apd.apd_forward(arch, self.target, comps, x, mask=mask.astype(x.dtype), m=m)
            if L.minimality is not None:
                terms["minimality"] = apd.mse_loss(masked.y, tgt.y)
            record["k_per_sample"] = mask.sum(axis=2).mean(axis=1)  # k / B (the mean_active metric counts nonzero inputs only)
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
                pre = hooks(self.arch).precompute(self.arch, self.target, tgt, comps, self.C, self.m, xb,
                                                  next(iter(comps.values())).dtype)
                a = pre.attr
            else:
                a = attributions(self.attr.kind, self.attr.source, self.arch, self.target, tgt, comps, xb,
                                 self.C, self.m)
            if xb is x:
                mask = topk_mask(self.topk, np.asarray(a), x)
            else:
                mask = fused_kernels.compact_batch_topk(np.asarray(a), self.topk.k(Bsz, x))
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
        """The fused loss object (fused.py; the kind's kernel) of this batch and mask."""
        dtype = next(iter(comps.values())).dtype
        return fused_kernels.build(self.arch, self.target, self.C, self.m, self.L, x, tgt, mask, dtype, B_total,
                                   variant, pre)

    def _fused_from_mask(self, comps, x, tgt, mask, record, need_grad, B_total=None, pre=None):
        """Same record and gradient as the autograd path, from the hand-written forward/backward."""
        fl = self.fused_loss(comps, x, tgt, mask, B_total, pre=pre)
        fl.sq_hints = self.sq_norm_hints
        factors = [comps[n] for n in fl.factor_names]
        vals = fl.forward(factors)
        record["k_per_sample"] = mask.sum(axis=(1, 2)) / fl.B
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
        self.m = dc.rank
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
        first_non_finite(record, step)
        checking = not last and (step % GRAD_CHECK_EVERY == 0 or step == dc.steps - 1)
        if checking:
            first_non_finite({f"gradient of {k}": replicate_sums(g) for k, g in grads.items()}, step)
        if not last:
            grads = {k: g if isinstance(g, (np.ndarray, GradParts)) and g.dtype == self.dtype
                     else np.asarray(g, dtype=self.dtype) for k, g in grads.items()}
            if dc.unit_norm:
                project_gradients(grads, comps, arch)
            sq_out = self.opt.step(comps, grads, lr, sq_norms=self.norm_axes)
            self.sq_norms = sq_out if self.norm_axes else None
            if checking:  # a finite gradient whose square overflows (float32: |g| > 1.8e19) stalls Adam silently
                first_non_finite({f"Adam's second moment of {k}": replicate_sums(v) for k, v in self.opt.v.items()}, step)
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

    def events(self) -> list:
        """The run's revival events (decompose.revive), for the decomposition record."""
        return [] if self.reviver is None else self.reviver.events

    def layer_inputs(self, x: np.ndarray) -> dict:
        """The target's input to every decomposed parameter on inputs x (what revive.py splits by)."""
        pre = target_forward(self.arch, self.target, x).pre
        return {name: pre[name] for name in apd.param_shapes(self.arch)}


@dataclasses.dataclass
class ApdDecomposition(Decomposition):
    """Trained APD components (the flat layout of components.py, leading replicate axis), C of
    inner rank m, and the loss history."""

    method = "apd"

    def components(self, name: str, replicate: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A (C, d_in, m), B (C, m, d_out) of one decomposed parameter and replicate."""
        A, B = apd.to_components(self.comps, name, self.C)
        return A[replicate], B[replicate]

    def arrays(self, replicate: int) -> dict[str, np.ndarray]:
        """Every decomposed parameter's A (C, d_in, m) and B (C, m, d_out) (docs/outputs.md)."""
        out = {}
        for name in apd.decomposed_params(self.arch):
            out[f"{name}.A"], out[f"{name}.B"] = self.components(name, replicate)
        return out

    @staticmethod
    def inner_rank(dec: ApdDecompose) -> int | None:
        return dec.rank

    @classmethod
    def comps_from_arrays(cls, arch: Target, exp: Experiment, per_replicate: list[dict]) -> dict:
        comps = {}
        for name in apd.decomposed_params(arch):
            A = np.stack([c[f"{name}.A"] for c in per_replicate])
            B = np.stack([c[f"{name}.B"] for c in per_replicate])
            comps.update(apd.from_components(name, A, B))
        return comps


Trainer.result_cls = ApdDecomposition

# floats a step holds per float of a sample's activations (ApdEngine.sample_floats), measured with
# benchmarks/memory.py: up to ~2.2 on the fused kernels (the gated network with APD-model attributions),
# ~5 on autograd's path (TMS 5-2 with Lp sparsity)
ACTIVATIONS = 2.5
AUTOGRAD_ACTIVATIONS = 6.0


class ApdEngine(MethodEngine):
    trainer = Trainer
    decomposition = ApdDecomposition

    def step_cost(self, exp: Experiment, arch: Target) -> dict:
        """Per optimiser step, all replicates (every restart trains):
          trainable parameters  sum over decomposed parameters of C*m*(d_in + d_out)
          FLOPs                 3 x APD forward (2*B*C*m*(d_in + d_out) per layer: forward + backward)
                                + dense sum for faithfulness (2*C*d_in*m*d_out per parameter)"""
        from ...engine.models import layers_of, param_shapes

        d = exp.decompose
        C, m, B, I = d.components, d.rank, d.batch, exp.replicates * d.restarts
        layers = layers_of(arch)
        shapes = param_shapes(arch)
        params = I * sum(C * m * (a + b) for a, b in shapes.values())
        flops = I * (sum(3 * 2 * B * C * m * (layer.d_in + layer.d_out) for layer in layers)
                     + sum(2 * C * a * m * b for a, b in shapes.values()))
        return {"params": params, "flops": flops}

    def memory_parts(self, exp: Experiment, arch: Target) -> list:
        """The components A, B (C*m*(d_in + d_out) per decomposed parameter and replicate); while
        training, every restart's, with a gradient and 2 Adam moments each, and one step's batch."""
        from ...engine.memory import decomposition_parts
        from ...engine.models import n_inputs

        d = exp.decompose
        per = self.step_cost(exp, arch)["params"] / (exp.replicates * d.restarts)
        # every row: a step that drops the all-zero rows falls back to the full batch when the
        # top-k mask of the rest is ambiguous (Trainer.step_grads)
        return decomposition_parts(exp, per, d.batch, self.sample_floats(exp, arch), n_inputs(arch),
                                   params_what="APD components",
                                   grads_what="gradients and 2 Adam moments of the components",
                                   batch_what="one step's batch: inputs, activations, attributions, masks",
                                   restarts_what="the components of the other restarts")

    def sample_floats(self, exp: Experiment, arch: Target) -> float:
        """ACTIVATIONS (AUTOGRAD_ACTIVATIONS where the fused kernels do not apply) x (every
        layer's bottleneck C*m, input and output; attributions and mask C; the output tangents of
        every component, C*d_L, that gradient attributions take; the model's input and output).
        The factors cover the kernels' temporaries, or autograd's tape, and the gradient pass
        (measured, benchmarks/memory.py)."""
        from ...engine.models import layers_of, n_inputs, n_outputs

        d = exp.decompose
        C, m, d_L = d.components, d.rank, n_outputs(arch)
        per = sum(C * m + layer.d_in + layer.d_out for layer in layers_of(arch))
        factor = ACTIVATIONS if fused_kernels.applies(arch, d.loss, d.topk) else AUTOGRAD_ACTIVATIONS
        return factor * (per + C * (2 + d_L) + n_inputs(arch) + d_L)


    def step_flops(self, exp: Experiment, arch: Target) -> dict:
        from .cost import step_flops

        return step_flops(exp, arch)

    def describe(self, exp: Experiment) -> str:
        from .cost import describe_config

        return describe_config(exp)

    def summary_extra(self, exp: Experiment, dec: Decomposition) -> dict:
        """"revivals": the events of decompose.revive (when it is on)."""
        return {"revivals": dec.revivals} if exp.decompose.revive is not None else {}


ENGINES["apd"] = ApdEngine()

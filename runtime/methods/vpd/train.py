"""The VPD training step and its trainer (notes §3-§4): what `decompose.decompose` runs for
`method = "vpd"`.

    before step 0 only: the faithfulness warmup (AdamW on the faithfulness term alone, V and U only;
        its optimiser state discarded)
    step t < steps:
      1. lr of the step (decompose.optimizer.lr x decompose.schedule), the sources' lr (with its
         warmup), g of the smooth L0, the coefficients (schedules: t / (steps - 1), spec/knots.py)
      2. a batch x = sample(B) and the rows' draws (stream "vpd_masks": adversarial rows, routing,
         fresh sources, for all B rows); the rows with a nonzero input kept where an all-zero row is
         inert (engine/rows.py: one all-zero row stands for the rest); the clean target pass
         (reconstruction target, CI inputs)
      3. `adversary.ascents` ascents of the persistent sources on the all-rows adversarial
         reconstruction, components and CI detached (plain arrays)
      4. loss = faithfulness + reconstruction (merged) + importance_minimality (activity) +
         frequency, each times its coefficient, and its gradient w.r.t. V, U, the CI MLPs and the
         sources in one backward pass (pre-update components)
      5. the sources' final ascent with that gradient (of the reconstruction alone: its coefficient
         scales only the parameters' side, `model.scale_grad`)
      6. per replicate: clip the gradient norm of V, U (and, separately, of the CI MLPs); AdamW
    step t = steps: the loss only (no update), for the last log entry, as APD and SPD.

Per-term losses are per replicate (I,); the differentiated total sums replicates, so each
replicate's gradients, clipping and updates are exactly an independent run's.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import autograd.numpy as anp
import numpy as np
from autograd import grad, value_and_grad
from autograd.tracer import getval

from ...engine import seeding
from ...engine.decompose import GRAD_CHECK_EVERY, Decomposition, MethodEngine, first_non_finite, replicate_sums
from ...engine.kernels import default_blas_threads, tune_malloc
from ...engine.masks import output_mse
from ...engine.models import Params, layers_of
from ...engine.optim import Adam, lr_at
from ...engine.registry import ENGINES, model_of
from ...engine.rows import compact_index, row_weights
from ...spec import METHODS, Experiment, Optimizer, Target
from ...spec.knots import value_at, warmup_then_constant
from . import sparsity
from .adversary import PersistentSources
from .model import RowDraws, Rows, VpdModel, VpdParams, draw_rows, row_errors, scale_grad, select_rows, take_rows

CI_ACTIVE = 0.1  # a subcomponent counts as causally important on a row when its lower CI > CI_ACTIVE (logs)
CLIP_EPS = 1e-6  # clip factor min(1, max_norm / (norm + CLIP_EPS)), torch's clip_grad_norm_ convention
TERMS = METHODS["vpd"].terms()  # faithfulness, reconstruction, importance_minimality, frequency


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


class VpdProblem:
    """The VPD loss of one batch and its gradient, and the CI statistics of the last step."""

    def __init__(self, model: VpdModel, steps: int):
        self.model, self.dec, self.steps = model, model.dec, steps
        self.path = "vpd-autograd"  # the kernels a step runs (`apdspec bench`)
        self._last: tuple | None = None  # (lower CI, nonzero-row mask) of the last loss

    def coefficients(self, step: int) -> dict:
        """Every coefficient at `step` (a term that is off: 0), g and the adversarial fraction."""
        L, adv = self.dec.loss, self.dec.adversary
        coef = {name: 0.0 if getattr(L, name) is None else value_at(getattr(L, name), step, self.steps)
                for name in TERMS}
        coef["g"] = value_at(L.smooth_l0_g, step, self.steps)
        coef["adv_fraction"] = 0.0 if adv is None else value_at(adv.fraction, step, self.steps)
        return coef

    def terms(self, comps: VpdParams, sources: dict | None, x: np.ndarray, tgt, draws: RowDraws, coef: dict,
              rows: Rows | None = None) -> tuple:
        """(terms {name: (I,)}, row errors (I, R)) on batch x. The reconstruction's gradient w.r.t. V,
        U and the CI is scaled by its coefficient inside (`scale_grad`); the sources' gradient is the
        reconstruction's own. With `rows`, x, tgt and draws are the kept rows of a batch of rows.B
        and `sources` the full persistent ones (gathered here, so their gradient lands in place);
        every term is the full batch's (a dropped row adds 0 reconstruction error under any mask)."""
        model, L = self.model, self.dec.loss
        ci_lower, ci_upper = model.ci(comps, tgt.pre)
        cr = coef["reconstruction"]
        if rows is not None and sources is not None:
            sources = {k: take_rows(v, rows.idx) for k, v in sources.items()}
        scaled = {k: scale_grad(v, cr) for k, v in comps.items() if k.endswith((".V", ".U"))}
        errors = row_errors(model.merged_output(scaled, x, {k: scale_grad(v, cr) for k, v in ci_lower.items()},
                                                sources, draws), tgt.y)
        w, B = (None, None) if rows is None else (rows.weights, rows.B)
        freqs = {k: sparsity.frequencies(v, coef["g"], L.normalize_at_one, w, B) for k, v in ci_upper.items()}
        self._last = ({k: np.asarray(getval(v)) for k, v in ci_lower.items()}, np.any(x != 0, axis=-1))
        recon = anp.mean(errors, axis=1) if rows is None else anp.sum(errors, axis=1) / rows.B
        return {"faithfulness": model.faithfulness(comps), "reconstruction": recon,
                "importance_minimality": sparsity.activity(freqs),
                "frequency": sparsity.frequency_penalty(freqs, L.frequency_reference)}, errors

    def step_grads(self, comps: VpdParams, sources: dict | None, x: np.ndarray, tgt, draws: RowDraws, coef: dict,
                   record: dict, need_grad: bool = True, rows: Rows | None = None) -> tuple[dict, dict | None] | None:
        """Fill `record` with the terms (I,) and their weighted total; return (gradients of the
        parameters, gradient of the reconstruction w.r.t. the sources or None), or None."""
        adv = draws.adversarial
        n_adv, n_sto = (adv.sum(axis=1), (~adv).sum(axis=1)) if rows is None else (rows.n_adversarial,
                                                                                    rows.n_stochastic)

        def objective(both):
            terms, errors = self.terms(both["comps"], both.get("sources"), x, tgt, draws, coef, rows)
            total, differentiated = 0.0, 0.0
            for name, value in terms.items():
                total = total + coef[name] * value
                differentiated = differentiated + (value if name == "reconstruction" else coef[name] * value)
                record[name] = np.asarray(getval(value))
            record["total"] = np.asarray(getval(total))
            e = np.asarray(getval(errors))
            record["recon_adversarial"] = np.sum(e * adv, axis=1) / np.maximum(n_adv, 1)
            record["recon_stochastic"] = np.sum(e * ~adv, axis=1) / np.maximum(n_sto, 1)
            return anp.sum(differentiated)

        both = {"comps": comps} if sources is None else {"comps": comps, "sources": sources}
        if not need_grad:
            objective(both)
            return None
        _, g = value_and_grad(objective)(both)
        return g["comps"], g.get("sources")

    def mask_stats(self) -> dict:
        """`ci_l0` of the last step: per replicate, the mean number of subcomponents (all sites) with
        lower CI > CI_ACTIVE over the rows with a nonzero input."""
        if self._last is None:
            return {}
        ci_lower, nz = self._last
        active = sum(np.count_nonzero(v > CI_ACTIVE, axis=-1) for v in ci_lower.values())
        return {"ci_l0": np.where(nz, active, 0).sum(axis=1) / np.maximum(nz.sum(axis=1), 1)}


class VpdTrainer:
    """One VPD iteration per `step()` call (the interface of the engine's trainers: step, state,
    restore, events, problem.mask_stats, comps, m, result_cls).

    `target` holds the target's parameters (leading replicate axis); `sample(B)` returns a fresh
    (I, B, n_in) batch; `rng_init` initialises V, U and the CI MLPs unless `comps` are given. The
    persistent sources are drawn from the stream "vpd_sources" and every per-step draw from
    "vpd_masks" of decompose.seed (`rngs` overrides them, for tests); only "vpd_masks" is stepped
    later, and its state is in `state()`.

    `step()` returns (lr, record); record holds per replicate (I,) arrays: the terms, total,
    recon_adversarial, recon_stochastic, adv_rows (fraction of adversarial rows), g, source_lr,
    ppgd_recon (the all-rows adversarial reconstruction at the start of the last warmup ascent;
    absent without ascents and at the last step), grad_norm and ci_grad_norm (before clipping), and at step 0
    warmup_faithfulness."""

    result_cls = None  # VpdDecomposition, set below
    terms = TERMS

    def __init__(self, exp: Experiment, arch: Target, target: Params, sample: Callable[[int], np.ndarray],
                 rng_init: np.random.Generator, comps: VpdParams | None = None,
                 rngs: dict[str, np.random.Generator] | None = None):
        dec = self.dec = exp.decompose
        self.exp, self.arch, self.sample = exp, arch, sample
        self.dtype = np.dtype(exp.dtype)
        self.I = exp.replicates
        tune_malloc()
        default_blas_threads()
        self.target = {k: np.asarray(v, dtype=self.dtype) for k, v in target.items()}
        rngs = {name: (rngs or {}).get(name) or seeding.stream(dec.seed, name) for name in ("vpd_sources", "vpd_masks")}
        self.model = VpdModel(arch, self.target, dec)
        self.comps = comps if comps is not None else self.model.init_params(self.I, rng_init, self.dtype)
        self.problem = VpdProblem(self.model, dec.steps)
        self.comp_keys, self.ci_keys = self.model.component_keys(), self.model.ci_keys()
        self.opt = Adam({k: self.comps[k] for k in self.comp_keys}, dec.optimizer)
        self.ci_opt = Adam({k: self.comps[k] for k in self.ci_keys}, dec.optimizer)
        adv = dec.adversary
        self.adversary = None
        if adv is not None:
            shapes = {n: (self.I, dec.batch, self.model.channels(n)) for n in self.model.names}
            self.adversary = PersistentSources(shapes, rngs["vpd_sources"], self.dtype, adv.beta1, adv.beta2, adv.eps)
            self.source_schedule = warmup_then_constant(adv.lr, adv.warmup)
        self.rng_masks = rngs["vpd_masks"]
        self.compact = model_of(arch).zero_input_inert(arch)  # all-zero input rows dropped where exact
        self.step_index = 0
        self.m = None  # subcomponents are rank one: no inner rank

    def faithfulness_warmup(self) -> np.ndarray:
        """AdamW on the faithfulness term alone (V, U), in place, with its own (discarded) state;
        returns the faithfulness after the last update (I,)."""
        fw = self.dec.faithfulness_warmup
        sub = {k: self.comps[k] for k in self.comp_keys}
        opt = Adam(sub, Optimizer("adamw", fw.lr, fw.weight_decay))
        step = value_and_grad(lambda p: anp.sum(self.model.faithfulness(p)))
        for _ in range(fw.steps):
            value, g = step(sub)
            first_non_finite({"faithfulness (warmup)": np.asarray(self.model.faithfulness(sub))}, 0)
            opt.step(sub, {k: np.asarray(v, dtype=self.dtype) for k, v in g.items()}, fw.lr)
        return np.asarray(self.model.faithfulness(sub), dtype=np.float64)

    def warmup_ascents(self, x: np.ndarray, tgt, lr: float, record: dict, rows: Rows | None) -> None:
        """The sources' ascents on the adversarial reconstruction of every row, with V, U and the CI
        as constants (notes §4). With `rows`, x and tgt are the kept rows: the loss is the full
        batch's (its dropped rows add 0 under any sources), and the sources of dropped rows get a 0
        gradient (their Adam state still steps, as without dropping)."""
        model, adv = self.model, self.adversary
        ascents = self.dec.adversary.ascents
        if not ascents:
            return
        ci_lower = {k: np.asarray(v) for k, v in model.ci(self.comps, tgt.pre)[0].items()}
        y_ref = np.asarray(tgt.y)
        scale = 1.0 if rows is None else x.shape[1] / rows.B  # a mean over R kept rows -> over all B
        per_replicate = {}

        def objective(s):
            if rows is not None:
                s = {k: take_rows(v, rows.idx) for k, v in s.items()}
            loss = output_mse(model.adversarial_output(self.comps, x, ci_lower, s), y_ref) * scale
            per_replicate["loss"] = getval(loss)
            return anp.sum(loss)

        step = grad(objective)
        for _ in range(ascents):
            g = step(adv.sources)
            adv.ascend(g, lr)
        # the attack's strength at the last ascent's start: free (its forward pass), not a pass of its own
        record["ppgd_recon"] = np.asarray(per_replicate["loss"])

    def kept_rows(self, x: np.ndarray, draws: RowDraws) -> Rows | None:
        """The rows of batch x a step works on, where the kind makes all-zero input rows inert
        (engine/rows.py); None: every row (nothing to drop, or not exact for this kind)."""
        if not self.compact:
            return None
        idx, R = compact_index(x)
        if R >= x.shape[1]:
            return None
        adv = draws.adversarial
        return Rows(idx, x.shape[1], row_weights(idx, x.shape[1], self.dtype), adv.sum(axis=1), (~adv).sum(axis=1))

    def step(self) -> tuple[float, dict]:
        dec = self.dec
        step = self.step_index
        last = step >= dec.steps
        record: dict = {}
        if step == 0 and dec.faithfulness_warmup is not None:  # before the first step (never after a resume)
            record["warmup_faithfulness"] = self.faithfulness_warmup()
        lr = lr_at(step, dec.steps, dec.optimizer.lr, dec.schedule) if not last else 0.0
        coef = self.problem.coefficients(step)
        x = self.sample(dec.batch)
        draws = draw_rows(self.model, self.rng_masks, self.I, dec.batch, coef["adv_fraction"], self.dtype)
        rows = self.kept_rows(x, draws)
        adv_rows = draws.adversarial.mean(axis=1)
        if rows is not None:
            x, draws = np.take_along_axis(x, rows.idx[..., None], axis=1), select_rows(draws, rows.idx)
        tgt = self.model.clean(x)
        src_lr = 0.0
        if self.adversary is not None:
            src_lr = value_at(self.source_schedule, step, dec.steps)
            if not last:
                self.warmup_ascents(x, tgt, src_lr, record, rows)
        sources = None if self.adversary is None else self.adversary.sources
        out = self.problem.step_grads(self.comps, sources, x, tgt, draws, coef, record, need_grad=not last, rows=rows)
        record.update(adv_rows=adv_rows, g=np.full(self.I, coef["g"]), source_lr=np.full(self.I, src_lr))
        first_non_finite(record, step)
        if out is not None:
            grads, src_grads = out
            if src_grads is not None:
                self.adversary.ascend(src_grads, src_lr)
            grads = {k: np.array(v, dtype=self.dtype) for k, v in grads.items()}
            if step % GRAD_CHECK_EVERY == 0 or step == dec.steps - 1:
                first_non_finite({f"gradient of {k}": replicate_sums(g) for k, g in grads.items()}, step)
            record["grad_norm"] = clip_per_replicate({k: grads[k] for k in self.comp_keys}, dec.grad_clip)
            record["ci_grad_norm"] = clip_per_replicate({k: grads[k] for k in self.ci_keys}, dec.ci_grad_clip)
            self.opt.step({k: self.comps[k] for k in self.comp_keys}, grads, lr)
            self.ci_opt.step({k: self.comps[k] for k in self.ci_keys}, grads, lr)
        self.step_index += 1
        return lr, record

    def events(self) -> list:
        return []

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
        scalars = {"step": self.step_index, "adam_t": self.opt.t, "ci_adam_t": self.ci_opt.t,
                   "vpd_masks": seeding.rng_state(self.rng_masks)}
        if self.adversary is not None:
            src_arrays, scalars["src_adam_t"] = self.adversary.state()
            arrays.update(src_arrays)
        return arrays, scalars

    def restore(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        """Undo `state()`, in place (the optimisers keep holding the same arrays)."""
        for k, v in self.comps.items():
            v[...] = arrays["comp." + k]
        for opt in (self.opt, self.ci_opt):
            for prefix, d in (("adam_m.", opt.m), ("adam_v.", opt.v)):
                for k, v in d.items():
                    v[...] = arrays[prefix + k]
        if self.adversary is not None:
            self.adversary.restore(arrays, scalars["src_adam_t"])
        self.step_index, self.opt.t, self.ci_opt.t = (int(scalars["step"]), int(scalars["adam_t"]),
                                                      int(scalars["ci_adam_t"]))
        seeding.set_rng_state(self.rng_masks, scalars["vpd_masks"])


@dataclasses.dataclass
class VpdDecomposition(Decomposition):
    """A trained VPD decomposition: `comps` holds model.py's flat parameters (leading replicate
    axis), C the subcomponents per site, m is None."""

    method = "vpd"

    def components(self, name: str, replicate: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """V (d_in, C) and U (C, d_out) of site `name` (a layer name, e.g. "W.T")."""
        return self.comps[f"{name}.V"][replicate], self.comps[f"{name}.U"][replicate]

    def layer_names(self) -> list[str]:
        return [layer.name for layer in layers_of(self.arch)]


VpdTrainer.result_cls = VpdDecomposition


def step_cost(exp: Experiment, arch: Target) -> dict:
    """Analytic FLOPs of one step per replicate (multiply-adds count 2; a backward pass twice its
    forward), by term: the clean target pass, the CI MLPs, the masked passes (the ascents' all-rows
    passes and the merged pass, each site's V, U, delta and frozen products), faithfulness; and the
    trainable parameter count."""
    d = exp.decompose
    B, C = d.batch, d.components
    widths = d.causal_importance.widths
    sites = layers_of(arch)
    dense = sum(2 * B * s.d_in * s.d_out for s in sites)
    ci = sum(2 * B * sum(a * b for a, b in zip((s.d_in,) + widths, widths + (C,))) for s in sites)
    masked = sum(2 * B * (s.d_in * C + C * s.d_out + 2 * s.d_in * s.d_out) for s in sites)
    passes = 1 + (d.adversary.ascents if d.adversary is not None else 0)
    faith = sum(2 * s.d_in * C * s.d_out for s in sites)
    params = sum(s.d_in * C + C * s.d_out + sum(a * b + b for a, b in zip((s.d_in,) + widths, widths + (C,)))
                 for s in sites)
    out = {"target_pass": dense, "causal_importance": 3 * ci, "masked_passes": 3 * masked * passes,
           "faithfulness": 3 * faith, "params": params,
           "sources": sum(B * (C + int(d.delta_channel)) for _ in sites) if d.adversary is not None else 0,
           "acts": sum(B * (6 * C + sum(widths) * 3 + 2 * (s.d_in + s.d_out)) for s in sites)}
    out["total"] = out["target_pass"] + out["causal_importance"] + out["masked_passes"] + out["faithfulness"]
    return out


class VpdEngine(MethodEngine):
    trainer = VpdTrainer
    decomposition = VpdDecomposition

    def step_cost(self, exp: Experiment, arch: Target) -> dict:
        """`step_cost` for all replicates and restarts; memory: parameters and 2 AdamW buffers, the
        persistent sources and their 2 moments, and the activations autograd keeps (~6 (B, C)
        arrays per site, the CI MLPs' hidden units 3 times, site inputs and outputs)."""
        d = exp.decompose
        I = exp.replicates * d.restarts
        c = step_cost(exp, arch)
        width = np.dtype(exp.dtype).itemsize
        return {**c, "params": int(I * c["params"]), "flops": int(I * c["total"]),
                "memory_bytes": int(width * I * (3 * c["params"] + 3 * c["sources"] + c["acts"]))}

    def memory_parts(self, exp: Experiment, arch: Target) -> list:
        """The subcomponents and CI MLPs; while training, every restart's, with a gradient and 2 AdamW
        moments each, the persistent sources with their 2 moments, and one step's batch: the inputs
        and per sample `sample_floats` (all samples: an upper bound where all-zero rows are dropped)."""
        from ...engine.memory import Part, decomposition_parts, itemsize
        from ...engine.models import n_inputs

        c = step_cost(exp, arch)
        parts = decomposition_parts(exp, c["params"], exp.decompose.batch, self.sample_floats(exp, arch), n_inputs(arch),
                                    params_what="VPD subcomponents and causal-importance MLPs",
                                    grads_what="gradients and 2 AdamW moments of them",
                                    batch_what="one step's batch: inputs, causal importances, masks, masked passes",
                                    restarts_what="the parameters of the other restarts")
        if c["sources"]:
            parts.append(Part("persistent adversary sources and 2 Adam moments",
                              3 * itemsize(exp) * exp.replicates * exp.decompose.restarts * c["sources"],
                              ("decomposition",)))
        return parts

    def sample_floats(self, exp: Experiment, arch: Target) -> float:
        """The activations autograd keeps per sample: ~6 (C,) arrays per site, the CI MLPs' hidden
        units 3 times, each site's input and output twice (step_cost's "acts" over the batch)."""
        return step_cost(exp, arch)["acts"] / exp.decompose.batch

    def step_flops(self, exp: Experiment, arch: Target) -> dict:
        c = step_cost(exp, arch)
        terms = ("target_pass", "causal_importance", "masked_passes", "faithfulness", "total")
        return {k: c[k] * exp.replicates for k in terms}

    def describe(self, exp: Experiment) -> str:
        d = exp.decompose
        L, adv = d.loss, d.adversary
        terms = ", ".join(f"{n} {getattr(L, n).text() if hasattr(getattr(L, n), 'text') else format(getattr(L, n), 'g')}"
                          for n in TERMS if getattr(L, n) is not None)
        a = "no adversary" if adv is None else f"adversary {adv.ascents}+1 ascents"
        return (f"VPD; B {d.batch}; C {d.components} per site{' + delta' if d.delta_channel else ''}; I {exp.replicates}; "
                f"CI {list(d.causal_importance.widths)}; {a}; {terms}; {exp.dtype}")


ENGINES["vpd"] = VpdEngine()

"""Analyses of an SPD run: the same metrics and plots as APD where they carry over, computed with
causal importances in place of top-k, plus SPD's own (docs/method.md, "SPD: metrics"). The kinds'
measures (runtime/targets/<kind>/analysis.py) compute the definitions below from this interface
(`importance = "causal"`: causal_importances, masked, onehot_ci, represents, matrix_weights).

Definitions (all on the trained decomposition; g = sigma_H,lower(gamma(h)), the causal importance
that sets the masks):

* one-hot causal importances: g of every subcomponent on x = ONEHOT_VALUE e_f (0.75, the input of
  the SPD paper's Figs. 8, 12, 13), per matrix (I, F, C).
* a subcomponent is *causally important* on an input when g > CI_ACTIVE (0.1).
* MMCS / ML2R (TMS): the SPD paper's definitions on the first matrix W: for feature f, the
  subcomponent c whose column-f slice V[f, c] U_c is most aligned with W[f] (cosine), and the ratio
  of their norms (targets/tms/analysis.py on the dense rank-one subcomponents, `matrix_weights`).
* ci_error (TMS): for each feature-indexed matrix (W and W^T, not hidden layers), the ground-truth
  causal importance on x_f's one-hot input is 1 for the subcomponent that best matches feature f
  (as in MMCS: for W^T, column f of W^T against V_c U_c[f]) and 0 for every other; ci_error is the
  mean over matrices and features of sum_c |clip(g[f, c], 0, 1) - truth[f, c]|: 0 is perfect, 1 is
  e.g. the right subcomponent at 0 or one extra subcomponent at 1.
* dedicated features (residual MLP): W_in subcomponent c represents feature f when its one-hot
  causal importance g[f, c] > CI_ACTIVE; a feature is dedicated when a W_in subcomponent (of any
  layer) represents it and no other feature (the diagonal of the SPD paper's Fig. 8). mono / duo /
  poly count W_in subcomponents representing 1 / 2 / more features.
* scrubbing: as APD's with subcomponents: in every matrix each subcomponent is kept with
  probability 1/2, then the subcomponents that represent an active feature (one-hot g > CI_ACTIVE,
  per matrix; for W_out nearly all of them) are forced on (scrubbed) or off (anti-scrubbed).
* the CI-masked model: every matrix masked with m = g (the noise r = 0: each subcomponent ablated as
  far as its causal importance allows). It stands in for APD's top-k model in ci_masked_mse,
  mse_by_sparsity, the gated functions and the feature response.
* gated functions: subcomponent c serves function i when g > CI_ACTIVE on at least half of i's grid;
  function i is separated when some subcomponent serves i alone and none serves i together with
  another function.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...analysis.core import ANALYSES, RunAnalysis, _cached, masked_mean, mse_per_sample
from ...analysis.diagnostics import METHOD_DIAGNOSTICS, ML2R_HIGH, ML2R_LOW, MMCS_LOW, MethodDiagnostics, _fmt, _mean
from ...analysis.metrics import COMPUTED
from ...engine import seeding
from ...engine.data import sample_inputs
from ...engine.models import target_forward
from . import ci as ci_mod
from .model import (CI_NAMES, draw_uniforms, inner_acts, masked_forward, spd_layers, subcomponent_weights,
                    summed_weight)
from .train import CI_ACTIVE, SpdProblem

ONEHOT_VALUE = 0.75
SELECT_BATCHES = 10  # restarts: fresh batches of decompose.batch samples scored per instance


def permutation_order(g: np.ndarray) -> np.ndarray:
    """(C,) column order of a one-hot causal-importance table g (F, C), as the SPD paper orders its
    figures: for each feature in turn the subcomponent (not chosen yet) with the highest causal
    importance; then the rest by decreasing largest causal importance."""
    F, C = g.shape
    chosen: list[int] = []
    free = np.ones(C, dtype=bool)
    for f in range(min(F, C)):
        c = int(np.argmax(np.where(free, g[f], -np.inf)))
        chosen.append(c)
        free[c] = False
    rest = np.flatnonzero(free)
    rest = rest[np.argsort(-g[:, rest].max(axis=0), kind="stable")] if rest.size else rest
    return np.concatenate([np.asarray(chosen, dtype=int), rest]).astype(int)


class SpdAnalysis(RunAnalysis):
    """RunAnalysis of an SPD run: the target-only analyses are inherited, the decomposition-dependent
    ones work on subcomponents and causal importances."""

    EVAL_SHARE = 0.15  # of a training step's per-row floats: no mask samples or gradient pass (measured <= 0.05)
    EVAL_STEPS = 1.6  # steps' time per evaluation batch (measured 1.57 on TMS 5-2: every row, several passes)

    importance = "causal"
    ci_active = CI_ACTIVE  # a subcomponent is causally important on an input when g exceeds this

    def _bind(self, dec: Any) -> None:
        """Subcomponents (V, U per matrix, rank one each) and causal-importance MLPs; no top-k."""
        self.params = self.comps = dec.comps
        self.C, self.m = dec.C, 1
        self.model = (self.arch, self.target, None)
        self.topk = None
        self.ci_cfg = self.exp.decompose.causal_importance
        self.layers = spd_layers(self.arch)
        self.names = [layer.name for layer in self.layers]

    def causal_importances(self, x: np.ndarray, tgt=None) -> tuple[Any, dict, dict]:
        """(target trace, inner activations h, causal importances g) on x; h, g: name -> (I, B, C)."""
        tgt = tgt if tgt is not None else target_forward(self.arch, self.target, x)
        h, g = {}, {}
        for layer in self.layers:
            h[layer.name] = np.asarray(inner_acts(self.arch, self.target, self.params, layer, tgt.pre[layer.name], x))
            raw = ci_mod.gamma_values(h[layer.name], *(np.asarray(self.params[f"{layer.name}.ci.{k}"]) for k in CI_NAMES),
                                      activation=self.ci_cfg.activation)
            g[layer.name] = np.asarray(ci_mod.sigma_lower(raw, self.ci_cfg.lower_leak))
        return tgt, h, g

    def masked(self, x: np.ndarray, masks: dict | None, tgt=None, h=None) -> np.ndarray:
        """SPD model output with every matrix masked (name -> (I, B, C); None: all subcomponents on)."""
        if tgt is None or h is None:
            tgt, h, _ = self.causal_importances(x, tgt)
        if masks is None:
            masks = {n: np.ones(h[n].shape, dtype=self.dtype) for n in self.names}
        return np.asarray(masked_forward(self.arch, self.target, self.params, x, tgt, h,
                                         {n: np.asarray(m, dtype=self.dtype) for n, m in masks.items()}))

    def ci_masked(self, x: np.ndarray) -> np.ndarray:
        """The CI-masked model's output: every mask at its causal importance (m = g)."""
        tgt, h, g = self.causal_importances(x)
        return self.masked(x, g, tgt, h)

    @_cached
    def onehot_ci(self) -> dict:
        """name -> (I, F, C) causal importances on the one-hot inputs x_f = ONEHOT_VALUE."""
        return self.causal_importances(self.onehot_inputs(ONEHOT_VALUE))[2]

    @_cached
    def represents(self) -> dict:
        """name -> (I, F, C) bool: subcomponent c is causally important on feature f's one-hot input."""
        return {n: g > CI_ACTIVE for n, g in self.onehot_ci().items()}

    def matrix_names(self) -> list[str]:
        """Every decomposed matrix, tied uses apart (each has its own subcomponents)."""
        return list(self.names)

    def summed_weight(self, name: str) -> np.ndarray:
        """V @ U of decomposed matrix `name`: the sum of its subcomponents, (I, d_in, d_out)."""
        return summed_weight(self.params, name)

    def matrix_weights(self, name: str, dtype=None) -> np.ndarray:
        """(I, C, d_in, d_out) dense rank-one subcomponent weights (factors cast to `dtype` first)."""
        params = self.params if dtype is None else {k: np.asarray(self.params[k], dtype=dtype)
                                                     for k in (f"{name}.V", f"{name}.U")}
        return subcomponent_weights(params, name)

    def _sampled_batch(self, x: np.ndarray, lab: np.ndarray | None, put: Callable,
                       acc: dict) -> tuple[np.ndarray, Callable]:
        """SPD's entries of one batch (RunAnalysis._sampled runs the loop): the CI-masked output's
        loss, the count of important subcomponents, the largest g seen into `acc`. The scrubbing
        test keeps each subcomponent with probability 1/2, forcing those that represent an active
        feature on (scrubbed) or off (anti-scrubbed)."""
        tgt, h, g = self.causal_importances(x)
        y_t = np.asarray(tgt.y, dtype=np.float64)
        put("ci_masked_vs_target", mse_per_sample(self.masked(x, g, tgt, h), y_t))
        put("n_components", sum(np.count_nonzero(v > CI_ACTIVE, axis=-1) for v in g.values()))
        alive = acc.setdefault("alive", {n: np.zeros((self.I, self.C)) for n in self.names})
        for n in self.names:
            alive[n] = np.maximum(alive[n], g[n].max(axis=1))

        def scrubbed(rng: np.random.Generator) -> list[np.ndarray]:
            rep, active = self.represents(), (x != 0).astype(np.float64)
            masks: tuple[dict, dict, dict] = ({}, {}, {})
            for n in self.names:
                random = rng.random(g[n].shape) < 0.5
                forced = np.matmul(active, rep[n].astype(np.float64)) > 0
                masks[0][n], masks[1][n], masks[2][n] = random | forced, random & ~forced, random
            return [self.masked(x, m, tgt, h) for m in masks]
        return y_t, scrubbed

    def _sampled_totals(self, acc: dict) -> dict:
        """(I, L C) the largest g each subcomponent reached on the sample ("alive")."""
        return {"alive": np.concatenate([acc["alive"][n] for n in self.names], axis=1)}

    def _decomposed_outputs(self, x: np.ndarray, n: int | None) -> tuple[Any, dict]:
        """mse_by_sparsity's decomposed model for SPD: every subcomponent masked by its causal importance."""
        tgt, h, g = self.causal_importances(x)
        return tgt, {"spd": self.masked(x, g, tgt, h)}

    # -- restarts -------------------------------------------------------------------------

    @staticmethod
    def criterion_of(exp: Any) -> str:
        """What `restart_scores` measures (summary.json's restarts record names it)."""
        return "held-out SPD loss (the training objective at the final coefficients, fresh batches and mask noise)"

    def restart_scores(self, seed: int | None = None) -> np.ndarray:
        """(I,) score per instance: the SPD loss (faithfulness + beta_1 stochastic recon + beta_2
        layerwise + beta_3 importance minimality, the final coefficients) on SELECT_BATCHES fresh
        batches with fresh mask noise. No ground truth: the objective itself, held out. A
        decomposition that shares a subcomponent between features pays in importance minimality
        (the shared one is causally important more often) or in reconstruction."""
        exp, result = self.exp, self.result
        dc = exp.decompose
        seed = dc.seed if seed is None else seed
        rng_data = seeding.stream(seed, "restarts.select")
        rng_masks = seeding.stream(seed, "restarts.select_masks")
        problem = SpdProblem(exp, result.arch, result.target)
        total = np.zeros(exp.replicates)
        for _ in range(SELECT_BATCHES):
            x = sample_inputs(result.arch, exp.data, exp.replicates, dc.batch, rng_data, self.dtype)
            record: dict = {}
            problem.step_grads(result.decomposition.comps, x,
                               lambda rows: draw_uniforms(result.arch, dc.components, dc.mask_samples, exp.replicates,
                                                          rows, rng_masks, self.dtype),
                               record, step=dc.steps, need_grad=False)
            total += np.asarray(record["total"], dtype=np.float64)
        return total / SELECT_BATCHES


ANALYSES["spd"] = SpdAnalysis


def _ci_l0(an: SpdAnalysis):
    s = an.sampled()
    return masked_mean(s["n_components"].astype(np.float64), s["active_input"])


COMPUTED.update(
    ci_masked_mse=lambda an: an.sampled()["ci_masked_vs_target"].mean(axis=1),
    ci_l0=_ci_l0,
    alive_subcomponents=lambda an: (an.sampled()["alive"] > CI_ACTIVE).sum(axis=1),
)


# -- diagnostics ---------------------------------------------------------------------------

CI_ERROR_HIGH = 0.5  # ci_error per feature: half of a subcomponent's worth of causal importance misplaced


def onehot_ci_use(represents: dict) -> dict[str, tuple[list[int], list[float]]]:
    """matrix -> per replicate (subcomponents causally important on some one-hot input, mean number
    important per one-hot input), from SpdAnalysis.represents ((I, F, C) bool per matrix). The
    ground truth of TMS: (F, 1) in every matrix."""
    return {n: ([int(v) for v in r.any(axis=1).sum(axis=1)], [float(v) for v in r.sum(axis=2).mean(axis=1)])
            for n, r in represents.items()}


def _spd_checks(add, metrics: dict, history: list[dict], mmcs: float | None, ml2r: float | None,
                ci_use: dict | None = None) -> None:
    """SPD's versions of the TMS geometry checks, and its causal-importance checks (SPD paper
    Table 1, Fig. 8, App. "Heuristics for Hyperparameter Selection")."""
    if mmcs is not None and mmcs < MMCS_LOW:
        add("problem", f"Subcomponent directions do not match every column of W: MMCS = {_fmt(mmcs)} (< {MMCS_LOW}; SPD "
            "paper 1.000). A feature is spread over several subcomponents or shares one with another feature.")
    if ml2r is not None and ml2r < ML2R_LOW:
        add("problem" if ml2r < 0.8 else "note",
            f"ML2R = {_fmt(ml2r)} (< {ML2R_LOW}; SPD paper 0.993 for TMS 5-2, 1.010 for 40-10). SPD has no term that "
            "shrinks subcomponents, so a low ML2R means a feature's column is split over several subcomponents (the best "
            "match holds part of it): the importance-minimality loss has not concentrated them yet (train longer) or is "
            "too weak (raise beta_3).")
    elif ml2r is not None and ml2r > ML2R_HIGH:
        add("problem", f"ML2R = {_fmt(ml2r)} (> {ML2R_HIGH}): matched subcomponents are longer than the target's "
            "columns, so others must cancel them.")
    err = _mean(metrics, "ci_error")
    if err is not None and err > CI_ERROR_HIGH:
        where = ""
        if ci_use:
            where = " Per matrix and replicate, subcomponents important on some one-hot input / per one-hot input " \
                    "(ground truth: one per feature / 1): " + "; ".join(
                        f"{n} " + ", ".join(f"{u} / {_fmt(k)}" for u, k in zip(*v)) for n, v in ci_use.items()) + "."
            most = np.max([v[0] for v in ci_use.values()], axis=0)  # per replicate, the most-used matrix's count
            for n, (used, per) in ci_use.items():
                reps = [i for i, (u, k) in enumerate(zip(used, per)) if k > 1.5 and u < 0.5 * most[i]]
                if reps:
                    where += (f" In {n} of replicate{'s' if len(reps) > 1 else ''} {', '.join(map(str, reps))} a few "
                              "subcomponents serve every feature together (a basis of the matrix's small side, not "
                              "one subcomponent per feature); MMCS and ML2R look at W only.")
        add("problem", f"The causal importances on one-hot inputs are far from the ground truth: ci_error = {_fmt(err)} "
            "per feature (the causal_importance plot shows which subcomponents are important for each feature)." + where)
    last = history[-1] if history else {}
    l0 = last.get("ci_l0")
    if isinstance(l0, float) and l0 < 0.5:
        add("problem", f"Almost no subcomponent is causally important on the training samples (ci_l0 = {_fmt(l0)} at the "
            "end): beta_3 (importance_minimality) is likely too high (SPD paper App., heuristics).")




class SpdDiagnostics(MethodDiagnostics):
    label = "one-hot causal importances"

    def prepare(self, an: SpdAnalysis, metrics: dict):
        return onehot_ci_use(an.represents()) if "ci_error" in metrics else None

    def check(self, add, metrics, history, mmcs, ml2r, prepared) -> None:
        _spd_checks(add, metrics, history, mmcs, ml2r, prepared)


METHOD_DIAGNOSTICS["spd"] = SpdDiagnostics()

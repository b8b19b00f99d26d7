"""Analyses of an SPD run: the causal-importance analyses (runtime/analysis/causal.py, whose
docstring defines every metric) on SPD's subcomponents and per-subcomponent causal-importance MLPs,
and SPD's restart score."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...analysis.causal import CausalAnalysis, CausalDiagnostics
from ...analysis.core import ANALYSES
from ...analysis.diagnostics import METHOD_DIAGNOSTICS
from ...engine import seeding
from ...engine.data import sample_inputs
from ...engine.models import target_forward
from . import ci as ci_mod
from .model import CI_NAMES, draw_uniforms, inner_acts, masked_forward, spd_layers
from .train import SpdProblem

SELECT_BATCHES = 10  # restarts: fresh batches of decompose.batch samples scored per instance


class SpdAnalysis(CausalAnalysis):
    """RunAnalysis of an SPD run: the target-only analyses are inherited, the decomposition-dependent
    ones work on subcomponents and causal importances."""

    EVAL_SHARE = 0.15  # of a training step's per-row floats: no mask samples or gradient pass (measured <= 0.05)
    EVAL_STEPS = 1.6  # steps' time per evaluation batch (measured 1.57 on TMS 5-2: every row, several passes)

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

    def traced_output(self, x: np.ndarray, masks: dict, delta_masks: dict | None, tgt, h):
        return masked_forward(self.arch, self.target, self.params, x, tgt, h, masks)

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
METHOD_DIAGNOSTICS["spd"] = CausalDiagnostics("SPD", "beta_3")

"""Analyses of a VPD run: the causal-importance analyses (runtime/analysis/causal.py, whose
docstring defines every metric) on VPD's sites, with the layerwise CI MLPs' lower-squashed
importances as g, and VPD's restart score. The CI-masked model keeps the delta channel off (its
source is 0 there, VPD notes §1); the evaluation adversary gets the delta channel as a source."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...analysis.causal import CausalAnalysis, CausalDiagnostics
from ...analysis.core import ANALYSES
from ...analysis.diagnostics import METHOD_DIAGNOSTICS
from ...engine import seeding
from ...engine.data import sample_inputs
from ...engine.models import layers_of
from .model import VpdModel, draw_rows
from .train import VpdProblem

SELECT_BATCHES = 10  # restarts: fresh batches of decompose.batch samples scored per instance


class VpdAnalysis(CausalAnalysis):
    """RunAnalysis of a VPD run: rank-one subcomponents per site, layerwise causal importances."""

    def _bind(self, dec: Any) -> None:
        self.params = self.comps = dec.comps
        self.C, self.m = dec.C, 1
        self.model = (self.arch, self.target, None)
        self.topk = None
        self.vpd = VpdModel(self.arch, {k: np.asarray(v, dtype=self.dtype) for k, v in self.target.items()},
                            self.exp.decompose)
        self.names = [layer.name for layer in layers_of(self.arch)]
        self.delta_channel = self.exp.decompose.delta_channel

    def causal_importances(self, x: np.ndarray, tgt=None) -> tuple[Any, None, dict]:
        """(target trace, None, lower causal importances g: name -> (I, B, C)) on x."""
        tgt = tgt if tgt is not None else self.vpd.clean(x)
        return tgt, None, {k: np.asarray(v) for k, v in self.vpd.ci(self.params, tgt.pre)[0].items()}

    def masked(self, x: np.ndarray, masks: dict | None, tgt=None, h=None) -> np.ndarray:
        """VPD model output with every site's subcomponents masked (None: all on); delta channel off."""
        if masks is None:
            masks = {n: np.ones(x.shape[:2] + (self.C,), dtype=self.dtype) for n in self.names}
        return np.asarray(self.traced_output(x, {n: np.asarray(m, dtype=self.dtype) for n, m in masks.items()},
                                             None, tgt, h))

    def traced_output(self, x: np.ndarray, masks: dict, delta_masks: dict | None, tgt, h):
        return self.vpd.masked_output(self.params, x, masks, delta_masks)

    # -- restarts -------------------------------------------------------------------------

    @staticmethod
    def criterion_of(exp: Any) -> str:
        return ("held-out VPD loss (the training objective at the final coefficients on fresh batches, every row "
                "stochastic: the persistent sources are training state)")

    def restart_scores(self, seed: int | None = None) -> np.ndarray:
        """(I,) score per instance: the VPD loss (faithfulness, reconstruction, activity, frequency at
        the final coefficients) on SELECT_BATCHES fresh batches with fresh stochastic rows. No ground
        truth: the objective itself, held out."""
        exp = self.exp
        dc = exp.decompose
        seed = dc.seed if seed is None else seed
        rng_data = seeding.stream(seed, "restarts.select")
        rng_masks = seeding.stream(seed, "restarts.select_masks")
        problem = VpdProblem(self.vpd, dc.steps)
        coef = {**problem.coefficients(dc.steps), "adv_fraction": 0.0}
        total = np.zeros(exp.replicates)
        for _ in range(SELECT_BATCHES):
            x = sample_inputs(self.arch, exp.data, exp.replicates, dc.batch, rng_data, self.dtype)
            draws = draw_rows(self.vpd, rng_masks, exp.replicates, dc.batch, 0.0, self.dtype)
            record: dict = {}
            problem.step_grads(self.params, None, x, self.vpd.clean(x), draws, coef, record, need_grad=False)
            total += np.asarray(record["total"], dtype=np.float64)
        return total / SELECT_BATCHES


ANALYSES["vpd"] = VpdAnalysis
METHOD_DIAGNOSTICS["vpd"] = CausalDiagnostics("VPD", "importance_minimality")

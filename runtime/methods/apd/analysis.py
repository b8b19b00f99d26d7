"""The analyses of an APD run: components selected by top-k over attributions (one mask for every
matrix), and the restart score. The kinds' measures (runtime/targets/<kind>/analysis.py) use this
interface; metrics only APD has are registered here.

Cost: the sampled pass evaluates `report.eval_batches` batches of `decompose.batch` with one
attribution pass and up to five masked APD passes per batch (top-k, top-1, scrubbed,
anti-scrubbed, random), all through the rank-m bottleneck (no (B, C, D) tensor). A 1-layer
residual MLP is evaluated on an exact narrower copy (its kind's `reduced_model`). Measured on one
core at paper scale with the defaults (20 batches of 256, float32): resid 1L (F 100, D 1000, C 130,
m 50) ~3 s for every metric, ~10 s more for all plots; resid 2L (C 200, m 25) ~15-20 s for the metrics.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...analysis.adversary import AdversaryView
from ...analysis.causal import ONEHOT_VALUE
from ...analysis.core import ANALYSES, RunAnalysis, _cached, masked_mean, mse_per_sample
from ...analysis.metrics import COMPUTED
from ...analysis.scrub import scrub_masks
from ...engine import seeding
from . import components as apd
from .attributions import attributions, sample_topk_mask, topk_mask

SELECT_BATCHES = 10  # restarts: fresh batches of decompose.batch samples scored per instance


class ApdAnalysis(RunAnalysis):
    """RunAnalysis of an APD run."""

    def _bind(self, dec: Any) -> None:
        """APD components (C, rank m) and top-k. Every forward / attribution pass runs on an exact
        narrower copy where the kind has one; weight analyses use the original arrays."""
        self.comps, self.C, self.m = dec.comps, dec.C, dec.m
        self.model = self.part.reduced_model(self.target, self.comps) or (self.arch, self.target, self.comps)
        self.topk = self.exp.decompose.topk

    def attr(self, x: np.ndarray, tgt=None) -> np.ndarray:
        """The run's attributions (its kind and source) on x: (I, B, C)."""
        arch, target, comps = self.model
        tgt = tgt if tgt is not None else self.forward(x)
        at_ = self.exp.decompose.attribution
        return np.asarray(attributions(at_.kind, at_.source, arch, target, tgt, comps, x, self.C, self.m))

    def masked(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """APD output (I, B, d_L) with all components (mask None) or the given (I, B, C) mask."""
        arch, target, comps = self.model
        m = None if mask is None else np.asarray(mask, dtype=self.dtype)
        return np.asarray(apd.apd_forward(arch, target, comps, x, mask=m, m=self.m).y)

    def config_mask(self, attr: np.ndarray, x: np.ndarray) -> np.ndarray | None:
        return None if self.topk is None else topk_mask(self.topk, attr, x)

    def adversary_view(self, x: np.ndarray) -> AdversaryView:
        """APD's importance for the evaluation adversary: the batch top-k mask (0/1; every component
        on without top-k), one mask for every matrix (a component spans them all), no delta channel."""
        arch, target, comps = self.model
        tgt = self.forward(x)
        a = self.attr(x, tgt)
        mask = self.config_mask(a, x)
        mask = np.ones(a.shape, dtype=self.dtype) if mask is None else np.asarray(mask, dtype=self.dtype)
        return AdversaryView({"components": mask},
                             lambda xb, m, d: apd.apd_forward(arch, target, comps, xb, mask=m["components"], m=self.m).y,
                             False, np.asarray(tgt.y))

    def probe_importance(self) -> dict:
        """{"*": (I, F, C)}: attributions on the one-hot probes x_f = ONEHOT_VALUE, each row divided
        by its largest (all zero for a probe with no attribution)."""
        a = np.asarray(self.attr(self.onehot_inputs(ONEHOT_VALUE)), dtype=np.float64)
        top = a.max(axis=-1, keepdims=True)
        return {"*": np.divide(a, top, out=np.zeros_like(a), where=top > 0)}

    def matrix_names(self) -> list[str]:
        """Every decomposed parameter once (a tied use shares its parameter's components)."""
        return list(apd.decomposed_params(self.arch))

    def matrix_weights(self, name: str) -> np.ndarray:
        return apd.component_weights(self.comps, name, self.C)

    @_cached
    def identity_attributions(self) -> np.ndarray:
        """(I, F, C) attributions on one-hot inputs."""
        return self.attr(self.onehot_inputs())

    @_cached
    def feature_map(self) -> np.ndarray:
        """(I, F) component selected by per-sample top-1 on the one-hot input of each feature
        (notes §7.7)."""
        return np.argmax(self.identity_attributions(), axis=-1)

    def _sampled_batch(self, x: np.ndarray, lab: np.ndarray | None, put: Callable,
                       acc: dict) -> tuple[np.ndarray, Callable]:
        """APD's entries of one batch: the top-k output's losses (and, given labels, the top-1
        output's), component selection counts into `acc`."""
        tgt = self.forward(x)
        y_t = np.asarray(tgt.y, dtype=np.float64)
        a = self.attr(x, tgt)
        mask = self.config_mask(a, x)
        y_k = None
        if mask is not None:
            y_k = self.masked(x, mask)
            put("topk_vs_target", mse_per_sample(y_k, y_t))
            put("n_components", mask.sum(axis=-1))
            picked = (mask & (a > 0)).sum(axis=1)  # a pick among zero-attribution ties is no use
            acc["selected"] = acc.get("selected", 0) + picked
        if lab is not None:
            y_1 = self.masked(x, sample_topk_mask(a, 1))
            put("top1_vs_labels", mse_per_sample(y_1, lab))
            put("top1_vs_target", mse_per_sample(y_1, y_t))
            if y_k is not None:
                put("topk_vs_labels", mse_per_sample(y_k, lab))

        def scrubbed(rng: np.random.Generator) -> list[np.ndarray]:
            return [self.masked(x, m) for m in scrub_masks(x != 0, self.feature_map(), self.C, rng)]
        return y_t, scrubbed

    def _sampled_totals(self, acc: dict) -> dict:
        """"selected" (I, C) with top-k."""
        return {"selected": np.asarray(acc["selected"], dtype=np.float64)} if "selected" in acc else {}

    def _decomposed_outputs(self, x: np.ndarray, n: int | None) -> tuple[Any, dict]:
        """APD masks by batch top-k as configured (n None: training data) or per-sample top-n."""
        tgt = self.forward(x)
        a = self.attr(x, tgt)
        mask = self.config_mask(a, x) if n is None else sample_topk_mask(a, min(n, self.C))
        return tgt, ({} if mask is None else {"apd": self.masked(x, mask)})

    # -- restarts -------------------------------------------------------------------------

    @staticmethod
    def criterion_of(exp: Any) -> str:
        """What `restart_scores` measures (summary.json's restarts record names it)."""
        if exp.decompose.topk is None:
            return "final total loss (no top-k: the Lp formulation)"
        return "held-out batch top-k MSE vs target output"

    def restart_scores(self, seed: int | None = None) -> np.ndarray:
        """(I,) score per instance, lower is better: held-out batch top-k MSE against the target
        output (mean over samples); without top-k (Lp runs) the final logged total loss. The
        held-out batches come from `seed`'s selection stream (default decompose.seed): runs scored
        with one seed are scored on the same batches (pipeline/pick.py)."""
        exp = self.exp
        if self.topk is None:
            last = self.result.decomposition.history[-1]
            return np.asarray(last.get("total/replicates", [last["total"]]), dtype=np.float64)
        rng = seeding.stream(exp.decompose.seed if seed is None else seed, "restarts.select")  # not the eval streams
        total = np.zeros(exp.replicates)
        for _ in range(SELECT_BATCHES):
            x = self.sample(rng)
            tgt = self.forward(x)
            mask = self.config_mask(self.attr(x, tgt), x)
            total += mse_per_sample(self.masked(x, mask), np.asarray(tgt.y, dtype=np.float64)).mean(axis=1)
        return total / SELECT_BATCHES


ANALYSES["apd"] = ApdAnalysis


def _topk_mse(an: ApdAnalysis):
    s = an.sampled()
    return s["topk_vs_target"].mean(axis=1) if "topk_vs_target" in s else None


def _mean_active(an: ApdAnalysis):
    s = an.sampled()
    return masked_mean(s["n_components"].astype(np.float64), s["active_input"]) if "n_components" in s else None


def _dead(an: ApdAnalysis):
    s = an.sampled()
    return (s["selected"] == 0).sum(axis=1) if "selected" in s else None


COMPUTED.update(topk_mse=_topk_mse, mean_active=_mean_active, dead_components=_dead)

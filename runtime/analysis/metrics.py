"""Metrics of a finished run, per replicate (the names of `spec.METRICS`).

`evaluate(result)` returns name -> list of per-replicate floats for every metric the report asks
for (`exp.report.metrics`) or an `expect` clause uses, and that applies to the target kind. Final
loss terms come from the last logged history entry; everything else from `analysis.RunAnalysis`
(shared with the report, so sampled passes run once). A metric whose analysis fails is left out
(its expectations then fail as "not computed"), the error is kept in the analysis' `errors` and
shown in the report: a bug in an analysis never throws away a finished decomposition.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from . import resid as ar
from .core import RunAnalysis, analysis_for, masked_mean
from .tms import mmcs_ml2r  # noqa: F401  (public: MMCS / ML2R of one replicate)
from ..engine.spd_train import CI_ACTIVE
from ..spec import METRICS, applies

LOSS_METRICS = ("faithfulness", "minimality", "act_recon", "simplicity", "sparsity", "output_recon", "total",
                "stochastic_recon", "stochastic_recon_layerwise", "importance_minimality")



def _sampled_mean(key: str) -> Callable[[RunAnalysis], Any]:
    """Mean over samples with an active input (zero inputs give zero loss in every variant)."""
    def f(an: RunAnalysis):
        s = an.sampled(scrub=True)
        return masked_mean(s[key], s["active_input"]) if key in s else None
    return f


def _topk_mse(an: RunAnalysis):
    s = an.sampled()
    return s["topk_vs_target"].mean(axis=1) if "topk_vs_target" in s else None


def _mean_active(an: RunAnalysis):
    s = an.sampled()
    return masked_mean(s["n_components"].astype(np.float64), s["active_input"]) if "n_components" in s else None


def _dead(an: RunAnalysis):
    s = an.sampled()
    return (s["selected"] == 0).sum(axis=1) if "selected" in s else None


def _scrub_ratio(prefix: str = "") -> Callable[[RunAnalysis], Any]:
    def f(an: RunAnalysis):
        s, a = _sampled_mean(prefix + "scrubbed")(an), _sampled_mean(prefix + "anti_scrubbed")(an)
        if s is None or a is None:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s > 0, a / np.where(s > 0, s, 1.0), np.where(a > 0, np.inf, np.nan))
    return f


def _per_feature(key: str) -> Callable[[RunAnalysis], Any]:
    def f(an: RunAnalysis):
        pf = an.per_feature()
        return ar.nanmean_features(pf[key]) if key in pf else None
    return f


def _category(key: str) -> Callable[[RunAnalysis], Any]:
    return lambda an: [c[key] for c in an.categories()]


def _ci_l0(an: RunAnalysis):
    s = an.sampled()
    return masked_mean(s["n_components"].astype(np.float64), s["active_input"])


MATCHED_COS = 0.99  # matched_rows: the MMCS bar of the SPD paper comparison, per row


COMPUTED: dict[str, Callable[[RunAnalysis], Any]] = {
    "target_loss": lambda an: an.target_loss(),
    "topk_mse": _topk_mse,
    "mean_active": _mean_active,
    "dead_components": _dead,
    "mmcs": lambda an: an.tms_match()["cos"].mean(axis=1),
    "ml2r": lambda an: an.tms_match()["ratio"].mean(axis=1),
    "matched_rows": lambda an: (an.tms_match()["cos"] >= MATCHED_COS).sum(axis=1).astype(np.float64),
    "dedicated_features": _category("dedicated_features"),
    "mono_components": _category("mono"),
    "duo_components": _category("duo"),
    "poly_components": _category("poly"),
    "scrubbed_loss": _sampled_mean("scrubbed"),
    "anti_scrubbed_loss": _sampled_mean("anti_scrubbed"),
    "random_loss": _sampled_mean("random"),
    "scrub_ratio": _scrub_ratio(),
    "canonical_scrubbed_loss": _sampled_mean("canonical_scrubbed"),
    "canonical_anti_scrubbed_loss": _sampled_mean("canonical_anti_scrubbed"),
    "canonical_scrub_ratio": _scrub_ratio("canonical_"),
    "per_feature_loss_top1": _per_feature("top1_vs_labels"),
    "per_feature_loss_topk": _per_feature("topk_vs_labels"),
    "active_per_feature": _per_feature("n_components"),
    "separated_functions": lambda an: an.gated()["separated"],
    "function_mse": lambda an: an.gated()["function_mse"],
    # SPD (analysis/spd.py)
    "ci_masked_mse": lambda an: an.sampled()["ci_masked_vs_target"].mean(axis=1),
    "ci_l0": _ci_l0,
    "alive_subcomponents": lambda an: (an.sampled()["alive"] > CI_ACTIVE).sum(axis=1),
    "ci_error": lambda an: an.ci_error(),
}


def requested(exp) -> set[str]:
    """Metric names asked for by the report or used by an expectation."""
    return set(exp.report.metrics or ()) | {e.metric for e in exp.report.expect}


def loss_metric(history: list, name: str) -> list[float] | None:
    """Final value of a loss term per replicate, from the last history entry."""
    last = history[-1] if history else {}
    if name not in last:
        return None
    return [float(v) for v in last.get(f"{name}/replicates", [last[name]])]


def evaluate(result) -> dict[str, list[float]]:
    """name -> list of per-replicate values, in `spec.METRICS` order."""
    exp = result.experiment
    wanted = requested(exp)
    kind = result.arch.kind
    method = exp.decompose.method
    an = analysis_for(result)
    out: dict[str, list[float]] = {}
    for name in METRICS:
        if name not in wanted or not applies(name, kind, method):
            continue
        if name in LOSS_METRICS:
            vals = loss_metric(result.decomposition.history, name)
        else:
            try:
                vals = COMPUTED[name](an)
            except Exception as e:  # keep the run; the report shows the error
                an.errors[name] = f"{type(e).__name__}: {e}"
                warnings.warn(f"metric {name!r} failed: {an.errors[name]}", RuntimeWarning)
                vals = None
        if vals is not None:
            out[name] = [float(v) for v in np.ravel(np.asarray(vals, dtype=np.float64))]
    return out

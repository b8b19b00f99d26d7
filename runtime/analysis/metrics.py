"""Metrics of a finished run, per replicate (the names of registry.METRICS).

`evaluate(result)` returns name -> list of per-replicate floats for every metric the report asks
for (`exp.report.metrics`) or an `expect` clause uses, and that applies to the target kind and
method. Final loss terms (each method's `terms()`, and "total") come from the last logged history
entry; every other metric from the function a slice registered in COMPUTED beside its analysis
(shared with the report, so sampled passes run once). A metric whose analysis fails is left out
(its expectations then fail as "not computed"), the error is kept in the analysis' `errors` and
shown in the report: a bug in an analysis never throws away a finished decomposition.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from .core import analysis_for
from ..spec import METHODS, METRICS, applies

# metric name -> function(run analysis) -> per-replicate values (None: not computable for this run);
# the slices register theirs (runtime/targets/<kind>/analysis.py, runtime/methods/<method>/analysis.py)
COMPUTED: dict[str, Callable[[Any], Any]] = {
    "target_loss": lambda an: an.target_loss(),
    "dense_share": lambda an: _dense(an)["share"],
    "dense_error": lambda an: _dense(an)["error"],
}


def _dense(an: Any) -> dict:
    from .dense import measures

    return measures(an)


def loss_metrics() -> set[str]:
    """The metrics that are final loss values: every method's loss terms, and the total."""
    return {"total"} | {t for m in METHODS.values() for t in m.terms()}


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
    """name -> list of per-replicate values, in registry.METRICS order."""
    exp = result.experiment
    wanted = requested(exp)
    kind = result.arch.kind
    method = exp.decompose.method
    an = analysis_for(result)
    losses = loss_metrics()
    out: dict[str, list[float]] = {}
    for name in METRICS:
        if name not in wanted or not applies(name, kind, method):
            continue
        if name in losses:
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

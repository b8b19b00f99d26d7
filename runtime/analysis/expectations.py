"""Evaluate a spec's `expect` clauses against per-replicate metric values."""
from __future__ import annotations

import operator

import numpy as np

from ..spec import Experiment, Expectation

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_REDUCE = {"mean": np.mean, "min": np.min, "max": np.max, "median": np.median}


def describe(e: Expectation) -> str:
    """Canonical text of a clause (used when the spec carried none)."""
    lhs = e.metric if e.reduce == "all" else f"{e.reduce}({e.metric})"
    tail = f" for {e.at_least} replicates" if e.at_least is not None else ""
    return f"expect {lhs} {e.op} {e.value:g}{tail}"


def check_expectation(e: Expectation, values: list[float]) -> dict:
    """{"text", "passed", "values", "observed", "needed"}; a missing or NaN metric fails."""
    vals = [float(v) for v in values]
    op = _OPS[e.op]
    ok_each = [bool(np.isfinite(v) and op(v, e.value)) for v in vals]
    if not vals:
        passed, observed, needed = False, None, "metric was not computed"
    elif e.reduce != "all":
        observed = float(_REDUCE[e.reduce](vals))
        passed, needed = bool(np.isfinite(observed) and op(observed, e.value)), f"{e.reduce} over replicates"
    else:
        n_ok, need = sum(ok_each), (e.at_least if e.at_least is not None else len(vals))
        passed, observed, needed = n_ok >= need, n_ok, f"{need} of {len(vals)} replicates"
    return {"text": e.text or describe(e), "metric": e.metric, "passed": passed, "values": vals,
            "observed": observed, "needed": needed}


def evaluate_expectations(exp: Experiment, metrics: dict) -> list[dict]:
    out = []
    for e in exp.report.expect:
        vals = metrics.get(e.metric)
        vals = [] if vals is None else list(np.atleast_1d(vals))
        out.append(check_expectation(e, vals))
    return out

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


def _holds(e: Expectation, v: float) -> bool:
    return bool(np.isfinite(v) and _OPS[e.op](v, e.value))


def check_expectation(e: Expectation, values: list[float]) -> dict:
    """{"text", "passed", "values", "observed", "needed"}; a missing or NaN metric fails."""
    vals = [float(v) for v in values]
    op = _OPS[e.op]
    ok_each = [_holds(e, v) for v in vals]
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


def replicates_meeting(exp: Experiment, metrics: dict) -> list[bool] | None:
    """Per replicate: whether its own values meet every per-replicate clause (those without a
    reduction; `for at least N` counts replicates, so it is not applied to one). None when the
    spec has no such clause or a metric is missing."""
    clauses = [e for e in exp.report.expect if e.reduce == "all"]
    cols = [metrics.get(e.metric) for e in clauses]
    if not clauses or any(c is None for c in cols):
        return None
    cols = [list(np.atleast_1d(c)) for c in cols]
    return [all(_holds(e, float(c[i])) for e, c in zip(clauses, cols)) for i in range(len(cols[0]))]


def choice_against_expectations(sel: dict) -> str | None:
    """One sentence on how the held-out choice fared against the spec's expectations (None when
    the selection has no per-run verdicts: pipeline/pick.py records them)."""
    meets = [r.get("meets") for r in sel.get("per_run", [])]
    if not meets or any(m is None for m in meets):
        return None
    chosen = sel["chosen"]
    some = sum(any(col) for col in zip(*meets))
    kept = sum(meets[c][i] for i, c in enumerate(chosen))
    return (f"The spec's per-replicate expectations: met by some run on {some} of {len(chosen)} replicates, "
            f"by the kept run on {kept}")

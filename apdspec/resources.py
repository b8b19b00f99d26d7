"""Refuse, before anything runs, a spec whose estimated peak memory exceeds the budget (the memory
the machine has available, or `--max-memory`): a diagnostic at the field that drives the estimate
most, naming the others and the largest value of each that fits (runtime/pipeline/resources.py).
A sweep is checked point by point; each refusal is reported at the sweep value that causes it.
"""
from __future__ import annotations

from runtime import spec as S
from runtime.pipeline.resources import Budget, Refusal, check_memory, size_text

from .build import locate, report_points
from .errors import Collector, Note, SpecError
from .state import lang_path


def budget_for(max_memory: int | None) -> Budget | None:
    """--max-memory if given, else what this machine has available (None if it does not say)."""
    from runtime.pipeline.resources import limit_budget, machine_budget

    return limit_budget(max_memory) if max_memory is not None else machine_budget()


def refusal_issue(r: Refusal, point: bool = False) -> S.Issue:
    """The Issue of a refusal: at the strongest driver, the others as `also`."""
    est, paths = r.estimate, [d.path for d in r.drivers]
    what = "this sweep point needs" if point else "the run needs"
    message = (f"{what} {est.describe()}, more than the {size_text(r.budget.bytes)} {r.budget.source}")
    if paths:
        grows = ", ".join(f"{lang_path(d.path)} ({d.value:,})" for d in r.drivers)
        fits = (", or ".join(f"{lang_path(p)} <= {v:,}" for p, v in r.fits) if r.fits
                else "no single one of them alone; lower several")
        hint = f"the estimate grows with {grows}; what fits, the rest unchanged: {fits}"
    else:
        hint = "the process alone is that large"
    hint += "; --max-memory sets another limit (e.g. --max-memory 64G on a larger machine)"
    return S.Issue(paths[0] if paths else "", message, hint, tuple(paths[1:]))


def check_fits(spec, budget: Budget | None, display: str) -> None:
    """Raise SpecError if the loaded spec (a run, or any point of its sweep) does not fit `budget`."""
    if budget is None:
        return
    diags = Collector()
    exp = spec.experiment
    if exp.sweep is None:
        r = check_memory(exp, budget)
        if r is not None:
            _report(spec.state, diags, refusal_issue(r), display)
    else:
        from runtime.pipeline.sweep import PointIssue, points

        from .build import build

        raw = build(spec.state, exp.name)
        issues = []
        for p in points(raw):
            r = check_memory(p.experiment, budget)
            if r is not None:
                issues.append(PointIssue(p.index, p.label, p.values, p.positions, refusal_issue(r, point=True)))
        report_points(spec.state, raw, diags, issues, display)
    if diags:
        raise SpecError(diags.diagnostics, spec.sources)


def _report(state, diags: Collector, issue: S.Issue, display: str) -> None:
    span = locate(state, issue.path) if issue.path else state.header
    notes = []
    for other in issue.also:
        other_span = locate(state, other, exact=True)
        notes.append(Note(f"'{lang_path(other)}' is set here", other_span) if other_span is not None
                     else Note(f"'{lang_path(other)}' has its default value"))
    where = f"{lang_path(issue.path)}: " if issue.path else ""
    diags.error(f"{where}{issue.message}", span, issue.hint, tuple(notes), file=display if span is None else "")

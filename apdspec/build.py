"""Settings -> runtime dataclasses -> resolve() + validate(), with issues mapped back to spans.

Each `Issue.path` (and its `also` paths) names a runtime field; `locate` finds the span that set it,
or, for a field left at its default, the header of the nearest enclosing block.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from runtime import spec as S

from . import ast as A
from .errors import Collector, Note
from .schema import EXPERIMENT, TARGETS, TRAIN, Obj
from .state import NONE, RESET, State, join_path, prefixes, lang_path


def build(state: State, default_name: str) -> S.Experiment:
    v = state.values

    def obj(schema: Obj, default: Any, rt: str) -> Any:
        marker = v.get(rt)
        if marker is not None and marker.value is NONE:
            return None
        base = schema.cls() if (default is None or (marker is not None and marker.value is RESET)) else default
        changes = {}
        for name, node in schema.fields.items():
            path = join_path(rt, name)
            if isinstance(node, Obj):
                if node.rt is None:
                    changes[name] = obj(node, getattr(base, name), path)
            elif path in v:
                changes[name] = v[path].value
        return dataclasses.replace(base, **changes)

    default = S.Experiment()
    exp = obj(EXPERIMENT, default, "")
    kind = state.kind or "tms"
    if kind == "file":
        target = S.FileTarget(path=v["target.path"].value)
    else:
        target = obj(TARGETS[kind], TARGETS[kind].cls(), "target")
    train = obj(TRAIN, default.train, "train")
    report = dataclasses.replace(exp.report, expect=tuple(x for x, _ in state.expects))
    axes = tuple(a for a, _ in state.axes.values())
    name = state.name[0] if state.name else default_name
    return dataclasses.replace(exp, name=name, target=target, train=train, report=report,
                               sweep=S.Sweep(axes) if axes else None)


def check_experiment(state: State, exp: S.Experiment, diags: Collector) -> S.Experiment | None:
    """resolve() and validate(); every Issue becomes a diagnostic at the span that set its field."""
    resolved = S.resolve(exp)  # an unreadable target file is left for validate() to report
    for issue in S.validate(resolved):
        span = locate(state, issue.path)
        notes = []
        for other in issue.also:
            other_span = locate(state, other, exact=True)
            if other_span is not None and other_span != span:
                notes.append(Note(f"'{lang_path(other)}' is set here", other_span))
            elif other_span is None:
                notes.append(Note(f"'{lang_path(other)}' has its default value"))
        path = "expect" if issue.path.startswith("report.expect[") else lang_path(issue.path)
        diags.error(f"{path}: {issue.message}", span, issue.hint, tuple(notes))
    return resolved


def provenance(state: State, rt_path: str) -> A.Span | None:
    """The span that set runtime field `rt_path`, or None if it has its default value. A field
    of an object written as a call (`adam(lr = 1e-3)`) was set by that call, defaults included."""
    s = state.values.get(rt_path)
    if s is not None:
        return s.span
    for p in prefixes(rt_path)[1:]:
        s = state.values.get(p)
        if s is not None and (s.value is RESET or s.value is NONE):
            return s.span
    return None


_EXPECT = re.compile(r"report\.expect\[(\d+)\]")


def locate(state: State, rt_path: str, exact: bool = False) -> A.Span | None:
    """Where to point for a problem with `rt_path`: the span that set it; unless `exact`, for a
    default value the header of the nearest enclosing block (or the experiment's header)."""
    m = _EXPECT.match(rt_path)
    if m:
        i = int(m.group(1))
        return state.expects[i][1] if i < len(state.expects) else state.header
    span = provenance(state, rt_path)
    if span is not None or exact:
        return span
    for p in prefixes(rt_path)[1:]:
        if p in state.blocks:
            return state.blocks[p]
        s = state.values.get(p)
        if s is not None:
            return s.span
    return state.header


def missing_target(state: State, display: str, diags: Collector) -> None:
    """Every experiment needs a target; point at the experiment header (or the file)."""
    diags.error("missing required block 'target'", state.header,
                "add e.g. target tms { features = 5  hidden = 2 }, or target file(\"run/target.npz\")",
                file=display if state.header is None else "")

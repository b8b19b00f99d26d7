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
from .limits import MAX_SWEEP_POINTS
from .schema import EXPERIMENT, TARGETS, TRAIN, Leaf, Obj
from .state import NONE, RESET, State, join_path, prefixes, lang_path


def build(state: State, default_name: str) -> S.Experiment:
    v = state.values

    def obj(schema: Obj, default: Any, rt: str) -> Any:
        marker = v.get(rt)
        if marker is not None and marker.value is NONE:
            return None
        if default is None and marker is None and not any(k.startswith(rt + ".") for k in v):
            return None  # an object that is off by default (decompose.revive) and not set
        # a call form starts from its class's defaults: the method's own class in a merged block
        own_cls = type(default) if schema.variants and default is not None else schema.cls
        base = own_cls() if (default is None or (marker is not None and marker.value is RESET)) else default
        if schema.variants and "method" in schema.fields:  # the decompose block: its method's own class
            chosen = v.get(join_path(rt, "method"))
            method = chosen.value if chosen is not None else base.method
            if method != base.method or (marker is not None and marker.value is RESET):
                base = S.Decompose(method=method) if method in S.METHODS else base
        own = {f.name for f in dataclasses.fields(base)}
        changes = {}
        for name, node in schema.fields.items():
            path = join_path(rt, name)
            if name not in own or (name == "method" and schema.variants):
                continue  # another method's key (check_methods reports it), or the method itself
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


def check_experiment(state: State, exp: S.Experiment, diags: Collector, display: str = "") -> S.Experiment | None:
    """resolve() and validate(); every Issue becomes a diagnostic at the span that set its field.

    With a sweep, the points are what runs: every point is validated (`check_points`), and an issue
    of the spec without its sweep counts only if every point has it."""
    reported = check_methods(state, exp, diags)
    resolved = S.resolve(exp)  # an unreadable target file is left for validate() to report
    issues = S.validate(resolved)
    if exp.sweep is not None:
        issues = check_points(state, exp, diags, issues, display)
    issues = [i for i in issues if not any(i.path == p or i.path.startswith(p + ".") for p in reported)]  # said above
    for issue in issues:
        if diags.full:
            break
        span = locate(state, issue.path)
        notes = []
        for other in issue.also:
            other_span = locate(state, other, exact=True)
            if other_span is not None and other_span != span:
                notes.append(Note(f"'{lang_path(other)}' is set here", other_span))
            elif other_span is None:
                notes.append(Note(f"'{lang_path(other)}' has its default value"))
        diags.error(f"{_issue_path(issue)}: {issue.message}", span, _hint(issue), tuple(notes),
                    file=display if span is None else "")  # no experiment header: the file at least
    return resolved


def node_methods(rt_path: str) -> tuple[str, ...]:
    """The decomposition methods a runtime path under `decompose` belongs to (() for every one)."""
    node: Obj | Leaf = EXPERIMENT
    for part in rt_path.split("."):
        if not isinstance(node, Obj) or part not in node.fields:
            return ()
        node = node.fields[part]
        if node.methods:
            return node.methods
    return ()


def check_methods(state: State, exp: S.Experiment, diags: Collector) -> set[str]:
    """Report every key set (or swept) for the other decomposition method: APD's top-k, rank,
    attribution and loss terms in an SPD spec, SPD's causal-importance settings in an APD spec.
    Returns the runtime paths reported (validate() would name them again)."""
    method = exp.decompose.method
    if method not in S.METHODS:
        return set()
    setting = state.values.get("decompose.method")
    notes = (Note(f"'decompose.method' is set to {method} here", setting.span),) if setting is not None else \
        (Note(f"'decompose.method' has its default value ({method})"),)
    reported: set[str] = set()
    paths = [(rt, s.span) for rt, s in state.values.items()]
    paths += [(rt, span) for rt, (_, span) in state.axes.items()]
    said: list[tuple[str, Any]] = []  # (path, span) reported: one error per statement
    for rt, span in sorted(paths, key=lambda p: p[0].count(".")):
        owners = node_methods(rt)
        if not owners or method in owners or diags.full:
            continue
        other = " or ".join(owners)
        parent = rt.rsplit(".", 1)[0]
        if any(rt.startswith(p + ".") or (p.rsplit(".", 1)[0] == parent and span is not None and sp is not None
                                           and sp.file == span.file and sp.line == span.line) for p, sp in said):
            reported.add(rt)  # a field of an object already reported, or a sibling set by the same call
            continue
        said.append((rt, span))
        diags.error(f"'{lang_path(rt)}' applies to method = {other}; this decomposition is method = {method}", span,
                    f"remove it, or set decompose.method = {owners[0]}" + S.method_spec(method).foreign_key_note, notes)
        reported.add(rt)
    return reported


def _hint(issue: S.Issue) -> str:
    """The issue's hint; for an expectation, also how to drop the spec's expectations (those of a
    used file included) from the command line."""
    if not issue.path.startswith("report.expect["):
        return issue.hint
    drop = "drop the spec's expectations with -s 'report.expect = none'"
    return f"{issue.hint}; or {drop}" if issue.hint else drop


def _issue_path(issue: S.Issue) -> str:
    return "expect" if issue.path.startswith("report.expect[") else lang_path(issue.path)


# -- sweep points


def sweep_points(state: State) -> int:
    """How many points the sweep has: the product of the axis lengths, a zip group counting once."""
    n, groups = 1, {}
    for axis, _ in state.axes.values():
        if axis.group is None:
            n *= len(axis.values)
        else:
            groups[axis.group] = max(groups.get(axis.group, 0), len(axis.values))
    for size in groups.values():
        n *= size
    return n


def check_sweep_size(state: State, diags: Collector) -> bool:
    """False after reporting a sweep with more than MAX_SWEEP_POINTS points (each one is validated)."""
    n = sweep_points(state)
    if n <= MAX_SWEEP_POINTS:
        return True
    axis, span = max(state.axes.values(), key=lambda a: len(a[0].values))
    diags.error(f"the sweep has {n:,} points; at most {MAX_SWEEP_POINTS:,}", span,
                f"'{lang_path(axis.path)}' has {len(axis.values)} values; sweep fewer values or fewer axes")
    return False


MAX_NAMED = 3  # points named in the "same error in N more points" note


def check_points(state: State, exp: S.Experiment, diags: Collector, base: list[S.Issue] = (),
                 display: str = "") -> list[S.Issue]:
    """Validate every point of `exp`'s sweep (`exp` as built: unresolved, so that derived defaults
    follow swept fields) and report each issue at the sweep value that produced it.

    An issue is pointed at the value, in its point, of the first swept field it involves (its own
    field, then its `also` fields). One that involves no swept field (a rank too large for a swept
    target size) is pointed at the value of the axis that makes the difference: the first axis
    whose values are not all among the failing points; the field itself gets a note. The same
    issue at the same place in several points (the other axes varying) is one diagnostic naming
    the first point.

    `base` are the issues of the spec without its sweep; returns those every point has too (they
    do not depend on the sweep: the caller reports them as usual). The others are left out: the
    value a swept field has outside the sweep is never run."""
    from runtime.pipeline.sweep import expand

    if isinstance(exp.target, S.FileTarget):
        arch = _file_architecture(exp.target.path)
        if arch is None:  # unreadable: every point has the base's target.path issue
            return list(base)
        # Validating a point reads the target file three times (resolve, then validate twice): with
        # thousands of points that is seconds. Points of a file target validate exactly like points
        # of the architecture it holds, untrained (no train block; and no axis can sweep target.* or
        # train.* of a file target: the checker rejects those keys), so validate those instead.
        # A file with a replicate axis fixes `replicates`: if that is swept, validate the points
        # with the file itself, which checks the count (slower, and rare).
        swept = {a.path for a in exp.sweep.axes} if exp.sweep else set()
        if "replicates" not in swept or _file_replicates(exp.target.path) is None:
            exp = dataclasses.replace(exp, target=arch, train=None)
    try:
        good, issues = expand(exp)
    except S.SpecValidationError:  # zipped axes of different lengths: the checker reported them
        return list(base)
    n_points = len(good) + len({pi.index for pi in issues})
    where: dict[tuple, set] = {}
    for pi in issues:
        where.setdefault((pi.issue.path, pi.issue.message), set()).add(pi.index)
    everywhere = {(i.path, i.message) for i in base} & {k for k, idx in where.items() if len(idx) == n_points}
    report_points(state, exp, diags, [pi for pi in issues if (pi.issue.path, pi.issue.message) not in everywhere],
                  display)
    return [i for i in base if (i.path, i.message) in everywhere]


def report_points(state: State, exp: S.Experiment, diags: Collector, issues: list, display: str = "") -> None:
    """Report issues of sweep points (`runtime.pipeline.sweep.PointIssue`s of `exp`'s sweep), each
    at the sweep value that produced it, the same issue at the same place once (`check_points`)."""
    sizes = {a.path: len(a.values) for a in exp.sweep.axes} if exp.sweep else {}
    by_issue: dict[tuple, list] = {}
    for pi in issues:
        by_issue.setdefault((pi.issue.path, pi.issue.message, pi.issue.hint, _culprit(pi)), []).append(pi)
    grouped: dict[tuple, tuple] = {}  # (issue, span) -> (axis, culprit, causes, points)
    for key, same in by_issue.items():
        culprit = key[-1]
        # the axes that make the difference: not every one of their values fails
        causes = [a for a in same[0].values if len({p.positions[a] for p in same}) < sizes.get(a, 0)]
        axis = culprit or (causes[0] if causes else None)
        for pi in same:
            span = _value_span(state, pi, axis) if axis is not None else locate(state, pi.issue.path)
            grouped.setdefault((key, span), (axis, culprit, causes, []))[3].append(pi)
    for (_, span), (axis, culprit, causes, same) in grouped.items():
        if diags.full:
            break
        first, issue = same[0], same[0].issue
        notes = []
        if axis is not None:
            hint = _hint(issue) or (f"every sweep point must be a valid experiment: change or remove this value "
                                    f"of '{lang_path(axis)}'")
            others = causes[1:] if culprit is None else []
            for other in (issue.path, *issue.also):
                swept = _swept(first, other)
                if swept and swept[0] == axis:
                    continue
                if swept:
                    notes.append(_value_note(state, first, swept[0]))
                    continue
                other_span = locate(state, other, exact=True)
                name = "the expectation" if other.startswith("report.expect[") else f"'{lang_path(other)}'"
                if other_span is not None and other_span != span:
                    notes.append(Note(f"{name} is set here", other_span))
                elif other_span is None:
                    notes.append(Note(f"{name} has its default value"))
            notes += [_value_note(state, first, a) for a in others]
        else:
            hint = _hint(issue) or "every sweep point must be a valid experiment; the sweep values of this point are noted"
            notes += [_value_note(state, first, a) for a in first.values]
        if len(same) > 1:
            names = "; ".join(point_name(p.values) for p in same[1:1 + MAX_NAMED])
            more = "; ..." if len(same) > 1 + MAX_NAMED else ""
            notes.append(Note(f"the same error in {len(same) - 1} more point{'s' if len(same) > 2 else ''}: "
                              f"{names}{more}"))
        diags.error(f"sweep point {point_name(first.values)}: {_issue_path(issue)}: {issue.message}", span, hint,
                    tuple(notes), file=display if span is None else "")


def _file_architecture(path: str) -> Any:
    """The architecture a target file holds, or None if it cannot be read (validate() says why)."""
    from runtime.spec.target_file import read_target_meta

    try:
        return S.target_from_dict(read_target_meta(path)["target"])
    except Exception:  # any unreadable file: the base experiment's validate() reports it
        return None


def _file_replicates(path: str) -> int | None:
    from runtime.spec.target_file import target_replicates

    try:
        return target_replicates(path)
    except Exception:  # unreadable: the base experiment's validate() reports it
        return None


def _swept(pi: Any, rt_path: str) -> list[str]:
    """The point's axes that set `rt_path`, a field inside it, or the object holding it."""
    return [a for a in pi.values if a == rt_path or a.startswith(rt_path + ".") or rt_path.startswith(a + ".")]


def _culprit(pi: Any) -> str | None:
    """The axis whose value in this point the issue is reported at, or None if it involves none."""
    for path in (pi.issue.path, *pi.issue.also):
        swept = _swept(pi, path)
        if swept:
            return swept[0]
    return None


def _value_span(state: State, pi: Any, axis: str) -> A.Span | None:
    spans = state.axis_values.get(axis)
    if spans is not None and pi.positions[axis] < len(spans):
        return spans[pi.positions[axis]]
    return state.axes[axis][1] if axis in state.axes else None


def _value_note(state: State, pi: Any, axis: str) -> Note:
    return Note(f"'{lang_path(axis)}' is {value_text(pi.values[axis])} in this point", _value_span(state, pi, axis))


def point_name(values: dict) -> str:
    """A sweep point as the user writes its fields: `seed=3,decompose.steps=0` (runtime paths -> values)."""
    return ",".join(f"{lang_path(p)}={value_text(v)}" for p, v in values.items()) or "base"


def value_text(v: Any) -> str:
    from .unparse import format_number

    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, float):
        return format_number(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    return str(v)


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
    while "[" in rt_path:  # inside a list value (a layer of a network, an argument of one)
        if rt_path in state.parts:
            return state.parts[rt_path]
        rt_path = rt_path[: max(rt_path.rfind("["), rt_path.rfind("."))]
    span = provenance(state, rt_path)
    if span is not None or exact:
        return span
    for p in prefixes(rt_path)[1:]:
        if p in state.blocks:
            return state.blocks[p]
        s = state.values.get(p)
        if s is not None:
            return s.span
    if rt_path.startswith("train.") and "target" in state.blocks:  # train is written inside the target block
        return state.blocks["target"]
    return state.header


def missing_target(state: State, display: str, diags: Collector) -> None:
    """Every experiment needs a target; point at the experiment header (or the file)."""
    diags.error("missing required block 'target'", state.header,
                "add e.g. target tms { features = 5  hidden = 2 }, or target file(\"run/target.npz\")",
                file=display if state.header is None else "")

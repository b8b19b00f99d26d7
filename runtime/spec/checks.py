"""Defaults that depend on the target (`resolve`) and every range and cross-field check (`validate`).

Problems are reported by *field path* (``"decompose.topk"``); the language layer maps paths back to
file/line/column. The kind- and method-specific parts are the slices' hooks (registry.KindSpec,
registry.MethodSpec); this module only walks the experiment and calls them.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

import numpy as np

from . import data_file, per_feature
from .issues import Issue, SpecValidationError  # noqa: F401  (public here too)
from .experiment import DATA_MODES, ENDING, MAX_LAYERS, SCHEDULES, Experiment, FileTarget, Optimizer, Schedule, Target
from .knots import Knots
from .registry import METRICS, PLOTS, UnknownKind, applies, kind_spec, kinds_of, method_spec, unmet
from .serial import target_from_dict
from .target_file import read_target_meta, target_replicates


def target_kind(exp: Experiment) -> str:
    """The architecture kind; for file targets, read from the file's metadata."""
    if isinstance(exp.target, FileTarget):
        return read_target_meta(exp.target.path)["kind"]
    return exp.target.kind


def architecture(exp: Experiment) -> Target:
    """The target's architecture; for a file target, the one its metadata describes (raises
    OSError / ValueError / KeyError / TypeError for an unreadable file)."""
    t = exp.target
    return target_from_dict(read_target_meta(t.path)["target"]) if isinstance(t, FileTarget) else t


def resolve(exp: Experiment) -> Experiment:
    """Fill every default that depends on the target kind or method. Idempotent."""
    try:
        arch = architecture(exp)
        kind = kind_spec(arch.kind)
        method = method_spec(exp.decompose.method)
    except (OSError, KeyError, ValueError, TypeError):
        return exp  # validate() reports the unreadable file or the unknown kind / method
    if not isinstance(exp.target, FileTarget):
        exp, arch, kind = _equivalent(exp, arch, kind)
    data = exp.data
    if data.values is None:
        data = dataclasses.replace(data, values=kind.default_values(arch))
    if data.file is not None and data.sha256 is None:
        try:  # recorded, so that the run (spec.json, spec.apd) names exactly the data it read
            data = dataclasses.replace(data, sha256=data_file.sha256_of(data.file))
        except OSError:
            pass  # validate() reports the unreadable file
    train = exp.train
    if not kind.trained or isinstance(exp.target, FileTarget):
        train = None
    elif train is not None:
        train = dataclasses.replace(train, labels=train.labels or kind.labels[0],
                                    seed=exp.seed if train.seed is None else train.seed)
    dec = exp.decompose
    own = {f.name for f in dataclasses.fields(dec)}
    fill = {k: v for k, v in kind.decompose_defaults(arch, dec.method).items() if k in own and getattr(dec, k) is None}
    dec = dataclasses.replace(dec, **fill)
    dec = dataclasses.replace(dec, init_scale=1.0 if dec.init_scale is None else dec.init_scale,
                              seed=exp.seed if dec.seed is None else dec.seed)
    dec = method.resolve(dec, arch, kind)
    report = exp.report
    if report.metrics is None:
        report = dataclasses.replace(report, metrics=tuple(k for k in METRICS if applies(k, arch.kind, dec.method)
                                                           and unmet(k, arch) is None))
    if report.plots is None:
        report = dataclasses.replace(report, plots=tuple(
            k for k, p in PLOTS.items()
            if applies(k, arch.kind, dec.method, "plots") and (p.requires is None or p.requires(arch) is None)))
    return dataclasses.replace(exp, data=data, train=train, decompose=dec, report=report)


def _equivalent(exp: Experiment, arch: Target, kind: Any) -> tuple[Experiment, Target, Any]:
    """The experiment with its target swapped for an equivalent one of a faster kind (a network
    in the layer vocabulary that is a TMS runs as the tms kind), when that kind accepts its labels."""
    other = kind.equivalent(arch)
    if other is None:
        return exp, arch, kind
    other_kind = kind_spec(other.kind)
    labels = exp.train.labels if exp.train is not None else None
    if labels is not None and labels not in other_kind.labels:
        return exp, arch, kind
    return dataclasses.replace(exp, target=other), other, other_kind


def in_choices(path: str, value: Any, choices: tuple[str, ...], issues: list[Issue]) -> None:
    if value not in choices:
        issues.append(Issue(path, f"unknown value {value!r}", "one of: " + ", ".join(choices)))


def positive(path: str, value: float | None, issues: list[Issue], strict: bool = True) -> None:
    if value is None:
        return
    if (value <= 0) if strict else (value < 0):
        issues.append(Issue(path, f"must be {'> 0' if strict else '>= 0'}, got {value}"))


def fraction(path: str, value: float, issues: list[Issue], example: str) -> None:
    """A fraction of the steps, in [0, 1]."""
    if not 0 <= value <= 1:
        name = path.rsplit(".", 1)[-1]
        issues.append(Issue(path, f"{name} is a fraction of the steps in [0, 100%], got {value}",
                            f"write e.g. {example}"))


def optimizer_issues(path: str, o: Optimizer, issues: list[Issue]) -> None:
    in_choices(f"{path}.name", o.name, ("adam", "adamw"), issues)
    positive(f"{path}.lr", o.lr, issues)
    positive(f"{path}.weight_decay", o.weight_decay, issues, strict=False)
    for name in ("beta1", "beta2"):
        v = getattr(o, name)
        if not 0 <= v < 1:
            issues.append(Issue(f"{path}.{name}", f"must be in [0, 1), got {v}"))
    positive(f"{path}.eps", o.eps, issues)


def _schedule_issues(path: str, s: Schedule, issues: list[Issue]) -> None:
    in_choices(f"{path}.kind", s.kind, SCHEDULES, issues)
    fraction(f"{path}.warmup", s.warmup, issues, "warmup = 5%")
    if s.kind == "exponential" and s.halflife is None:
        issues.append(Issue(f"{path}.halflife", "an exponential schedule needs a half-life",
                            "write e.g. schedule = exponential(halflife = 1000)"))
    positive(f"{path}.halflife", s.halflife, issues)
    if not 0 <= s.final <= 1:
        issues.append(Issue(f"{path}.final", f"final is a fraction of the learning rate in [0, 100%], got {s.final}",
                            "write e.g. schedule = half_cosine(final = 10%)"))
    elif s.final and s.kind not in ENDING:
        issues.append(Issue(f"{path}.final", f"a {s.kind} schedule has no final value",
                            "final applies to " + ", ".join(ENDING)))


def schedule_issues(obj: Any, path: str, issues: list[Issue]) -> bool:
    """Report every schedule (knots.Knots) in a field of `obj` (a dataclass tree) that takes only a
    number (the language parses a schedule wherever some method's field of that name takes one);
    True if there was one."""
    found = False
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Knots) and Knots not in typing.get_args(hints[f.name]):
            issues.append(Issue(f"{path}.{f.name}", f"{f.name} of method = {getattr(obj, 'method', None) or 'this one'} "
                                "takes a number, not a schedule", "write a number"))
            found = True
        elif dataclasses.is_dataclass(v) and not isinstance(v, Knots):
            found = schedule_issues(v, f"{path}.{f.name}", issues) or found
    return found


def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def range_issues(path: str, r: tuple[float, float] | None, issues: list[Issue]) -> None:
    if r is not None and not r[0] < r[1]:
        issues.append(Issue(path, f"range must have low < high, got ({r[0]}, {r[1]})"))


def _file_arch(exp: Experiment, issues: list[Issue]) -> Target | None:
    """The architecture of a file target, after checking the file (None: reported)."""
    t = exp.target
    try:
        arch = architecture(exp)
    except (OSError, KeyError, ValueError, TypeError) as e:
        issues.append(Issue("target.path", f"cannot read target file {t.path!r}: {e.strerror if isinstance(e, OSError) and e.strerror else e}",
                            "give the path of a target.npz written by `apdspec run` or `apdspec import-target`"))
        return None
    try:
        stored = target_replicates(t.path)
    except (OSError, ValueError, UnknownKind) as e:
        issues.append(Issue("target.path", f"cannot use target file {t.path!r}: {e}",
                            "give a target file written by `apdspec run` or `apdspec import-target`"))
        return None
    if stored is not None and stored != exp.replicates:
        issues.append(Issue("replicates", f"the target file holds {stored} replicates (a leading axis of length "
                            f"{stored}); the experiment has {exp.replicates}",
                            f"set replicates = {stored} (on the command line: -s replicates={stored})",
                            ("target.path",)))
    return arch


def validate(exp: Experiment) -> list[Issue]:
    """Every range and cross-field check; returns [] for a runnable experiment.

    Expects a `resolve()`d experiment (target-dependent defaults filled)."""
    issues: list[Issue] = []
    if exp.replicates < 1:
        issues.append(Issue("replicates", f"must be >= 1, got {exp.replicates}"))
    in_choices("dtype", exp.dtype, ("float32", "float64"), issues)
    arch = _file_arch(exp, issues) if isinstance(exp.target, FileTarget) else exp.target
    if arch is None:
        return issues
    try:
        kind = kind_spec(arch.kind)
    except UnknownKind as e:
        return issues + [Issue("target", str(e))]
    for path, v in (("seed", exp.seed), ("train.seed", exp.train.seed if exp.train else None),
                    ("train.label_seed", exp.train.label_seed if exp.train else None),
                    ("decompose.seed", exp.decompose.seed), ("target.seed", getattr(arch, "seed", None))):
        positive(path, v, issues, strict=False)
    field_name, n_layers = kind.layer_count(arch)
    if n_layers > MAX_LAYERS:
        issues.append(Issue(f"target.{field_name}", f"must be <= {MAX_LAYERS}, got {n_layers}"))
        return issues
    issues += kind.issues(arch)
    _train_issues(exp, kind, issues)
    _data_issues(exp, kind, arch, issues)
    dc = exp.decompose
    try:
        method = method_spec(dc.method)
    except UnknownKind as e:
        issues.append(Issue("decompose.method", str(e)))
        return issues
    positive("decompose.components", dc.components, issues)
    positive("decompose.steps", dc.steps, issues)
    positive("decompose.batch", dc.batch, issues)
    positive("decompose.log_every", dc.log_every, issues)
    positive("decompose.init_scale", dc.init_scale, issues)
    positive("decompose.restarts", dc.restarts, issues)
    positive("decompose.checkpoint_every", dc.checkpoint_every, issues, strict=False)
    positive("decompose.checkpoint_keep", dc.checkpoint_keep, issues)
    optimizer_issues("decompose.optimizer", dc.optimizer, issues)
    _schedule_issues("decompose.schedule", dc.schedule, issues)
    if schedule_issues(dc, "decompose", issues):
        return issues  # the method's checks expect numbers there
    issues += method.issues(exp, arch, kind)
    _report_issues(exp, arch, issues)
    return issues


def _train_issues(exp: Experiment, kind: Any, issues: list[Issue]) -> None:
    tr = exp.train
    if tr is None:
        return
    positive("train.steps", tr.steps, issues)
    positive("train.batch", tr.batch, issues)
    optimizer_issues("train.optimizer", tr.optimizer, issues)
    _schedule_issues("train.schedule", tr.schedule, issues)
    in_choices("train.labels", tr.labels, ("identity", "act_plus_resid", "abs"), issues)
    in_choices("train.label_coeffs", tr.label_coeffs, ("ones", "uniform"), issues)
    positive("train.log_every", tr.log_every, issues)
    if kind.labels and tr.labels not in kind.labels:
        issues.append(Issue("train.labels", kind.labels_hint.format(labels=tr.labels)))


def _data_issues(exp: Experiment, kind: Any, arch: Target, issues: list[Issue]) -> None:
    d = exp.data
    if d.file is not None:
        _file_data_issues(exp, kind, arch, issues)
    else:
        _generated_data_issues(exp, kind, arch, issues)
    if exp.train is not None:
        _per_feature_issues("train.importance", exp.train.importance, kind.outputs(arch), "outputs", issues)
        n_out = kind.outputs(arch)
        if per_feature.is_uniform(exp.train.importance):  # c^i for i < n_out, judged without the array
            c = float(exp.train.importance)
            bad = not math.isfinite(c) or c < 0 or (c > 1 and (n_out - 1) * math.log(c) >= math.log(np.finfo(float).max))
        else:
            imp = per_feature.values(exp.train.importance, n_out, "power") \
                if not _wrong_length(exp.train.importance, n_out) else np.zeros(0)
            bad = bool(np.any(imp < 0) or not np.all(np.isfinite(imp)))
        if bad:
            issues.append(Issue("train.importance", f"importances must be finite and >= 0, got "
                                f"{per_feature.describe(exp.train.importance)}"))
    issues += kind.data_issues(exp, arch)


def _wrong_length(value: Any, n: int) -> bool:
    return isinstance(value, tuple) and len(value) != n


def _per_feature_issues(path: str, value: Any, n: int, noun: str, issues: list[Issue]) -> None:
    for message, hint, sized in per_feature.shape_issues(value, n, noun):
        issues.append(Issue(path, message, hint, also=("target",) if sized else ()))


def _generated_data_issues(exp: Experiment, kind: Any, arch: Target, issues: list[Issue]) -> None:
    d = exp.data
    n_features = kind.features(arch)
    noun = kind.feature_noun
    _per_feature_issues("data.probability", d.probability, n_features, noun, issues)
    # one number stands for every feature: checked once (a (features,) copy of it can be ~100 MB)
    uniform = per_feature.is_uniform(d.probability)
    p = np.array([float(d.probability)]) if uniform else \
        per_feature.values(d.probability, n_features) if not _wrong_length(d.probability, n_features) else None
    if p is not None and not np.all((p > 0) & (p <= 1)):
        bad = int(np.flatnonzero(~((p > 0) & (p <= 1)))[0])
        which = "a probability" if uniform else f"p_{bad} (feature {bad})"
        issues.append(Issue("data.probability", f"{which} must be in (0, 1], got {p[bad]:g}",
                            "write e.g. probability = 0.05 or 5%"))
    range_issues("data.values", d.values, issues)
    in_choices("data.mode", d.mode, DATA_MODES, issues)
    if d.mode == "exactly_n_active" and not 1 <= d.n_active <= n_features:
        issues.append(Issue("data.n_active", f"n_active must be in [1, {n_features}] (the number of features), got {d.n_active}",
                            also=("target.features",)))
    if d.mode == "exactly_n_active" and not per_feature.is_uniform(d.probability):
        issues.append(Issue("data.probability", "exactly_n_active picks its n features uniformly; per-feature "
                            "probabilities apply to at_least_zero_active data", "write one probability, or "
                            "mode = at_least_zero_active", ("data.mode",)))
    seen: dict[int, str] = {}
    for name in ("synced", "anticorrelated"):
        groups = getattr(d, name)
        for group in groups:
            for f in group:
                if not 0 <= f < n_features:
                    issues.append(Issue(f"data.{name}", f"feature index {f} is out of range: the target has {n_features} "
                                        f"{noun} (indices 0..{n_features - 1})", also=("target.features",)))
                elif f in seen:
                    where = "overlapping synced groups" if seen[f] == name == "synced" else \
                        f"two groups ({seen[f]} and {name})" if seen[f] != name else f"overlapping {name} groups"
                    issues.append(Issue(f"data.{name}", f"feature {f} is in {where}",
                                        "each feature may be in at most one group", () if seen[f] == name else
                                        (f"data.{seen[f]}",)))
                seen.setdefault(f, name)
        if groups and d.mode != "at_least_zero_active":
            issues.append(Issue(f"data.{name}", f"{name} groups apply to at_least_zero_active data only",
                                f"remove {name}, or use mode = at_least_zero_active", ("data.mode",)))
    if p is not None:
        for group in d.anticorrelated:
            idx = [f for f in group if 0 <= f < n_features]
            total = float(p[0]) * len(idx) if uniform else float(p[idx].sum())
            if total > 1 + 1e-12:
                issues.append(Issue("data.anticorrelated", f"the probabilities of anti-correlated group {list(group)} "
                                    f"sum to {total:g}; at most one member fires, so they must sum to <= 1",
                                    "lower data.probability, or split the group", ("data.probability",)))


# generated-data settings a data file leaves unused: set to anything but their defaults, they are refused
_GENERATED_ONLY = ("probability", "mode", "n_active", "synced", "anticorrelated")


def _file_data_issues(exp: Experiment, kind: Any, arch: Target, issues: list[Issue]) -> None:
    d = exp.data
    for path, message, hint, also in data_file.file_issues(d, kind.inputs(arch), kind.outputs(arch)):
        issues.append(Issue(path, message, hint, also))
    fresh = type(d)()
    for name in _GENERATED_ONLY:
        if getattr(d, name) != getattr(fresh, name):
            issues.append(Issue(f"data.{name}", f"'{name}' describes generated features; the inputs come from the "
                                f"data file", f"remove {name} (or remove the data file to generate features)", ("data.file",)))


def _applicability(name: str, table: str, kind: str, method: str, path: str, what: str, issues: list[Issue]) -> bool:
    """Report a metric / plot (`what`) that is unknown or does not apply; True if it applies."""
    reg = METRICS if table == "metrics" else PLOTS
    if name not in reg:
        issues.append(Issue(path, f"unknown {what} {name!r}" + (" in expectation" if path.startswith("report.expect") else ""),
                            "known: " + ", ".join(reg)))
        return False
    if kind not in kinds_of(name, table):
        issues.append(Issue(path, f"{what} {name!r} does not apply to a {kind} target"))
        return False
    if not applies(name, kind, method, table):
        issues.append(Issue(path, f"{what} {name!r} does not apply to method = {method}", also=("decompose.method",)))
        return False
    return True


def unreachable(e: Any, exp: Experiment, arch: Target) -> str | None:
    """Why expectation `e` cannot hold in `exp` (its metric's declared bounds rule its value out),
    or None."""
    metric = METRICS.get(e.metric)
    if metric is None or metric.bounds is None:
        return None
    try:
        lo, hi, why = metric.bounds(exp, arch)
    except (AttributeError, TypeError, ValueError):  # an architecture the bounds do not know
        return None
    v = e.value
    never = {">=": hi is not None and v > hi, ">": hi is not None and v >= hi,
             "<=": lo is not None and v < lo, "<": lo is not None and v <= lo,
             "==": (hi is not None and v > hi) or (lo is not None and v < lo)}.get(e.op, False)
    if not never:
        return None
    lows, highs = (f"{lo:g}" if lo is not None else "-inf"), (f"{hi:g}" if hi is not None else "inf")
    return f"'{e.metric} {e.op} {v:g}' cannot hold: {e.metric} lies in [{lows}, {highs}] here ({why})"


def _requirement(name: str, arch: Target, path: str, issues: list[Issue]) -> None:
    why = unmet(name, arch)
    if why is not None:
        issues.append(Issue(path, f"metric {name!r}: {why[0]}", also=why[1]))


def _report_issues(exp: Experiment, arch: Target, issues: list[Issue]) -> None:
    rp = exp.report
    kind, method = arch.kind, exp.decompose.method
    for name in rp.metrics or ():
        if _applicability(name, "metrics", kind, method, "report.metrics", "metric", issues):
            _requirement(name, arch, "report.metrics", issues)
    for name in rp.plots or ():
        if _applicability(name, "plots", kind, method, "report.plots", "plot", issues):
            plot = PLOTS[name]
            why = plot.requires(arch) if plot.requires is not None else None
            if why is not None:
                issues.append(Issue("report.plots", why[0], also=why[1]))
    for i, e in enumerate(rp.expect):
        path = f"report.expect[{i}]"
        applies_here = _applicability(e.metric, "metrics", kind, method, path, "metric", issues)
        if applies_here:
            _requirement(e.metric, arch, path, issues)
        in_choices(path, e.op, (">=", "<=", ">", "<", "=="), issues)
        in_choices(path, e.reduce, ("all", "mean", "min", "max", "median"), issues)
        if e.at_least is not None and e.at_least > exp.replicates:
            issues.append(Issue(path, f"'for at least {e.at_least} replicates' cannot hold with replicates = "
                                      f"{exp.replicates}",
                                f"run at least {e.at_least} replicates, or lower the count in the expectation",
                                also=("replicates",)))
        elif e.at_least is not None and e.at_least < 1:
            issues.append(Issue(path, f"'for at least {e.at_least} replicates' needs a count of at least 1"))
        reason = unreachable(e, exp, arch) if applies_here else None
        if reason is not None:
            issues.append(Issue(path, reason, "change the bound: as written the expectation fails on every run"))
    positive("report.eval_batches", rp.eval_batches, issues)
    positive("report.adversary.steps", rp.adversary.steps, issues, strict=False)
    positive("report.adversary.step_size", rp.adversary.step_size, issues)
    positive("report.adversary.batches", rp.adversary.batches, issues)
    if rp.paper is not None:
        from .paper import PAPER

        if rp.paper not in PAPER:
            issues.append(Issue("report.paper", f"no paper reference numbers named {rp.paper!r}",
                                "known: " + ", ".join(PAPER)))


def check(exp: Experiment) -> Experiment:
    """resolve() then validate(); raises SpecValidationError listing every issue."""
    exp = resolve(exp)
    issues = validate(exp)
    if issues:
        raise SpecValidationError(issues)
    return exp

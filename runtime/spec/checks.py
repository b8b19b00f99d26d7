"""Kind-dependent defaults (`resolve`) and every range and cross-field check (`validate`).

Problems are reported by *field path* (``"decompose.topk"``); the language layer maps paths back to
file/line/column.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .experiment import (ALL_KINDS, APD_ONLY, METHODS, METRICS, PLOTS, SPD_ONLY, Decompose, Experiment, FileTarget,
                         GatedTarget, Optimizer, ResidMlpTarget, Schedule, TmsTarget, applies)
from .serial import target_from_dict
from .target_file import read_target_meta, target_replicates


@dataclass(frozen=True)
class Issue:
    """A problem with an experiment, located by field path (e.g. ``"decompose.rank"``)."""

    path: str
    message: str
    hint: str = ""
    also: tuple[str, ...] = ()  # other paths involved in a cross-field problem


class SpecValidationError(ValueError):
    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("; ".join(f"{i.path}: {i.message}" for i in issues))


def target_kind(exp: Experiment) -> str:
    """The architecture kind; for file targets, read from the file's metadata."""
    if isinstance(exp.target, FileTarget):
        return read_target_meta(exp.target.path)["kind"]
    return exp.target.kind


def resolve(exp: Experiment) -> Experiment:
    """Fill every default that depends on the target kind. Idempotent."""
    t = exp.target
    if isinstance(t, FileTarget):
        try:
            t_arch = target_from_dict(read_target_meta(t.path)["target"])
        except (OSError, KeyError, ValueError, TypeError):
            return exp  # validate() reports the unreadable file
    else:
        t_arch = t
    kind = t_arch.kind
    data = exp.data
    if data.values is None:
        values = {"tms": (0.0, 1.0), "resid_mlp": (-1.0, 1.0)}.get(kind)
        if kind == "gated":
            values = tuple(t_arch.input_range)
        data = dataclasses.replace(data, values=values)
    train = exp.train
    if kind == "gated" or isinstance(t, FileTarget):
        train = None
    elif train is not None:
        labels = train.labels or ("identity" if kind == "tms" else "act_plus_resid")
        train = dataclasses.replace(train, labels=labels, seed=exp.seed if train.seed is None else train.seed)
    dec = exp.decompose
    spd = dec.method == "spd"
    rank = dec.rank
    if spd:
        pass  # SPD subcomponents are rank one: no rank to fill
    elif rank is None:
        if kind == "tms":
            rank = min(t_arch.features, t_arch.hidden) + 1
        elif kind == "resid_mlp":
            rank = min(t_arch.d_embed, t_arch.d_mlp)
        else:
            rank = t_arch.functions + 2  # min(d_embed, d_mlp) = d_embed = functions + 2
            rank = min(rank, t_arch.functions * t_arch.neurons // max(t_arch.layers, 1))
    init_scale = dec.init_scale if dec.init_scale is not None else (2.0 if kind == "resid_mlp" and not spd else 1.0)
    seed = exp.seed if dec.seed is None else dec.seed
    dec = dataclasses.replace(dec, rank=rank, init_scale=init_scale, seed=seed)
    report = exp.report
    if report.metrics is None:
        report = dataclasses.replace(report, metrics=tuple(k for k in METRICS if applies(k, kind, dec.method)))
    if report.plots is None:
        flat_tms = isinstance(t_arch, TmsTarget) and t_arch.hidden != 2  # polygons need a 2-D hidden layer
        report = dataclasses.replace(report, plots=tuple(k for k in PLOTS if applies(k, kind, dec.method, "plots")
                                                         and not (flat_tms and k == "polygons")))
    return dataclasses.replace(exp, data=data, train=train, decompose=dec, report=report)


def _in(path: str, value: Any, choices: tuple[str, ...], issues: list[Issue]) -> None:
    if value not in choices:
        issues.append(Issue(path, f"unknown value {value!r}", "one of: " + ", ".join(choices)))


def _positive(path: str, value: float | None, issues: list[Issue], strict: bool = True) -> None:
    if value is None:
        return
    if (value <= 0) if strict else (value < 0):
        issues.append(Issue(path, f"must be {'> 0' if strict else '>= 0'}, got {value}"))


def _optimizer_issues(path: str, o: Optimizer, issues: list[Issue]) -> None:
    _in(f"{path}.name", o.name, ("adam", "adamw"), issues)
    _positive(f"{path}.lr", o.lr, issues)
    _positive(f"{path}.weight_decay", o.weight_decay, issues, strict=False)
    for name in ("beta1", "beta2"):
        v = getattr(o, name)
        if not 0 <= v < 1:
            issues.append(Issue(f"{path}.{name}", f"must be in [0, 1), got {v}"))
    _positive(f"{path}.eps", o.eps, issues)


def _schedule_issues(path: str, s: Schedule, issues: list[Issue]) -> None:
    _in(f"{path}.kind", s.kind, ("constant", "linear", "cosine", "exponential"), issues)
    if not 0 <= s.warmup <= 1:
        issues.append(Issue(f"{path}.warmup", f"warmup is a fraction of the steps in [0, 100%], got {s.warmup}",
                            "write e.g. warmup = 5%"))
    if s.kind == "exponential" and s.halflife is None:
        issues.append(Issue(f"{path}.halflife", "an exponential schedule needs a half-life",
                            "write e.g. schedule = exponential(halflife = 1000)"))
    _positive(f"{path}.halflife", s.halflife, issues)


def _range_issues(path: str, r: tuple[float, float] | None, issues: list[Issue]) -> None:
    if r is not None and not r[0] < r[1]:
        issues.append(Issue(path, f"range must have low < high, got ({r[0]}, {r[1]})"))


MAX_LAYERS = 1000  # a sanity bound: validation and models build per-layer lists


def validate(exp: Experiment) -> list[Issue]:
    """Every range and cross-field check; returns [] for a runnable experiment.

    Expects a `resolve()`d experiment (target-dependent defaults filled)."""
    issues: list[Issue] = []
    if exp.replicates < 1:
        issues.append(Issue("replicates", f"must be >= 1, got {exp.replicates}"))
    _in("dtype", exp.dtype, ("float32", "float64"), issues)
    t = exp.target
    if isinstance(t, FileTarget):
        try:
            kind = target_kind(exp)
        except (OSError, KeyError, ValueError) as e:
            issues.append(Issue("target.path", f"cannot read target file {t.path!r}: {e.strerror if isinstance(e, OSError) and e.strerror else e}",
                                "give the path of a target.npz written by `apdspec run` or `apdspec import-target`"))
            return issues
        arch = target_from_dict(read_target_meta(t.path)["target"])
        try:
            stored = target_replicates(t.path)
        except (OSError, ValueError) as e:
            issues.append(Issue("target.path", f"cannot use target file {t.path!r}: {e}",
                                "give a target file written by `apdspec run` or `apdspec import-target`"))
            return issues
        if stored is not None and stored != exp.replicates:
            issues.append(Issue("replicates", f"the target file holds {stored} replicates (a leading axis of length "
                                f"{stored}); the experiment has {exp.replicates}",
                                f"set replicates = {stored} (on the command line: -s replicates={stored})",
                                ("target.path",)))
    else:
        kind, arch = t.kind, t
    for path, v in (("seed", exp.seed), ("train.seed", exp.train.seed if exp.train else None),
                    ("train.label_seed", exp.train.label_seed if exp.train else None),
                    ("decompose.seed", exp.decompose.seed), ("target.seed", getattr(arch, "seed", None))):
        _positive(path, v, issues, strict=False)
    n_layers = arch.hidden_layers if isinstance(arch, TmsTarget) else getattr(arch, "layers", 0)
    if n_layers > MAX_LAYERS:
        field_name = "hidden_layers" if isinstance(arch, TmsTarget) else "layers"
        issues.append(Issue(f"target.{field_name}", f"must be <= {MAX_LAYERS}, got {n_layers}"))
        return issues
    if isinstance(arch, TmsTarget):
        for f in ("features", "hidden"):
            _positive(f"target.{f}", getattr(arch, f), issues)
        _positive("target.hidden_layers", arch.hidden_layers, issues, strict=False)
        # the distinct shapes of the decomposed matrices (every hidden layer has the same one)
        n_features, d_ins = arch.features, [(arch.features, arch.hidden)] + [(arch.hidden, arch.hidden)] * (arch.hidden_layers > 0)
    elif isinstance(arch, ResidMlpTarget):
        for f in ("features", "d_embed", "d_mlp", "layers"):
            _positive(f"target.{f}", getattr(arch, f), issues)
        _in("target.activation", arch.activation, ("relu", "gelu"), issues)
        _in("target.embedding", arch.embedding, ("random", "identity"), issues)
        _positive("target.init_scale", arch.init_scale, issues)
        if arch.embedding == "identity" and arch.features != arch.d_embed:
            issues.append(Issue("target.embedding", "an identity embedding needs features == d_embed",
                                f"features = {arch.features}, d_embed = {arch.d_embed}", ("target.features",)))
        n_features = arch.features
        d_ins = [(arch.d_embed, arch.d_mlp), (arch.d_mlp, arch.d_embed)]
    else:
        assert isinstance(arch, GatedTarget)
        for f in ("functions", "neurons", "layers"):
            _positive(f"target.{f}", getattr(arch, f), issues)
        for f in ("input_range", "amplitude_range", "frequency_range", "phase_range"):
            _range_issues(f"target.{f}", getattr(arch, f), issues)
        if arch.layers > 0 and (arch.functions * arch.neurons) % arch.layers:
            issues.append(Issue("target.layers", f"functions x neurons = {arch.functions * arch.neurons} "
                                f"neurons cannot be split evenly into {arch.layers} layers",
                                "choose layers that divide functions x neurons"))
        n_features = arch.functions
        d_mlp = max(1, arch.functions * arch.neurons // max(arch.layers, 1))
        d_ins = [(arch.functions + 2, d_mlp), (d_mlp, arch.functions + 2)]
        if arch.neurons < 2:
            issues.append(Issue("target.neurons", "a piecewise-linear function needs at least 2 neurons"))

    # training
    tr = exp.train
    if tr is not None:
        _positive("train.steps", tr.steps, issues)
        _positive("train.batch", tr.batch, issues)
        _optimizer_issues("train.optimizer", tr.optimizer, issues)
        _schedule_issues("train.schedule", tr.schedule, issues)
        _in("train.labels", tr.labels, ("identity", "act_plus_resid", "abs"), issues)
        _in("train.label_coeffs", tr.label_coeffs, ("ones", "uniform"), issues)
        _positive("train.log_every", tr.log_every, issues)
        if kind == "tms" and tr.labels != "identity":
            issues.append(Issue("train.labels", f"a TMS target reconstructs its input; labels must be identity, got {tr.labels!r}"))
        if kind == "resid_mlp" and tr.labels == "identity":
            issues.append(Issue("train.labels", "a residual MLP target needs act_plus_resid or abs labels"))

    # data
    d = exp.data
    if not 0 < d.probability <= 1:
        issues.append(Issue("data.probability", f"a probability must be in (0, 1], got {d.probability}",
                            "write e.g. probability = 0.05 or 5%"))
    _range_issues("data.values", d.values, issues)
    _in("data.mode", d.mode, ("at_least_zero_active", "exactly_n_active"), issues)
    if d.mode == "exactly_n_active" and not 1 <= d.n_active <= n_features:
        issues.append(Issue("data.n_active", f"n_active must be in [1, {n_features}] (the number of features), got {d.n_active}",
                            also=("target.features",)))
    seen: set[int] = set()
    for gi, group in enumerate(d.synced):
        for f in group:
            if not 0 <= f < n_features:
                issues.append(Issue("data.synced", f"feature index {f} is out of range: the target has {n_features} features "
                                    f"(indices 0..{n_features - 1})", also=("target.features",)))
            elif f in seen:
                issues.append(Issue("data.synced", f"feature {f} is in overlapping synced groups",
                                    "each feature may be in at most one group"))
            seen.add(f)
    if d.synced and d.mode != "at_least_zero_active":
        issues.append(Issue("data.synced", "synced groups apply to at_least_zero_active data only",
                            "remove synced, or use mode = at_least_zero_active", ("data.mode",)))
    if kind == "gated" and d.synced:
        issues.append(Issue("data.synced", "synced groups apply to sparse-feature data, not to gated control bits"))
    if kind == "gated" and d.mode != "at_least_zero_active":
        issues.append(Issue("data.mode", "gated targets draw independent control bits; only at_least_zero_active applies"))

    # decomposition
    dc = exp.decompose
    _in("decompose.method", dc.method, METHODS, issues)
    _method_field_issues(dc, issues)
    _positive("decompose.components", dc.components, issues)
    _positive("decompose.steps", dc.steps, issues)
    _positive("decompose.batch", dc.batch, issues)
    _positive("decompose.log_every", dc.log_every, issues)
    _positive("decompose.init_scale", dc.init_scale, issues)
    _positive("decompose.restarts", dc.restarts, issues)
    _positive("decompose.checkpoint_every", dc.checkpoint_every, issues, strict=False)
    _positive("decompose.checkpoint_keep", dc.checkpoint_keep, issues)
    if dc.revive is not None and dc.method != "spd":
        _revive_issues(dc, issues)
    _optimizer_issues("decompose.optimizer", dc.optimizer, issues)
    _schedule_issues("decompose.schedule", dc.schedule, issues)
    if dc.method == "spd":
        _spd_issues(dc, issues)
    else:
        _apd_issues(exp, dc, kind, d_ins, issues)
    _report_issues(exp, kind, arch, issues)
    return issues


def _apd_issues(exp: Experiment, dc: Decompose, kind: str, d_ins: list, issues: list) -> None:
    """The APD-only checks: rank, top-k, attributions and their loss terms."""
    if dc.rank is not None:
        _positive("decompose.rank", dc.rank, issues)
        # A component's rank cannot exceed min(d_in, d_out); one spare is allowed because the
        # reference's TMS default is min(F, H) + 1.
        max_rank = max(min(a, b) for a, b in d_ins) + 1
        if dc.rank > max_rank:
            issues.append(Issue("decompose.rank", f"rank {dc.rank} exceeds the largest rank a decomposed matrix allows "
                                f"({', '.join(f'{a}x{b}' for a, b in d_ins)}: at most min(d_in, d_out) + 1 = {max_rank})",
                                f"use rank <= {max_rank}, or leave it out for the default"))
    at = dc.attribution
    _in("decompose.attribution.kind", at.kind, ("gradient", "activation", "ablation"), issues)
    _in("decompose.attribution.source", at.source, ("target", "apd"), issues)
    if at.kind != "gradient" and at.source == "target":
        pass  # activation / ablation attributions always come from the APD model
    L = dc.loss
    for name in ("faithfulness", "minimality", "act_recon", "simplicity", "sparsity", "output_recon"):
        _positive(f"decompose.loss.{name}", getattr(L, name), issues, strict=False)
    _positive("decompose.loss.simplicity_p", L.simplicity_p, issues)
    _positive("decompose.loss.sparsity_p", L.sparsity_p, issues)
    tk = dc.topk
    if tk is None:
        if L.minimality is not None:
            issues.append(Issue("decompose.loss.minimality", "the minimality (top-k reconstruction) loss needs top-k",
                                "set decompose.topk, or use the Lp formulation: loss { sparsity = ... } with topk = none",
                                ("decompose.topk",)))
        if L.sparsity is None:
            issues.append(Issue("decompose.topk", "without top-k, the Lp sparsity loss must be on to select components",
                                "set decompose.loss.sparsity, or a top-k"))
        if L.act_recon is not None and kind == "resid_mlp":
            issues.append(Issue("decompose.loss.act_recon", "activation reconstruction of a residual MLP uses the top-k pass",
                                "set decompose.topk", ("decompose.topk",)))
    else:
        _in("decompose.topk.mode", tk.mode, ("batch", "sample", "exact"), issues)
        if tk.mode == "batch":
            if tk.value <= 0:
                issues.append(Issue("decompose.topk", f"batch top-k must be > 0, got {tk.value}"))
            elif dc.batch > 0 and int(tk.value * dc.batch) < 1:
                issues.append(Issue("decompose.topk", f"batch top-k {tk.value} x batch {dc.batch} = "
                                    f"{tk.value * dc.batch:g} selects no component",
                                    f"use topk >= {1 / dc.batch:.3g} or a larger batch", ("decompose.batch",)))
            elif tk.value > dc.components:
                issues.append(Issue("decompose.topk", f"batch top-k {tk.value} exceeds the number of components {dc.components}",
                                    also=("decompose.components",)))
        elif tk.mode == "sample":
            if tk.value != int(tk.value) or not 1 <= tk.value <= dc.components:
                issues.append(Issue("decompose.topk", f"per-sample top-k must be an integer in [1, {dc.components}], got {tk.value:g}",
                                    also=("decompose.components",)))
        elif tk.mode == "exact" and exp.replicates != 1:
            issues.append(Issue("decompose.topk", "exact top-k needs replicates = 1", also=("replicates",)))
        if exp.replicates > 1 and dc.topk.mode == "exact":
            pass
    if at.kind == "gradient" and at.source == "apd" and kind not in ALL_KINDS:
        issues.append(Issue("decompose.attribution.source", f"target kind {kind!r} cannot provide APD-model gradients"))
    if at.source == "apd" and at.kind != "gradient":
        issues.append(Issue("decompose.attribution.source", f"source applies to gradient attributions; {at.kind} "
                            "attributions always come from the APD model", "remove source"))
    if at.kind == "ablation" and L.sparsity is not None:
        issues.append(Issue("decompose.attribution.kind", "ablation attributions are not differentiable; the Lp sparsity loss needs gradient or activation attributions",
                            also=("decompose.loss.sparsity",)))
    if dc.unit_norm and kind == "gated":
        pass


def _report_issues(exp: Experiment, kind: str, arch, issues: list) -> None:
    rp = exp.report
    method = exp.decompose.method
    for name in rp.metrics or ():
        if name not in METRICS:
            issues.append(Issue("report.metrics", f"unknown metric {name!r}", "known: " + ", ".join(METRICS)))
        elif kind not in METRICS[name][0]:
            issues.append(Issue("report.metrics", f"metric {name!r} does not apply to a {kind} target"))
        elif not applies(name, kind, method):
            issues.append(Issue("report.metrics", f"metric {name!r} does not apply to method = {method}",
                                also=("decompose.method",)))
    for name in rp.plots or ():
        if name not in PLOTS:
            issues.append(Issue("report.plots", f"unknown plot {name!r}", "known: " + ", ".join(PLOTS)))
        elif kind not in PLOTS[name][0]:
            issues.append(Issue("report.plots", f"plot {name!r} does not apply to a {kind} target"))
        elif not applies(name, kind, method, "plots"):
            issues.append(Issue("report.plots", f"plot {name!r} does not apply to method = {method}",
                                also=("decompose.method",)))
        elif name == "polygons" and isinstance(arch, TmsTarget) and arch.hidden != 2:
            issues.append(Issue("report.plots", "the polygons plot needs a 2-D hidden layer (hidden = 2)", also=("target.hidden",)))
    for i, e in enumerate(rp.expect):
        path = f"report.expect[{i}]"
        if e.metric not in METRICS:
            issues.append(Issue(path, f"unknown metric {e.metric!r} in expectation", "known: " + ", ".join(METRICS)))
        elif kind not in METRICS[e.metric][0]:
            issues.append(Issue(path, f"metric {e.metric!r} does not apply to a {kind} target"))
        elif not applies(e.metric, kind, method):
            issues.append(Issue(path, f"metric {e.metric!r} does not apply to method = {method}",
                                also=("decompose.method",)))
        _in(path, e.op, (">=", "<=", ">", "<", "=="), issues)
        _in(path, e.reduce, ("all", "mean", "min", "max", "median"), issues)
        if e.at_least is not None and not 1 <= e.at_least <= exp.replicates:
            issues.append(Issue(path, f"'for {e.at_least} replicates' needs 1 <= n <= replicates ({exp.replicates})",
                                also=("replicates",)))
    _positive("report.eval_batches", rp.eval_batches, issues)
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


def _revive_issues(dc: Decompose, issues: list) -> None:
    r = dc.revive
    _in("decompose.revive.kind", r.kind, ("split",), issues)
    for name in ("every", "window", "until"):
        _positive(f"decompose.revive.{name}", getattr(r, name), issues)
    if r.window > r.every:
        issues.append(Issue("decompose.revive.window", f"window ({r.window} steps) is longer than every ({r.every})",
                            "use window <= every: a window covers the steps since the last revival at most",
                            ("decompose.revive.every",)))
    if dc.topk is None:
        issues.append(Issue("decompose.revive", "revive counts top-k choices; this decomposition has no top-k",
                            "set decompose.topk, or remove revive", ("decompose.topk",)))


def _field(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _method_field_issues(dc: Decompose, issues: list) -> None:
    """A field that only the other method reads must keep its default: APD's top-k, rank, attribution
    and loss terms mean nothing to SPD, and SPD's causal-importance settings nothing to APD."""
    if dc.method not in METHODS:
        return
    other, fields = ("apd", APD_ONLY) if dc.method == "spd" else ("spd", SPD_ONLY)
    fresh = Decompose()
    for name in fields:
        if _field(dc, name) != _field(fresh, name):
            issues.append(Issue(f"decompose.{name}", f"'{name}' applies to method = {other}, and this decomposition is "
                                f"method = {dc.method}", f"remove it, or set decompose.method = {other}",
                                ("decompose.method",)))


def _spd_issues(dc: Decompose, issues: list) -> None:
    ci, L = dc.causal_importance, dc.loss
    _in("decompose.causal_importance.kind", ci.kind, ("mlp",), issues)
    _positive("decompose.causal_importance.hidden", ci.hidden, issues)
    _in("decompose.causal_importance.activation", ci.activation, ("gelu", "gelu_tanh"), issues)
    for name in ("lower_leak", "upper_leak"):
        v = getattr(ci, name)
        if not 0 <= v < 1:
            issues.append(Issue(f"decompose.causal_importance.{name}", f"a leak slope must be in [0, 1), got {v}",
                                "the paper uses 0.01"))
    _positive("decompose.mask_samples", dc.mask_samples, issues)
    fw = dc.faithfulness_warmup
    if fw is not None:
        _positive("decompose.faithfulness_warmup.steps", fw.steps, issues)
        _positive("decompose.faithfulness_warmup.lr", fw.lr, issues)
        _positive("decompose.faithfulness_warmup.weight_decay", fw.weight_decay, issues, strict=False)
    for name in ("faithfulness", "stochastic_recon", "stochastic_recon_layerwise", "importance_minimality"):
        _positive(f"decompose.loss.{name}", getattr(L, name), issues, strict=False)
    _positive("decompose.loss.importance_minimality_p", L.importance_minimality_p, issues)
    if not 0 <= L.importance_warmup <= 1:
        issues.append(Issue("decompose.loss.importance_warmup",
                            f"warmup is a fraction of the steps in [0, 100%], got {L.importance_warmup}",
                            "write e.g. importance_warmup = 5%"))
    _in("decompose.loss.divergence", L.divergence, ("mse",), issues)
    if L.stochastic_recon is None and L.stochastic_recon_layerwise is None:
        issues.append(Issue("decompose.loss.stochastic_recon", "SPD needs a stochastic reconstruction loss: without one "
                            "nothing trains the causal importances to keep what the output needs",
                            "set stochastic_recon and/or stochastic_recon_layerwise",
                            ("decompose.loss.stochastic_recon_layerwise",)))

"""The resolved summary `apdspec check` prints: architecture, decomposed matrices, sizes and costs.

The target's line is its kind's (`KindSpec.describe`), the decomposition's rows its method's
(`MethodSpec.summary_rows`), the sizes and costs the method engine's estimate of one step
(`MethodEngine.step_cost`: trainable parameters, FLOPs, all replicates and restarts), and the
memory the run's estimated peak (runtime/pipeline/resources.py: every phase, evaluation and report
included).
"""
from __future__ import annotations

import os

from runtime import spec as S
from runtime.engine.registry import engine_of
from runtime.pipeline.resources import estimate_memory


def architecture(exp: S.Experiment):
    """The target architecture (for a file target, read from the file's metadata)."""
    return S.architecture(exp)


def _file_line(exp: S.Experiment) -> str:
    """"file PATH (R replicates): " for a file target, else ""."""
    t = exp.target
    if not isinstance(t, S.FileTarget):
        return ""
    from runtime.spec.target_file import target_replicates

    rel = os.path.relpath(t.path)
    shown = t.path if rel.startswith("..") else rel
    try:
        r = target_replicates(t.path)
    except (OSError, ValueError):
        r = None
    return f"file {shown} ({'one target for every replicate' if r is None else f'{r} replicates'}): "


def _data_line(exp: S.Experiment, kind: S.KindSpec, arch) -> str:
    """What the inputs are: the data file and its arrays, or the generated features' settings."""
    from runtime.spec import data_file, per_feature

    d = exp.data
    if d.file is not None:
        rel = os.path.relpath(d.file)
        shown = d.file if rel.startswith("..") else rel
        try:
            entries = data_file.read_entries(d.file)
            n = entries[d.inputs].shape[0]
            name = data_file.labels_name(d, entries)
        except (OSError, ValueError, KeyError, IndexError):
            return f"file {shown} (unreadable)"
        labels = f"labels {name!r} {tuple(entries[name].shape)}" if name is not None else (
            "no labels: train.labels' rule" if exp.train is not None else "no labels: the target's own outputs")
        sha = f", sha256 {d.sha256[:12]}..." if d.sha256 else ""
        return f"file {shown}: {n:,} rows drawn with replacement, inputs {d.inputs!r} {tuple(entries[d.inputs].shape)}, " \
               f"{labels}{sha}"
    parts = [f"{kind.feature_noun} active with p = {per_feature.describe(d.probability)}" if d.mode ==
             "at_least_zero_active" else f"exactly {d.n_active} of {kind.features(arch)} {kind.feature_noun} active"]
    if d.values is not None:
        parts.append(f"values U[{d.values[0]:g}, {d.values[1]:g})")
    for name in ("synced", "anticorrelated"):
        groups = getattr(d, name)
        if groups:
            parts.append(f"{name} {[list(g) for g in groups]}")
    if exp.train is not None and not (per_feature.is_uniform(exp.train.importance) and exp.train.importance == 1):
        parts.append(f"importance {per_feature.describe(exp.train.importance)}"
                     + (" (r^i)" if per_feature.is_uniform(exp.train.importance) else ""))
    return ", ".join(parts)


def _size(n: float, unit: str) -> str:
    for prefix in ("", "K", "M", "G", "T", "P"):
        if abs(n) < 1000:
            return f"{n:.3g} {prefix}{unit}"
        n /= 1000
    return f"{n:.3g} E{unit}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:,.3g} TiB"


def summary_lines(exp: S.Experiment, written_as: str | None = None) -> list[str]:
    """Indented `key  value` lines describing a resolved experiment; `written_as`: the target kind
    the spec names (a network that resolve() found to be an existing kind says so)."""
    d = exp.decompose
    method = S.method_spec(d.method)
    try:
        arch = architecture(exp)
        kind = S.kind_spec(arch.kind)
    except (OSError, KeyError, ValueError, TypeError):
        arch = None
    rows = [("experiment", f"{exp.name} (seed {exp.seed}, {exp.replicates} replicate"
                           f"{'' if exp.replicates == 1 else 's'}, {exp.dtype})")]
    if arch is None:
        rows.append(("target", f"file {exp.target.path} (architecture read at run time)"))
    else:
        rows.append(("target", _file_line(exp) + kind.describe(arch)))
        if written_as not in (None, "file", arch.kind):
            rows.append(("network", f"written as target {written_as}, it is a {kind.label(arch)}: it runs as target "
                                    f"{arch.kind} (that kind's init, training and fast kernels)"))
        note = kind.truth_note(arch)
        if note:
            rows.append(("truth", note))
        if exp.train is not None:
            rows.append(("train", f"{exp.train.steps:,} steps, batch {exp.train.batch:,}, "
                                  f"{exp.train.optimizer.name} lr {exp.train.optimizer.lr:g} {_schedule(exp.train.schedule)}"))
        rows.append(("data", _data_line(exp, kind, arch)))
        rows.append(("decomposed", ", ".join(f"{m.name} {m.d_in}x{m.d_out}{method.matrix_note(m)}"
                                             for m in kind.matrices(arch))))
    rows += method.summary_rows(exp)
    rows.append(("decompose", f"{d.steps:,} steps, batch B = {d.batch:,}, {d.optimizer.name} lr {d.optimizer.lr:g} "
                              f"{_schedule(d.schedule)}"
                              + (f"; {d.restarts} inits per replicate, the one with the {method.restart_criterion(d)} kept"
                                 if d.restarts > 1 else "")))
    rows += method.training_rows(exp)
    if arch is not None:
        c = engine_of(d.method).step_cost(exp, arch)
        per = c["params"] // (exp.replicates * d.restarts)
        rows.append(("parameters", f"{per:,} trainable {d.method.upper()} parameters per replicate ({c['params']:,} in all"
                                   + (f", {d.restarts} restarts each)" if d.restarts > 1 else ")")))
        rows.append(("memory", estimate_memory(exp, arch).describe()))
        rows.append(("compute", f"~{_size(c['flops'], 'FLOP')} per step, "
                                f"~{_size(c['flops'] * d.steps, 'FLOP')} for {d.steps:,} steps"))
    if exp.report.expect:
        rows.append(("expect", "; ".join(e.text for e in exp.report.expect)))
    if exp.sweep and exp.sweep.axes:
        n, zipped = 1, {}
        for a in exp.sweep.axes:
            if a.group is None:
                n *= len(a.values)
            else:
                zipped[a.group] = len(a.values)
        for k in zipped.values():
            n *= k
        rows.append(("sweep", f"{n:,} runs over {', '.join(a.path for a in exp.sweep.axes)}"))
    width = max(len(k) for k, _ in rows)
    return [f"  {k:<{width}}  {v}" for k, v in rows]


def _schedule(s) -> str:
    """"cosine", "half_cosine to 10%", "linear, 5% warmup"."""
    text = s.kind + (f" to {s.final:.3g}x" if s.final else "")
    return text + (f", {s.warmup:.3g} warmup" if s.warmup else "")

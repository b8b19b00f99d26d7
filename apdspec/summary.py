"""The resolved summary `apdspec check` prints: architecture, decomposed matrices, sizes and costs.

Estimates (per optimiser step, all replicates):
  trainable APD parameters  sum over decomposed parameters of C*m*(d_in + d_out)
  memory                    (parameters + 2 Adam buffers) + activations B*C*m + B*d_out per layer
  FLOPs                     3 x APD forward (2*B*C*m*(d_in + d_out) per layer: forward + backward)
                            + dense sum for faithfulness (2*C*d_in*m*d_out per parameter)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from runtime import spec as S


@dataclass(frozen=True)
class Costs:
    params: int  # trainable APD parameters, all replicates
    memory_bytes: int
    flops_per_step: int


def architecture(exp: S.Experiment):
    """The target architecture (for a file target, read from the file's metadata)."""
    t = exp.target
    if isinstance(t, S.FileTarget):
        from runtime.spec.target_file import read_target_meta  # may not exist yet: callers handle ImportError

        return S.target_from_dict(read_target_meta(t.path)["target"])
    return t


def costs(exp: S.Experiment, arch) -> Costs:
    from runtime.engine.models import layers_of

    layers = layers_of(arch)
    d = exp.decompose
    C, m, B, I = d.components, d.rank, d.batch, exp.replicates * d.restarts  # every restart trains
    per_param = {}
    for layer in layers:
        if not layer.transposed:
            per_param.setdefault(layer.param, (layer.d_in, layer.d_out))
    params = I * sum(C * m * (a + b) for a, b in per_param.values())
    width = 4 if exp.dtype == "float32" else 8
    acts = I * sum(B * C * m + B * layer.d_out for layer in layers)
    flops = I * (sum(3 * 2 * B * C * m * (layer.d_in + layer.d_out) for layer in layers)
                 + sum(2 * C * a * m * b for a, b in per_param.values()))
    return Costs(params, width * (3 * params + acts), flops)


def _arch_line(arch) -> str:
    if isinstance(arch, S.TmsTarget):
        return (f"tms: features F = {arch.features}, hidden H = {arch.hidden}, hidden_layers = {arch.hidden_layers}, "
                f"bias = {str(arch.bias).lower()}")
    if isinstance(arch, S.ResidMlpTarget):
        return (f"resid_mlp: features = {arch.features}, d_embed = {arch.d_embed}, d_mlp = {arch.d_mlp}, "
                f"layers = {arch.layers}, {arch.activation}")
    from runtime.engine.models import residual_dims

    D, d_mlp, n = residual_dims(arch)
    return f"gated: {arch.functions} functions x {arch.neurons} neurons, {n} layers (d_embed {D}, d_mlp {d_mlp})"


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


def _topk_line(exp: S.Experiment) -> str:
    tk, B, C = exp.decompose.topk, exp.decompose.batch, exp.decompose.components
    if tk is None:
        return "none (Lp sparsity selects components)"
    if tk.mode == "batch":
        return f"batch {tk.value:g}: k = {int(tk.value * B):,} active of B x C = {B * C:,} per batch"
    if tk.mode == "sample":
        return f"sample: k = {tk.value:g} per sample ({int(tk.value * B):,} per batch)"
    return "exact: k = number of active input features in the batch"


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


def summary_lines(exp: S.Experiment) -> list[str]:
    """Indented `key  value` lines describing a resolved experiment."""
    from runtime.engine.models import layers_of

    d = exp.decompose
    try:
        arch = architecture(exp)
    except (ImportError, OSError, KeyError, ValueError):
        arch = None
    rows = [("experiment", f"{exp.name} (seed {exp.seed}, {exp.replicates} replicate"
                           f"{'' if exp.replicates == 1 else 's'}, {exp.dtype})")]
    if arch is None:
        rows.append(("target", f"file {exp.target.path} (architecture read at run time)"))
    else:
        rows.append(("target", _file_line(exp) + _arch_line(arch)))
        if exp.train is not None:
            rows.append(("train", f"{exp.train.steps:,} steps, batch {exp.train.batch:,}, "
                                  f"{exp.train.optimizer.name} lr {exp.train.optimizer.lr:g} {exp.train.schedule.kind}"))
        mats = []
        for layer in layers_of(arch):
            tied = f" (tied to {layer.param})" if layer.transposed else ""
            if layer.transposed and d.method == "spd":
                tied = f" ({layer.param} transposed in the target; subcomponents of its own)"
            mats.append(f"{layer.name} {layer.d_in}x{layer.d_out}{tied}")
        rows.append(("decomposed", ", ".join(mats)))
    spd = d.method == "spd"
    if spd:  # Stochastic Parameter Decomposition: its own rows and costs (summary_spd.py)
        from .summary_spd import spd_rows

        rows += spd_rows(exp)
    else:
        rows.append(("components", f"C = {d.components}, rank m = {d.rank}"))
        rows.append(("top-k", _topk_line(exp)))
    rows.append(("decompose", f"{d.steps:,} steps, batch B = {d.batch:,}, {d.optimizer.name} lr {d.optimizer.lr:g} "
                              f"{d.schedule.kind}"
                              + (f"; {d.restarts} inits per replicate, the one with the "
                                 + ("lowest held-out SPD loss" if spd else "lowest held-out top-k MSE" if d.topk is not None else "lowest final total loss")
                                 + " kept" if d.restarts > 1 else "")))
    if d.revive is not None:
        r = d.revive
        rows.append(("revive", f"every {r.every:,} steps up to step {r.until:,}, dead components (chosen in under "
                               f"half of the last {r.window:,} steps) split busy ones"
                               + (", dead ones left over adopt inputs no component serves" if r.adopt else "")
                               + (", those left dead at the last revival are zeroed" if r.clear else "") + " (not part of APD)"))
    if arch is not None:
        if spd:
            from .summary_spd import spd_costs

            c = spd_costs(exp, arch)
        else:
            c = costs(exp, arch)
        per = c.params // (exp.replicates * d.restarts)
        rows.append(("parameters", f"{per:,} trainable {'SPD' if spd else 'APD'} parameters per replicate ({c.params:,} in all"
                                   + (f", {d.restarts} restarts each)" if d.restarts > 1 else ")")))
        rows.append(("memory", f"~{_bytes(c.memory_bytes)} (parameters, 2 Adam buffers, activations)"))
        rows.append(("compute", f"~{_size(c.flops_per_step, 'FLOP')} per step, "
                                f"~{_size(c.flops_per_step * d.steps, 'FLOP')} for {d.steps:,} steps"))
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

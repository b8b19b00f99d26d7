"""APD's analytic FLOP model of one step (`apdspec bench`) and the one-line description of its config.

Multiply-add = 2 FLOPs, as in notes §10.2. The kinds' kernels add their own terms (kinds.ApdKind.flops:
the closed-form attributions, dense vs pair-sparse masked passes, embedding and unembedding);
without them the generic path's counts are used.
"""
from __future__ import annotations

from ...engine.data import mean_active, nonzero_fraction
from ...engine.models import layers_of, n_inputs, n_outputs, param_shapes
from ...spec import METHODS, Experiment, per_feature, resolve
from .kinds import hooks


def active_pairs(exp: Experiment, arch) -> float:
    """Expected number of (sample, component) pairs switched on per replicate and step."""
    dc = exp.decompose
    B, C = dc.batch, dc.components
    if dc.topk is None:
        return float(B * C)
    if dc.topk.mode == "batch":
        return float(min(int(dc.topk.value * B), B * C))
    if dc.topk.mode == "sample":
        return float(min(dc.topk.value, C) * B)
    if exp.data.file is not None:
        return float(B * C)  # unknown sparsity: every pair
    if per_feature.is_uniform(exp.data.probability) and not (exp.data.synced or exp.data.anticorrelated):
        return float(min(B * C, exp.data.probability * n_inputs(arch) * B))
    return float(min(B * C, mean_active(exp.data, n_inputs(arch)) * B))


def expected_rows(exp: Experiment, arch) -> float:
    """Rows a step works on: the runtime drops all-zero input rows where that is exact
    (`fused.zero_rows_inert`, batch/exact top-k), so with at_least_zero_active data only
    B (1 - (1 - p)^F) rows are expected to remain (per-feature p_i and groups: data.nonzero_fraction)."""
    from .fused import applies, zero_rows_inert

    dc = exp.decompose
    B = dc.batch
    if not (applies(arch, dc.loss, dc.topk) and zero_rows_inert(arch) and dc.topk.mode in ("batch", "exact")):
        return float(B)
    if exp.data.mode != "at_least_zero_active" or exp.data.file is not None:
        return float(B)
    return float(B * nonzero_fraction(exp.data, n_inputs(arch)))


def step_flops(exp: Experiment, arch=None) -> dict:
    """Analytic FLOP count of one step as this runtime computes it (multiply-add = 2 FLOPs, as in
    notes §10.2), per term and in total, for all replicates.

    With B rows per step (`expected_rows`), C components of rank m (Cm = C m), K active
    (sample, component) pairs (`active_pairs`) and each decomposed matrix d_in x d_out:
      faithfulness   3 x 2 d_in Cm d_out per matrix: the sum A @ B and its two gradient GEMMs
      target_forward 2 B d_in d_out per layer use (+ embedding and unembedding of residual nets)
      attributions   the attributions (the kind's closed form, else the generic reverse mode: per
                     output, a backward pass and 2 B Cm (d_in + d_out) per layer use)
      masked_forward the masked bottleneck on the active pairs only, forward and backward:
                     3 x 2 K m (d_in + d_out) per layer use (a kind's kernels may say otherwise:
                     TMS with few components uses the dense form; residual nets add the unembedding)
      simplicity     3 x 2 Cm (d_in + d_out) per matrix (norms of A's columns and B's rows)
      optimizer      Adam: ~10 FLOPs per parameter (memory-bound in practice)
    Autograd-path steps (e.g. Lp sparsity) do more work than this model counts."""
    exp = resolve(exp)  # (a widened experiment with a replicated file target would not validate)
    if arch is None:
        arch = exp.target
    dc = exp.decompose
    I, C, m = exp.replicates, dc.components, dc.rank
    Cm, K, rows = C * m, active_pairs(exp, arch), expected_rows(exp, arch)
    L = dc.loss
    layers = layers_of(arch)
    shapes = param_shapes(arch)
    out = {}
    if L.faithfulness is not None:
        out["faithfulness"] = sum(3 * 2 * d_in * Cm * d_out for d_in, d_out in shapes.values())
    own = hooks(arch).flops
    kind_terms = own(exp, arch, rows, K) if own is not None else {}
    out["target_forward"] = sum(2 * rows * l.d_in * l.d_out for l in layers) + kind_terms.get("target_forward", 0.0)
    if dc.topk is not None or L.sparsity is not None:
        out["attributions"] = attribution_flops(exp, arch, rows)
    out["masked_forward"] = kind_terms.get("masked_forward", sum(3 * 2 * K * m * (l.d_in + l.d_out) for l in layers))
    if L.simplicity is not None:
        out["simplicity"] = sum(3 * 2 * Cm * (d_in + d_out) for d_in, d_out in shapes.values())
    out["optimizer"] = 10 * sum(d_in * Cm + Cm * d_out for d_in, d_out in shapes.values())
    out = {k: float(v) * I for k, v in out.items()}
    out["total"] = sum(out.values())
    return out


def attribution_flops(exp: Experiment, arch, rows: float | None = None) -> float:
    """FLOPs of one replicate's attributions on `rows` rows: the kind's closed form
    (kinds.ApdKind.flops "attributions"), or the generic reverse mode: a forward and backward pass
    per output (4 B d_in d_out per layer use each) and the per-layer products 2 B Cm (d_in + d_out).
    Attributions from the APD model add its unmasked forward pass 2 B Cm (d_in + d_out) per layer use."""
    dc = exp.decompose
    B = float(dc.batch if rows is None else rows)
    Cm = dc.components * dc.rank
    layers = layers_of(arch)
    own = hooks(arch).flops
    total = own(exp, arch, B, None).get("attributions") if own is not None else None
    if total is None:
        total = sum(2 * B * Cm * (l.d_in + l.d_out) + n_outputs(arch) * 4 * B * l.d_in * l.d_out for l in layers)
    if dc.attribution.kind != "gradient" or dc.attribution.source != "target":
        total += sum(2 * B * Cm * (l.d_in + l.d_out) for l in layers)
    return float(total)


def describe_config(exp: Experiment) -> str:
    """One-line summary of what a step computes."""
    dc = exp.decompose
    L = dc.loss
    parts = [f"B {dc.batch}", f"C {dc.components}", f"m {dc.rank}", f"I {exp.replicates}"]
    if dc.topk is not None:
        parts.append(f"top-k {dc.topk.mode} {dc.topk.value:g}")
    terms = []
    for name in METHODS["apd"].terms():
        v = getattr(L, name)
        if v is not None:
            extra = f" p {L.simplicity_p:g}" if name == "simplicity" else (f" p {L.sparsity_p:g}" if name == "sparsity" else "")
            terms.append(f"{name} {v:g}{extra}")
    parts.append(", ".join(terms))
    a = dc.attribution
    parts.append(f"attribution {a.kind}/{a.source}")
    if dc.unit_norm:
        parts.append("unit_norm")
    parts.append(exp.dtype)
    return "; ".join(parts)



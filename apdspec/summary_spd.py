"""`apdspec check` summary lines and cost estimates of an SPD decomposition (method = spd).

Estimates per optimiser step, all replicates (I), per decomposed matrix l (d_in x d_out), with
R = B (1 - (1 - p)^F) rows when all-zero input rows are dropped (TMS, residual MLPs without input
biases; spd.zero_rows_inert), else R = B:
  trainable parameters  C (d_in + d_out) + C (3 K + 1)     (subcomponents and causal-importance MLPs)
  causal importances    R C K hidden units; ~30 FLOPs each (the MLP, its GELU and the backward
                        contractions; elementwise work, the cost that dominates TMS 40-10)
  masked passes         S (1 + L) passes: 3 x 2 R C (d_in + d_out) per masked matrix (forward + backward)
  faithfulness          3 x 2 C d_in d_out (V U and its two gradients)
  memory                parameters + 2 Adam buffers + the stored activations G, P of the MLPs (2 R C K)
"""
from __future__ import annotations

from runtime import spec as S

CI_FLOPS_PER_UNIT = 30


def rows(exp: S.Experiment, arch) -> float:
    """Expected rows a step works on (all-zero input rows dropped where exact)."""
    from runtime.engine.models import n_inputs
    from runtime.engine.spd import zero_rows_inert

    B = exp.decompose.batch
    if zero_rows_inert(arch) and exp.data.mode == "at_least_zero_active" and not exp.data.synced:
        return B * (1.0 - (1.0 - exp.data.probability) ** n_inputs(arch))
    return float(B)


def spd_costs(exp: S.Experiment, arch):
    """summary.Costs of an SPD step (see the module docstring)."""
    from runtime.engine.spd import spd_layers

    from .summary import Costs

    d = exp.decompose
    C, K, Sm, I = d.components, d.causal_importance.hidden, d.mask_samples, exp.replicates * d.restarts
    layers = spd_layers(arch)
    R = rows(exp, arch)
    params = I * sum(C * (la.d_in + la.d_out) + C * (3 * K + 1) for la in layers)
    width = 4 if exp.dtype == "float32" else 8
    acts = I * R * sum(2 * C * K + 4 * C + la.d_out for la in layers)
    flops = I * sum(CI_FLOPS_PER_UNIT * R * C * K + 2 * R * la.d_in * C
                    + Sm * 2 * 3 * 2 * R * C * (la.d_in + la.d_out) + 3 * 2 * C * la.d_in * la.d_out for la in layers)
    return Costs(int(params), int(width * (3 * params + acts)), int(flops))


def spd_rows(exp: S.Experiment) -> list[tuple[str, str]]:
    """The summary rows that differ from APD's (components, selection, losses)."""
    d = exp.decompose
    ci, L = d.causal_importance, d.loss
    terms = [f"{name} {getattr(L, name):g}" for name in ("faithfulness", "stochastic_recon", "stochastic_recon_layerwise")
             if getattr(L, name) is not None]
    if L.importance_minimality is not None:
        warm = f", warmup {L.importance_warmup:.3g} of the steps" if L.importance_warmup else ""
        terms.append(f"importance_minimality {L.importance_minimality:g} (p = {L.importance_minimality_p:g}{warm})")
    return [
        ("method", "spd: Stochastic Parameter Decomposition (Bushnaq, Braun & Sharkey 2025)"),
        ("components", f"C = {d.components} rank-one subcomponents per decomposed matrix"),
        ("causal imp.", f"one MLP per subcomponent: 1 -> {ci.hidden} {ci.activation} -> 1; leaky hard sigmoids "
                        f"(masks: slope {ci.lower_leak:g} below 0; importance loss: slope {ci.upper_leak:g} above 1); "
                        f"S = {d.mask_samples} mask sample{'' if d.mask_samples == 1 else 's'} per step"),
        ("losses", ", ".join(terms) + f"; D = {L.divergence}"),
    ]

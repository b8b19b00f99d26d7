"""`apdspec check` summary lines and cost estimates of an SPD decomposition (method = spd).

The cost model is the runtime's (`runtime.engine.spd.step_cost`: per replicate and step, with the
expected rows R after all-zero input rows are dropped): trainable parameters C (d_in + d_out) +
C (3 K + 1) per matrix; the causal-importance MLPs' R C K hidden units (~30 FLOPs each, elementwise:
what dominates TMS 40-10); the S (1 + L) masked passes; faithfulness. Memory: parameters, 2 Adam
buffers, and the MLPs' stored G and P (2 R C K per matrix).
"""
from __future__ import annotations

from runtime import spec as S

def spd_costs(exp: S.Experiment, arch):
    """summary.Costs of an SPD step (runtime.engine.spd.step_cost, all replicates and restarts)."""
    from runtime.engine.spd import spd_layers, step_cost

    from .summary import Costs

    d = exp.decompose
    I = exp.replicates * d.restarts
    c = step_cost(exp, arch)
    width = 4 if exp.dtype == "float32" else 8
    # the MLPs' stored G and P, and ~8 (R, C) arrays per matrix (h, gamma, g, masks, noise, ...)
    acts = 2 * c["ci_units"] + 8 * c["rows"] * d.components * len(spd_layers(arch))
    return Costs(int(I * c["params"]), int(width * I * (3 * c["params"] + acts)), int(I * c["total"]))


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
    ] + ([("warmup", f"{d.faithfulness_warmup.steps:,} AdamW steps on faithfulness alone first (lr "
                     f"{d.faithfulness_warmup.lr:g}, weight decay {d.faithfulness_warmup.weight_decay:g}; not in the paper)")]
         if d.faithfulness_warmup is not None else [])

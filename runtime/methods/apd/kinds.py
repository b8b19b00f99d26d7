"""What APD knows of each target kind: its fast paths and conventions, registered by the kind.

    APD_KINDS["tms"] = ApdKind(fused=..., gradient_attributions=..., ...)   # targets/tms/apd_kernels.py

A kind registers nothing and APD still runs it: every field left at its default takes the generic
path (autograd on `train.LossProblem.loss`, the reverse-mode attributions of
`attributions.generic_gradient_attributions`), which the tests compare every fast path against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class ApdKind:
    """One kind's APD hooks; None: the generic path."""

    # fused top-k loss: build(arch, target, C, m, losses, x, tgt, mask, dtype, B_total, variant, pre) -> a
    # loss object with forward / backward (fused.py); `path` names it in `apdspec bench`
    fused: Callable | None = None
    path: str = ""
    # (arch, attribution) -> bool: attributions and fused loss share one precompute (`precompute`)
    shares_precompute: Callable[[Any, Any], bool] | None = None
    precompute: Callable | None = None  # (arch, target, tgt, comps, C, m, x, dtype) -> object with .attr
    # gradient attributions on plain arrays (arch, ref, ref_trace, comps, C) -> (I, B, C) or None
    gradient_attributions: Callable | None = None
    # gradient attributions from the APD model on plain arrays (arch, frozen, comps, x, C) -> attr or None
    apd_gradient_attributions: Callable | None = None
    # autograd-traceable output tangents (arch, ref, ref_trace, comps, C, x) -> (I, C, B, d_L)
    tangents: Callable | None = None
    # the act-recon term's (layer names, activation) for this kind (arch) -> (names, act); None: every
    # decomposed layer's pre-bias output
    act_recon: Callable | None = None
    init: str = "xavier_normal"  # component init: "xavier_normal" or "kaiming_uniform" (notes §3.2)
    # analytic FLOPs of one step's attributions and masked passes for `apdspec bench` (exp, arch, rows) -> dict
    flops: Callable | None = None


GENERIC = ApdKind()
APD_KINDS: dict[str, ApdKind] = {}


def hooks(arch: Any) -> ApdKind:
    """The kind's APD hooks (the generic ones for a kind that registered none)."""
    return APD_KINDS.get(arch.kind, GENERIC)

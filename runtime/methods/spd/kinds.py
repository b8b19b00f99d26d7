"""What SPD knows of each target kind: its fast paths, registered by the kind.

    SPD_KINDS["tms"] = SpdKind(fused=SpdTmsFused, path="spd-fused-tms")   # targets/tms/spd_kernels.py

A kind registers nothing and SPD still runs it: the passes go through the kind's own forward
(model.ChainView) and autograd differentiates the loss around the causal-importance kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class SpdKind:
    """One kind's SPD hooks; None: the generic path."""

    view: Callable | None = None  # (arch, target) -> an exact cheaper model.ChainView, or None
    fused: Callable | None = None  # (SpdLoss) -> an object with value_and_grad (the whole loss by hand)
    path: str = ""  # the fused path's name in `apdspec bench`


GENERIC = SpdKind()
SPD_KINDS: dict[str, SpdKind] = {}


def hooks(arch: Any) -> SpdKind:
    return SPD_KINDS.get(arch.kind, GENERIC)

"""The engine layer's plug-in registries (see runtime/spec/registry.py for the pattern).

    MODELS["tms"] = TmsModel()       # runtime/targets/tms/model.py: forward, init, data, labels
    ENGINES["spd"] = SpdEngine()     # runtime/methods/spd/train.py: trainer, decomposition, costs

Lookups name the kind or method only as data (`arch.kind`, `exp.decompose.method`).
"""
from __future__ import annotations

from typing import Any

from ..spec.registry import UnknownKind

MODELS: dict[str, Any] = {}  # kind -> models.Model
ENGINES: dict[str, Any] = {}  # method -> decompose.MethodEngine


def model_of(arch: Any):
    """The engine model of a target architecture (a kind's dataclass instance)."""
    try:
        return MODELS[arch.kind]
    except KeyError:
        raise UnknownKind(f"no model for target kind {getattr(arch, 'kind', arch)!r} (known: {', '.join(MODELS)}); "
                          "a file target must be loaded first") from None


def engine_of(method: str):
    """The engine of a decomposition method."""
    try:
        return ENGINES[method]
    except KeyError:
        raise UnknownKind(f"unknown decomposition method {method!r} (known: {', '.join(ENGINES)})") from None

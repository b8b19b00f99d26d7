"""apdspec: the `.apd` spec language for Attribution-based Parameter Decomposition experiments.

    import apdspec
    spec = apdspec.load("specs/tms_5_2.apd", overrides=["decompose.steps=200"])
    spec.experiment   # checked, resolved runtime.spec.Experiment
    spec.text         # canonical resolved spec (apdspec.to_apd)

Every user mistake raises `apdspec.SpecError`, whose `diagnostics` carry file, line and column.
Attributes are imported lazily so that `apdspec.cli` can pin BLAS threads before numpy loads.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "loader", "loads": "loader", "LoadedSpec": "loader",
    "SpecError": "errors", "Diagnostic": "errors",
    "to_apd": "unparse", "format_text": "fmt",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .errors import Diagnostic, SpecError
    from .fmt import format_text
    from .loader import LoadedSpec, load, loads
    from .unparse import to_apd


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'apdspec' has no attribute {name!r}")

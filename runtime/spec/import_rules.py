"""How a kind reads a state dict trained elsewhere: the names it accepts and the architecture the
shapes imply (runtime/store/importer.py applies the rules; each kind states its own in its spec).

Every rule raises ValueError naming the entry and what is wrong.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class ImportRules:
    """One kind's import rules. Names may hold "{l}", a layer index."""

    names: dict[str, tuple[str, ...]]  # apdspec name -> accepted source names
    arch: Callable[[dict, dict], Any]  # (renamed arrays in the row layout, options) -> the architecture
    tied: dict[str, tuple[str, str]] = field(default_factory=dict)  # source name -> (apdspec name, why equal)
    zero: dict[str, str] = field(default_factory=dict)  # source name -> why it must be zero (checked, dropped)
    derived: dict[str, tuple[str, Callable[[dict], np.ndarray]]] = field(default_factory=dict)
    # apdspec name -> (what it becomes when the source lacks it, how: arrays -> array)
    function: str = ""  # what the kind computes, for refusing a state dict of another function
    rename: Callable[[str], str | None] | None = None  # source name -> apdspec name, for kinds whose names are
    # free (a network's layers); `names` then only documents the patterns


LINEAR_ENTRY = re.compile(r".+\.(weight|bias)")  # nn.Linear-style state-dict names: fc1.weight, 0.bias


def layer_count(params: dict, prefix: str, suffix: str) -> int:
    """Number of indices 0..n-1 of `prefix{l}suffix` entries; gaps are an error."""
    idx = sorted(int(m.group(1)) for k in params if (m := re.fullmatch(re.escape(prefix) + r"(\d+)" + re.escape(suffix), k)))
    if idx != list(range(len(idx))):
        raise ValueError(f"{prefix}N{suffix} entries have indices {idx}; expected 0..{len(idx) - 1} without gaps")
    return len(idx)


def dims(a: np.ndarray, n: int, name: str) -> tuple[int, ...]:
    """The last n axes of an entry (a leading replicate axis allowed)."""
    if a.ndim not in (n, n + 1):
        raise ValueError(f"{name!r} has shape {a.shape}: expected {n} axes, or {n + 1} with a leading replicate axis")
    return tuple(int(s) for s in a.shape[-n:])


def require(params: dict, name: str, kind: str, rules: ImportRules) -> np.ndarray:
    if name not in params:
        raise ValueError(f"a {kind} target needs {name!r} (source names: {', '.join(rules.names[name])})")
    return params[name]

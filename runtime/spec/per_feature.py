"""Per-feature settings: one number for every feature, written as a number, a list, or a decay form.

A setting such as `data.probability` or `train.importance` gives feature i (i = 0 .. F-1) its own
value v_i. It is written as

    0.05                       a number: what the field's `scalar` rule makes of it (below)
    [0.1, 0.05, 0.02]          a list: v_i is the i-th entry; the list has exactly F entries
    zipf(0.1, exponent = 1)    v_i = first * (i + 1)^(-exponent)        (a power law, Zipf's)
    geometric(1, ratio = 0.9)  v_i = first * ratio^i                    (exponential decay)

A number is a constant (v_i = v) for probabilities and the decay base (v_i = v^i, the TMS
paper's importance I_i = 0.9^i) for importances: the meanings these fields always had.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Union

import numpy as np

from .fields import Form, setting

SHAPES = ("zipf", "geometric")


@dataclass(frozen=True)
class Profile:
    """Per-feature values given by a formula of the feature index i = 0 .. F-1 (module docstring)."""

    FORMS: ClassVar[dict[str, Form]] = {
        "zipf": Form(fixed={"shape": "zipf"}, positional=("first",), keywords={"exponent": "exponent"}, required=1),
        "geometric": Form(fixed={"shape": "geometric"}, positional=("first",), keywords={"ratio": "ratio"},
                          required=1),
    }

    shape: str = setting("zipf", "zipf: first * (i + 1)^(-exponent); geometric: first * ratio^i", choices=SHAPES)
    first: float = setting(1.0, "the value of feature 0")
    exponent: float = setting(1.0, "zipf: the power-law exponent", valid=">= 0")
    ratio: float = setting(0.5, "geometric: the factor from one feature to the next", valid="> 0")


PerFeature = Union[float, tuple, Profile]  # a number, one number per feature, or a Profile


def values(value: PerFeature, n: int, scalar: str = "constant") -> np.ndarray:
    """(n,) float64 values of feature 0 .. n-1. `scalar` says what a number means: "constant"
    (every feature has it) or "power" (feature i has value**i)."""
    i = np.arange(n, dtype=np.float64)
    if isinstance(value, Profile):
        if value.shape == "zipf":
            return value.first * (i + 1.0) ** (-value.exponent)
        if value.shape == "geometric":
            return value.first * value.ratio ** i
        raise ValueError(f"unknown per-feature shape {value.shape!r} (known: {', '.join(SHAPES)})")
    if isinstance(value, (tuple, list)):
        out = np.asarray(value, dtype=np.float64)
        if out.shape != (n,):
            raise ValueError(f"{len(value)} per-feature values for {n} features")
        return out
    if scalar == "power":
        return float(value) ** i
    return np.full(n, float(value))


def is_uniform(value: PerFeature) -> bool:
    """Whether `value` is one number (every feature treated alike, for a constant)."""
    return not isinstance(value, (tuple, list, Profile))


def describe(value: PerFeature) -> str:
    """A short text of a per-feature value for messages and `apdspec check`."""
    if isinstance(value, Profile):
        arg = f"exponent = {value.exponent:g}" if value.shape == "zipf" else f"ratio = {value.ratio:g}"
        return f"{value.shape}({value.first:g}, {arg})"
    if isinstance(value, (tuple, list)):
        shown = ", ".join(f"{v:g}" for v in value[:4])
        return f"[{shown}{', ...' if len(value) > 4 else ''}] ({len(value)} values)"
    return f"{float(value):g}"


def shape_issues(value: PerFeature, n: int, noun: str = "features") -> list[tuple[str, str, bool]]:
    """(message, hint, whether the target's size is involved) of a list whose length is not n, or
    of a Profile out of its range."""
    out = []
    if isinstance(value, (tuple, list)) and len(value) != n:
        out.append((f"{len(value)} value{'' if len(value) == 1 else 's'} for a target with {n} {noun}: a "
                    f"per-feature list has one value per feature",
                    f"give {n} values, or a form such as zipf(0.1, exponent = 1)", True))
    if isinstance(value, Profile):
        if value.shape not in SHAPES:
            out.append((f"unknown per-feature shape {value.shape!r}", "one of: " + ", ".join(SHAPES), False))
        if value.exponent < 0:
            out.append((f"the zipf exponent must be >= 0, got {value.exponent:g}", "", False))
        if value.ratio <= 0:
            out.append((f"the geometric ratio must be > 0, got {value.ratio:g}", "", False))
    return out


def from_json(value: object) -> PerFeature:
    """A per-feature value read back from spec.json / target metadata (a dict is a Profile)."""
    if isinstance(value, dict):
        names = {f.name for f in dataclasses.fields(Profile)}
        return Profile(**{k: v for k, v in value.items() if k in names})
    if isinstance(value, list):
        return tuple(float(v) for v in value)
    return float(value)

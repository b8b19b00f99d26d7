"""Field metadata: every spec field states its meaning, range and paper symbol once, beside its default.

    features: int = setting(5, "input features", paper="F (m1)", valid="> 0")

`apdspec` generates its schema (and docs/language.md) from this metadata, so a new target kind or
method adds language keys by declaring its dataclass fields; nothing is restated elsewhere.

Metadata keys (all optional):
  doc     what the field means              paper   the paper's symbol / equation
  valid   the range validate() enforces     choices the values of a string field (an enum)
  forms   call forms of the field's value, name -> Form (e.g. loss.simplicity: schatten(0.7, p = 1))
  max     a sanity bound of a number        why     the reason for `max`
  style   how a (low, high) range is written: "list" ([0, 1]) or "uniform" (uniform(0, 1))
  names   a list of registry names: "metric" or "plot"      key   a name from a registry: "paper"
  method  the method that reads it, for fields shared by a method-independent class (rarely needed)

A dataclass whose value can be written as a call (`adam(lr = 3e-2)`, `batch(0.211)`) lists those
forms in its class attribute FORMS.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Form:
    """A call such as adam(lr = 3e-2) or schatten(0.7, p = 1): fixed settings plus arguments.

    Field names are relative to the object the form builds (object forms, a class's FORMS), or to
    the object that holds the field (field forms, which set sibling fields, e.g. simplicity and
    simplicity_p)."""

    fixed: dict[str, Any] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    keywords: dict[str, str] = field(default_factory=dict)  # argument name -> field name
    required: int = 0  # leading positional arguments that must be given


def setting(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = dataclasses.MISSING,
            init: bool = True, **meta: Any) -> Any:
    """A dataclass field with its documentation (module docstring for the keys of `meta`)."""
    return field(default=default, default_factory=factory, init=init, metadata={"doc": doc, **meta})


def meta(f: dataclasses.Field) -> dict:
    """The metadata of a field (empty for a field declared without `setting`)."""
    return dict(f.metadata)


def simple_forms(name_field: str, names: tuple[str, ...], keywords: dict[str, str] | None = None,
                 positional: tuple[str, ...] = ()) -> dict[str, Form]:
    """One form per name that fixes `name_field` to it, e.g. adam(...) / adamw(...)."""
    return {n: Form(fixed={name_field: n}, keywords=dict(keywords or {}), positional=positional) for n in names}

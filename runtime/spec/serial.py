"""Plain-data round trip of an experiment (spec.json, run summaries): dataclasses <-> JSON-able dicts.

Which class a nested dict becomes is read off the field's type; a target dict names its class by
"kind" and a decompose dict by "method" (the registries). Keys a class does not have are ignored,
so spec.json files written before a field moved between classes still load.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import typing
from typing import Any

from .experiment import Decompose, Experiment, FileTarget, Report, Sweep, SweepAxis, Target
from .registry import DEFAULT_METHOD, kind_spec, method_spec


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> JSON-able dict (tuples become lists; target carries its kind)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def target_class(kind: str) -> type:
    return FileTarget if kind == "file" else kind_spec(kind).cls


def target_from_dict(d: dict) -> Target:
    d = dict(d)
    return _build(target_class(d.pop("kind")), d)


def decompose_from_dict(d: dict) -> Decompose:
    return _build(method_spec(d.get("method", DEFAULT_METHOD)).cls, d)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def nested_class(cls: type, name: str) -> type | None:
    """The dataclass a field of `cls` holds (through `X | None`), or None for a plain value. What
    from_dict builds, and what runtime.pipeline.sweep brings back (with defaults) when a sweep sets
    a field of an object that is None."""
    hint = _hints(cls).get(name)
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            return t
    return None


def _field_meta(cls: type, name: str) -> dict:
    f = cls.__dataclass_fields__.get(name) if dataclasses.is_dataclass(cls) else None
    return dict(f.metadata) if f is not None else {}


def _build(cls: type, d: dict) -> Any:
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {k: _coerce(cls, k, v) for k, v in d.items() if k in init}
    return cls(**kwargs)


def _coerce(cls: type, name: str, v: Any) -> Any:
    if v is None:
        return None
    if name == "target" and issubclass(cls, Experiment):
        return target_from_dict(v)
    if name == "decompose" and issubclass(cls, Experiment):
        return decompose_from_dict(v)
    if issubclass(cls, Report) and name == "expect":
        from .experiment import Expectation

        return tuple(_build(Expectation, e) for e in v)
    if issubclass(cls, Sweep) and name == "axes":
        return tuple(SweepAxis(a["path"], tuple(a["values"]), a.get("group")) for a in v)
    if isinstance(v, list) and _field_meta(cls, name).get("items"):
        from .layers import as_items

        return as_items(v)
    sub = nested_class(cls, name)
    if sub is not None and isinstance(v, dict):
        return _build(sub, v)
    if isinstance(v, list):
        return tuple(tuple(x) if isinstance(x, list) else x for x in v)
    return v


def field_value(cls: type, name: str, v: Any) -> Any:
    """The value field `name` of `cls` holds for its JSON form `v` (a dict becomes its dataclass)."""
    return _coerce(cls, name, v)


def from_dict(d: dict) -> Experiment:
    return _build(Experiment, d)


def to_json(exp: Experiment) -> str:
    return json.dumps(to_dict(exp), indent=2)

"""The settings a spec has accumulated: runtime field path -> (value, span that set it).

Applying statements in order to one `State` is what makes composition simple: a `use`d file's state
is the starting point, and later files and command-line overrides just set more paths.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime import spec as S

from . import ast as A
from .values import Env


class Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


RESET = Marker("RESET")  # the object was replaced by a call form: start from its class defaults
NONE = Marker("NONE")  # an optional object set to none


@dataclass(frozen=True)
class TargetKind:
    kind: str


@dataclass(frozen=True)
class Setting:
    value: Any
    span: A.Span


@dataclass
class State:
    values: dict[str, Setting] = field(default_factory=dict)  # runtime path -> setting
    blocks: dict[str, A.Span] = field(default_factory=dict)  # runtime path -> last block header
    expects: list[tuple[S.Expectation, A.Span]] = field(default_factory=list)
    axes: dict[str, tuple[S.SweepAxis, A.Span]] = field(default_factory=dict)  # runtime path -> axis, its path's span
    axis_values: dict[str, tuple[A.Span, ...]] = field(default_factory=dict)  # runtime path -> span of each value
    groups: int = 0
    env: Env = field(default_factory=Env)
    name: tuple[str, A.Span] | None = None
    header: A.Span | None = None
    broken: bool = False  # a file could not be read or parsed: skip whole-spec checks
    target_failed: bool = False  # a target block was reported already: no "missing target" too
    parts: dict[str, A.Span] = field(default_factory=dict)  # "target.network[2].tied" -> span inside a value

    def copy(self) -> "State":
        return State(dict(self.values), dict(self.blocks), list(self.expects), dict(self.axes),
                     dict(self.axis_values), self.groups, Env(dict(self.env.consts)), self.name, self.header,
                     self.broken, self.target_failed, dict(self.parts))

    @property
    def kind(self) -> str | None:
        s = self.values.get("target")
        return s.value.kind if s is not None else None

    def set(self, path: str, value: Any, span: A.Span) -> None:
        for k in [k for k in self.values if k.startswith(path + ".")]:
            del self.values[k]
        for k in [k for k in self.parts if k.startswith(path + "[") or k.startswith(path + ".")]:
            del self.parts[k]
        for p in prefixes(path)[1:]:  # setting a field of a none object brings the object back
            s = self.values.get(p)
            if s is not None and s.value is NONE:
                self.values[p] = Setting(RESET, s.span)
        self.values[path] = Setting(value, span)


def prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def join_path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def lang_path(rt: str) -> str:
    """Runtime field path -> the path a user writes (train lives inside the target block)."""
    if rt == "train" or rt.startswith("train."):
        return "target." + rt
    return rt

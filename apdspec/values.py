"""Value kinds: how a syntax-tree value becomes a typed Python value for one field.

Each kind's `coerce(node, env)` returns the value or raises `Bad` located at the offending node.
Messages may contain "{key}", which the checker replaces with the field's name.
Constants (`$name`, or a bare name in a numeric position) are substituted from `env`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from . import ast as A
from .errors import did_you_mean

INT_LIMIT = 2**63


class Bad(Exception):
    """A value that does not fit its field. `span` None means: already reported elsewhere."""

    def __init__(self, span: A.Span | None, message: str, hint: str = ""):
        super().__init__(message)
        self.span, self.message, self.hint = span, message, hint


@dataclass
class Const:
    node: A.Value
    span: A.Span  # the `let` statement


@dataclass
class Env:
    consts: dict[str, Const] = field(default_factory=dict)

    def deref(self, node: A.Value, numeric: bool = False) -> A.Value:
        """Follow `$name` (and, where a number is expected, a bare name) to the constant's value."""
        seen = 0
        while True:
            if isinstance(node, A.Ref):
                if node.name not in self.consts:
                    near = did_you_mean(node.name, self.consts)
                    raise Bad(node.span, f"undefined constant '${node.name}'",
                              f"did you mean '${near}'?" if near else "define it first: let NAME = value")
                node = self.consts[node.name].node
            elif numeric and isinstance(node, A.Ident) and node.name in self.consts:
                node = self.consts[node.name].node
            else:
                return node
            seen += 1
            if seen > 100:  # cannot happen: constants are defined before use
                raise Bad(None, "constant cycle")


def describe(node: A.Value) -> str:
    if isinstance(node, (A.Number, A.String)):
        return node.text
    if isinstance(node, A.Ident):
        return f"'{node.name}'"
    if isinstance(node, A.Ref):
        return f"'${node.name}'"
    if isinstance(node, A.ListValue):
        return "a list"
    if isinstance(node, A.Call):
        return f"{node.name}(...)"
    return "an expression"


def number(node: A.Value, env: Env) -> int | float:
    """Evaluate a numeric expression (literals, constants, + - * /, unary minus, `pi`)."""
    if isinstance(node, A.Ref) or (isinstance(node, A.Ident) and node.name in env.consts):
        target = env.deref(node, numeric=True)
        try:
            return number(target, env)
        except Bad as e:
            if e.span is None:
                raise
            raise Bad(node.span, e.message, e.hint or f"the constant is defined as {describe(target)}") from None
    if isinstance(node, A.Number):
        if node.value is None:
            raise Bad(None, "malformed number")
        return node.value
    if isinstance(node, A.Ident) and node.name == "pi":
        return math.pi
    if isinstance(node, A.Neg):
        return -number(node.operand, env)
    if isinstance(node, A.BinOp):
        a, b = number(node.left, env), number(node.right, env)
        if node.op == "/":
            if b == 0:
                raise Bad(node.right.span, "division by zero")
            out = a / b
        else:
            out = a + b if node.op == "+" else a - b if node.op == "-" else a * b
        if isinstance(out, float) and not math.isfinite(out):
            raise Bad(node.span, "number is too large")
        if isinstance(out, int) and abs(out) >= INT_LIMIT:
            raise Bad(node.span, "integer is too large")
        return out
    raise Bad(node.span, f"expected a number for '{{key}}', got {describe(node)}")


class Kind:
    """Base class of value kinds; `what` is used in messages ("an integer")."""

    what = "a value"

    def coerce(self, node: A.Value, env: Env) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class Int(Kind):
    what = "an integer"

    def __init__(self, maximum: int | None = None):
        self.maximum = maximum  # a sanity bound where a huge value would exhaust memory before any check

    def coerce(self, node, env):
        v = number(node, env)
        if isinstance(v, float):
            if not v.is_integer():
                raise Bad(node.span, f"expected an integer for '{{key}}', got {v:g}",
                          "integer fields are never rounded")
            v = int(v)
        if abs(v) >= INT_LIMIT:
            raise Bad(node.span, "integer is too large")
        if self.maximum is not None and v > self.maximum:
            raise Bad(node.span, f"'{{key}}' must be <= {self.maximum:,}, got {v:,}")
        return v


class Float(Kind):
    what = "a number"

    def coerce(self, node, env):
        v = number(node, env)
        try:
            out = float(v)
        except OverflowError:
            raise Bad(node.span, "number is too large") from None
        if not math.isfinite(out):
            raise Bad(node.span, "number is too large")
        return out


class Bool(Kind):
    what = "true or false"

    def coerce(self, node, env):
        node = env.deref(node)
        if isinstance(node, A.Ident) and node.name in ("true", "false"):
            return node.name == "true"
        raise Bad(node.span, f"expected true or false for '{{key}}', got {describe(node)}")


class Enum(Kind):
    def __init__(self, *choices: str):
        self.choices = choices
        self.what = "one of " + ", ".join(choices)

    def coerce(self, node, env):
        node = env.deref(node)
        if isinstance(node, A.Ident) and node.name in self.choices:
            return node.name
        if isinstance(node, A.Ident):
            near = did_you_mean(node.name, self.choices)
            raise Bad(node.span, f"unknown value '{node.name}' for '{{key}}'",
                      f"did you mean '{near}'?" if near else "one of: " + ", ".join(self.choices))
        raise Bad(node.span, f"expected one of {', '.join(self.choices)} for '{{key}}', got {describe(node)}")


class Str(Kind):
    what = "a string"

    def coerce(self, node, env):
        node = env.deref(node)
        if isinstance(node, A.String):
            return node.value
        raise Bad(node.span, f"expected a string in double quotes for '{{key}}', got {describe(node)}")


class Optional(Kind):
    """`none` or the inner kind."""

    def __init__(self, inner: Kind, none_means: str = "off"):
        self.inner = inner
        self.none_means = none_means
        self.what = f"{inner.what} or none"

    def coerce(self, node, env):
        target = env.deref(node)
        if isinstance(target, A.Ident) and target.name == "none":
            return None
        return self.inner.coerce(node, env)


class Range(Kind):
    """A (low, high) pair: `[0, 5]`, or `uniform(0, 5)` where a distribution reads better."""

    what = "a range [low, high]"

    def __init__(self, style: str = "list"):
        self.style = style  # how unparse writes it: "list" or "uniform"

    def coerce(self, node, env):
        node = env.deref(node)
        if isinstance(node, A.ListValue):
            items = node.items
        elif isinstance(node, A.Call) and node.name == "uniform" and all(a.name is None for a in node.args):
            items = tuple(a.value for a in node.args)
        else:
            raise Bad(node.span, f"expected a range [low, high] or uniform(low, high) for '{{key}}', got {describe(node)}")
        if len(items) != 2:
            raise Bad(node.span, f"a range has two numbers, got {len(items)}", "write [low, high]")
        lo, hi = (Float().coerce(v, env) for v in items)
        return (lo, hi)


class Groups(Kind):
    """Lists of integer indices, e.g. [[0, 1], [2, 3, 4]]."""

    what = "a list of index lists"

    def coerce(self, node, env):
        node = env.deref(node)
        if not isinstance(node, A.ListValue):
            raise Bad(node.span, f"expected a list of index lists such as [[0, 1], [2, 3]] for '{{key}}', got {describe(node)}")
        groups = []
        for g in node.items:
            g = env.deref(g)
            if not isinstance(g, A.ListValue):
                raise Bad(g.span, f"expected a list of feature indices, got {describe(g)}", "write e.g. [0, 1]")
            groups.append(tuple(Int().coerce(i, env) for i in g.items))
        return tuple(groups)


class Names(Kind):
    """A list of names from a registry (metrics, plots); `all` means every applicable one (None)."""

    def __init__(self, registry: Callable[[], Iterable[str]], noun: str):
        self.registry = registry
        self.noun = noun
        self.what = f"a list of {noun}s, or all"

    def coerce(self, node, env):
        node = env.deref(node)
        if isinstance(node, A.Ident) and node.name == "all":
            return None
        if not isinstance(node, A.ListValue):
            raise Bad(node.span, f"expected a list of {self.noun}s such as [a, b], or all, for '{{key}}', got {describe(node)}")
        known = tuple(self.registry())
        out = []
        for item in node.items:
            item = env.deref(item)
            if not isinstance(item, A.Ident):
                raise Bad(item.span, f"expected a {self.noun} name, got {describe(item)}")
            if item.name not in known:
                near = did_you_mean(item.name, known)
                raise Bad(item.span, f"unknown {self.noun} '{item.name}'",
                          f"did you mean '{near}'?" if near else "known: " + ", ".join(known))
            out.append(item.name)
        return tuple(out)


class Key(Kind):
    """A key given as a bare name or a string (e.g. report.paper), checked against `registry`
    when it returns the known keys (None: no registry available)."""

    what = "a name"

    def __init__(self, registry: Callable[[], Iterable[str] | None] = lambda: None, noun: str = "key"):
        self.registry = registry
        self.noun = noun

    def coerce(self, node, env):
        node = env.deref(node)
        if isinstance(node, A.Ident):
            value = node.name
        elif isinstance(node, A.String):
            value = node.value
        else:
            raise Bad(node.span, f"expected a name for '{{key}}', got {describe(node)}")
        known = self.registry()
        if known is not None and value not in known:
            known = tuple(known)
            near = did_you_mean(value, known)
            raise Bad(node.span, f"unknown {self.noun} '{value}'",
                      f"did you mean '{near}'?" if near else "known: " + ", ".join(known) + ", or none")
        return value

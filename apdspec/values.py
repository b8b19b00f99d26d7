"""Value kinds: how a syntax-tree value becomes a typed Python value for one field.

Each kind's `coerce(node, env)` returns the value or raises `Bad` located at the offending node.
Messages may contain "{key}", which the checker replaces with the field's name.
Constants (`$name`, or a bare name in a numeric position) are substituted from `env`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from runtime.spec.per_feature import Profile

from . import ast as A
from .errors import did_you_mean

INT_LIMIT = 2**63
SWEEP_FUNCTIONS = ("grid", "seeds", "range", "logspace")  # sweep-axis generators (sweeps.py)


class Bad(Exception):
    """A value that does not fit its field. `span` None means: already reported elsewhere."""

    def __init__(self, span: A.Span | None, message: str, hint: str = ""):
        super().__init__(message)
        self.span, self.message, self.hint = span, message, hint


@dataclass
class Const:
    node: A.Value
    span: A.Span  # the `let` statement
    target: A.Value | None = None  # `node` with `$name` followed (never a Ref); set by Env.define
    numeric: Any = None  # its value as a number, or the Bad raised evaluating it; set by Env.define


@dataclass
class Env:
    consts: dict[str, Const] = field(default_factory=dict)

    def define(self, name: str, node: A.Value, span: A.Span) -> None:
        """Add a constant, resolved once against the constants before it: a chain of `let`s then
        costs one step per use (not one per link, nor 2^n for `let b = $a + $a` doubling), and no
        use recurses deeper than one definition's own syntax tree."""
        c = Const(node, span)
        try:
            c.target = self.deref(node)
        except Bad:
            c.target = node
        try:
            c.numeric = number(node, self)
        except Bad as e:
            c.numeric = e
        self.consts[name] = c

    def deref(self, node: A.Value) -> A.Value:
        """Follow `$name` to the constant's value."""
        if isinstance(node, A.Ref):
            c = self.consts.get(node.name)
            if c is None:
                near = did_you_mean(node.name, self.consts)
                raise Bad(node.span, f"undefined constant '${node.name}'",
                          f"did you mean '${near}'?" if near else "define it first: let NAME = value")
            return c.target if c.target is not None else self.deref(c.node)
        return node


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


def _constant(node: A.Ref | A.Ident, env: Env) -> int | float:
    """The numeric value of a constant used as `$name` (or by its bare name where a number is expected)."""
    c = env.consts.get(node.name)
    if c is None:
        env.deref(node)  # raises: undefined
    value = c.numeric
    if value is None:  # defined without Env.define (cannot happen for parsed specs)
        try:
            value = number(c.node, env)
        except Bad as e:
            value = e
    if isinstance(value, Bad):
        if value.span is None:
            raise value
        target = c.target if c.target is not None else c.node
        raise Bad(node.span, value.message, value.hint or f"the constant is defined as {describe(target)}")
    return value


def number(node: A.Value, env: Env) -> int | float:
    """Evaluate a numeric expression (literals, constants, + - * /, unary minus, `pi`)."""
    if isinstance(node, A.Ref) or (isinstance(node, A.Ident) and node.name in env.consts):
        return _constant(node, env)
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
        if node.op == "/" and b == 0:
            raise Bad(node.right.span, "division by zero")
        try:
            out = a / b if node.op == "/" else a + b if node.op == "+" else a - b if node.op == "-" else a * b
        except OverflowError:  # an integer beyond every float met a float (or a division)
            raise Bad(node.span, "number is too large") from None
        if isinstance(out, float) and not math.isfinite(out):
            raise Bad(node.span, "number is too large")
        if isinstance(out, int) and abs(out) >= INT_LIMIT:
            raise Bad(node.span, "integer is too large")
        return out
    many = isinstance(node, A.ListValue) or (isinstance(node, A.Call) and node.name in SWEEP_FUNCTIONS)
    hint = ("a field holds one value; to run one experiment per value, sweep it: a line in the sweep block "
            "(sweep { PATH = [...] }) or -s 'PATH=grid(...)' on the command line" if many else "")
    raise Bad(node.span, f"expected a number for '{{key}}', got {describe(node)}", hint)


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

    def __init__(self, maximum: float | None = None, why: str = ""):
        self.maximum = maximum  # a sanity bound where a huge value would overflow the runtime's arithmetic
        self.why = why

    def coerce(self, node, env):
        v = number(node, env)
        try:
            out = float(v)
        except OverflowError:
            raise Bad(node.span, "number is too large") from None
        if not math.isfinite(out):
            raise Bad(node.span, "number is too large")
        if self.maximum is not None and abs(out) > self.maximum:
            raise Bad(node.span, f"'{{key}}' must be at most {self.maximum:g} in size, got {out:g}", self.why)
        return out


class Bool(Kind):
    what = "true or false"

    def coerce(self, node, env):
        node = env.deref(node)
        if isinstance(node, A.Ident) and node.name in ("true", "false"):
            return node.name == "true"
        near = did_you_mean(node.name, ("true", "false")) if isinstance(node, A.Ident) else None
        raise Bad(node.span, f"expected true or false for '{{key}}', got {describe(node)}",
                  f"did you mean '{near}'?" if near else "")


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


class Path(Str):
    """A file path in double quotes, relative to the directory of the file that writes it (the
    current directory on the command line); stored absolute."""

    what = "a path"

    def coerce(self, node, env):
        text = super().coerce(node, env)
        if not text:
            raise Bad(env.deref(node).span, "the path is empty")
        where = env.deref(node).span.file
        if not os.path.isabs(text):
            here = os.path.dirname(os.path.abspath(where)) if where and not where.startswith("<") else os.getcwd()
            text = os.path.normpath(os.path.join(here, text))
        if os.path.exists(text) and not (os.path.isfile(text) or os.path.isdir(text)):
            # a device or a pipe: reading it could block forever (a directory the runtime reports)
            raise Bad(env.deref(node).span, f"{text} is not a regular file")
        return text


class PerFeature(Kind):
    """One number per feature (runtime/spec/per_feature.py): a number, a list of numbers, or a
    decay form zipf(first, exponent = e) / geometric(first, ratio = r)."""

    FORMS = Profile.FORMS
    what = "a number, a list of numbers, or " + " / ".join(f"{n}(...)" for n in Profile.FORMS)

    def __init__(self, scalar: str = "constant"):
        self.scalar = scalar  # what a number means: "constant" (every feature) or "power" (v^i)

    def coerce(self, node, env):
        target = env.deref(node)
        if isinstance(target, A.ListValue):
            if not target.items:
                raise Bad(target.span, "a per-feature list needs one value per feature, got none")
            return tuple(Float().coerce(v, env) for v in target.items)
        if isinstance(target, A.Call) and target.name not in SWEEP_FUNCTIONS:
            return self.profile(target, env)
        return Float().coerce(node, env)

    def profile(self, call: A.Call, env: Env) -> Profile:
        form = self.FORMS.get(call.name)
        if form is None:
            from .errors import did_you_mean

            near = did_you_mean(call.name, self.FORMS)
            raise Bad(call.name_span, f"unknown per-feature form '{call.name}' for '{{key}}'",
                      f"did you mean '{near}'?" if near else "write a number, a list [p0, p1, ...], "
                      "zipf(first, exponent = 1) or geometric(first, ratio = 0.9)")
        usage = f"write {call.name}({', '.join(list(form.positional) + [k + ' = ...' for k in form.keywords])})"
        kwargs = dict(form.fixed)
        positional = [a for a in call.args if a.name is None]
        if len(positional) > len(form.positional):
            raise Bad(positional[len(form.positional)].span, f"too many arguments to {call.name}()", usage)
        if len(positional) < form.required:
            raise Bad(call.span, f"{call.name}() needs {form.required} argument{'' if form.required == 1 else 's'}",
                      usage)
        for name, arg in zip(form.positional, positional):
            kwargs[name] = Float().coerce(arg.value, env)
        for arg in call.args:
            if arg.name is None:
                continue
            if arg.name not in form.keywords:
                raise Bad(arg.name_span, f"unknown argument '{arg.name}' to {call.name}()", usage)
            if form.keywords[arg.name] in kwargs:
                raise Bad(arg.span, f"argument '{arg.name}' given twice to {call.name}()")
            kwargs[form.keywords[arg.name]] = Float().coerce(arg.value, env)
        return Profile(**kwargs)


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
    """A list of names from a registry (metrics, plots); `all` means every applicable one (None).
    Without a registry (`registry` returns None) the names are free: bare names or strings (the
    layers of a network, checked by the runtime against it), and `all` only where `all_ok`."""

    def __init__(self, registry: Callable[[], Iterable[str] | None], noun: str, all_ok: bool = True):
        self.registry = registry
        self.noun = noun
        self.all_ok = all_ok
        self.what = f"a list of {noun}s" + (", or all" if all_ok else "")

    def coerce(self, node, env):
        node = env.deref(node)
        if isinstance(node, A.Ident) and node.name == "all" and self.all_ok:
            return None
        if not isinstance(node, A.ListValue):
            alt = ", or all," if self.all_ok else ""
            raise Bad(node.span, f"expected a list of {self.noun}s such as [a, b]{alt} for '{{key}}', got {describe(node)}")
        known = self.registry()
        if known is None:
            return tuple(Key().coerce(item, env) for item in node.items)
        known = tuple(known)
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


class Items(Kind):
    """A list of calls, each building one of several dataclasses by its call forms (the layers of a
    network: [linear(fc1, 8), relu, linear(fc2)]); a bare name is a call without arguments.
    `forms`: call name -> (class, Form, field name -> Kind of that field)."""

    def __init__(self, forms: dict[str, tuple[type, Any, dict[str, Kind]]], noun: str = "item", example: str = ""):
        self.forms = forms
        self.noun = noun
        self.example = example
        self.what = f"a list of {noun}s"

    def _call(self, item: A.Value, env: Env) -> A.Call:
        item = env.deref(item)
        if isinstance(item, A.Ident):
            item = A.Call(item.span, item.name, item.span, ())
        if not isinstance(item, A.Call):
            raise Bad(item.span, f"expected a {self.noun} such as {self.example}, got {describe(item)}")
        if item.name not in self.forms:
            near = did_you_mean(item.name, self.forms)
            raise Bad(item.name_span, f"unknown {self.noun} '{item.name}'",
                      f"did you mean '{near}'?" if near else "one of: " + self.names())
        return item

    def names(self) -> str:
        return ", ".join(f"{n}(...)" if (f.positional or f.keywords) else n for n, (_, f, _) in self.forms.items())

    def coerce(self, node, env):
        node = env.deref(node)
        if not isinstance(node, A.ListValue):
            raise Bad(node.span, f"expected a list of {self.noun}s such as [{self.example}] for '{{key}}', "
                                 f"got {describe(node)}")
        return tuple(self.build(self._call(item, env), env) for item in node.items)

    def build(self, call: A.Call, env: Env) -> Any:
        cls, form, kinds = self.forms[call.name]
        values = dict(form.fixed)
        given: set[str] = set()
        n_pos = 0
        for arg in call.args:
            if arg.name is None:
                if n_pos >= len(form.positional):
                    n = len(form.positional)
                    raise Bad(arg.span, f"too many arguments to {call.name}(): it takes {n} positional argument"
                                        f"{'' if n == 1 else 's'}", self.usage(call.name))
                fname = form.positional[n_pos]
                n_pos += 1
            else:
                if arg.name not in form.keywords:
                    near = did_you_mean(arg.name, form.keywords)
                    raise Bad(arg.name_span, f"unknown argument '{arg.name}' to {call.name}()",
                              f"did you mean '{near}'?" if near else self.usage(call.name))
                fname = form.keywords[arg.name]
            if fname in given:
                raise Bad(arg.span, f"argument '{arg.name or fname}' given twice to {call.name}()")
            given.add(fname)
            try:
                values[fname] = kinds[fname].coerce(arg.value, env)
            except Bad as e:
                if e.span is None:
                    raise
                raise Bad(e.span, e.message.replace("{key}", fname), e.hint) from None
        if n_pos < form.required:
            raise Bad(call.span, f"{call.name}() needs {form.required} argument{'' if form.required == 1 else 's'}",
                      self.usage(call.name))
        return cls(**values)

    def usage(self, name: str) -> str:
        _, form, _ = self.forms[name]
        parts = list(form.positional) + [f"{k} = ..." for k in form.keywords if k not in form.positional]
        return f"write {name}({', '.join(parts)})"

    def parts(self, node: A.Value, env: Env, prefix: str) -> dict[str, A.Span]:
        """Runtime sub-path -> span: `prefix[i]` of every item and `prefix[i].field` of every
        argument (recursively into nested lists), so that a problem the runtime finds with one
        layer points at it."""
        out: dict[str, A.Span] = {}
        node = env.deref(node)
        if not isinstance(node, A.ListValue):
            return out
        for i, item in enumerate(node.items):
            try:
                call = self._call(item, env)
            except Bad:
                continue
            where = f"{prefix}[{i}]"
            out[where] = call.span
            _, form, kinds = self.forms[call.name]
            n_pos = 0
            for arg in call.args:
                if arg.name is None:
                    if n_pos >= len(form.positional):
                        continue
                    fname, n_pos = form.positional[n_pos], n_pos + 1
                else:
                    fname = form.keywords.get(arg.name)
                    if fname is None:
                        continue
                out[f"{where}.{fname}"] = arg.value.span
                inner = kinds.get(fname)
                if isinstance(inner, Items):
                    out.update(inner.parts(arg.value, env, f"{where}.{fname}"))
        return out


def value_parts(kind: Kind, node: A.Value, env: Env, prefix: str) -> dict[str, A.Span]:
    """The spans of a list value's items (and of a layer's arguments) by runtime sub-path."""
    if isinstance(kind, Optional):
        kind = kind.inner
    if isinstance(kind, Items):
        return kind.parts(node, env, prefix)
    try:
        node = env.deref(node)
    except Bad:
        return {}
    if isinstance(node, A.ListValue) and isinstance(kind, (Names, Groups)):
        return {f"{prefix}[{i}]": item.span for i, item in enumerate(node.items)}
    return {}


class Ints(Kind):
    """A list of positive-or-not integers, e.g. the hidden widths [50] or [200, 200]."""

    what = "a list of integers"

    def coerce(self, node, env):
        node = env.deref(node)
        if not isinstance(node, A.ListValue):
            raise Bad(node.span, f"expected a list of integers such as [50] for '{{key}}', got {describe(node)}")
        return tuple(Int().coerce(v, env) for v in node.items)


SCHEDULE_FORMS = ("linear", "cosine", "knots")  # the schedule calls (runtime/spec/knots.py)


class Scheduled(Kind):
    """A coefficient: a number, or a schedule over training (normalised time t = step / (steps - 1)):
    linear(a, b) / cosine(a, b) from a at the start to b at the end, or knots([t, v], [t, v, rule],
    ...) with rule linear (the default), cosine or hold for the segment ending at that knot."""

    def __init__(self, inner: Kind):
        self.inner = inner
        self.what = f"{inner.what} or a schedule (linear(a, b), cosine(a, b), knots([t, v], ...))"

    def coerce(self, node, env):
        from runtime.spec.knots import INTERPOLATIONS, Knots

        target = env.deref(node)
        if not (isinstance(target, A.Call) and target.name in SCHEDULE_FORMS):
            if isinstance(target, A.Call):
                near = did_you_mean(target.name, SCHEDULE_FORMS)
                raise Bad(target.name_span, f"unknown schedule '{target.name}' for '{{key}}'",
                          f"did you mean '{near}'?" if near else "write a number, linear(a, b), cosine(a, b) or "
                          "knots([t, v], [t, v, rule], ...)")
            return self.inner.coerce(node, env)
        if any(a.name is not None for a in target.args):
            arg = next(a for a in target.args if a.name is not None)
            raise Bad(arg.span, f"{target.name}() takes no keyword arguments")
        values = [a.value for a in target.args]
        if target.name in ("linear", "cosine"):
            if len(values) != 2:
                raise Bad(target.span, f"{target.name}() takes two numbers: the value at the start and at the end",
                          f"write e.g. {target.name}(1, 0.01)")
            a, b = (self.inner.coerce(v, env) for v in values)
            return Knots(((0.0, a), (1.0, b)), (target.name,))
        if not values:
            raise Bad(target.span, "knots() needs at least one knot [t, value]", "write e.g. knots([0, 1e-3], [1, 1e-4])")
        knots, interp = [], []
        for i, v in enumerate(values):
            v = env.deref(v)
            if not isinstance(v, A.ListValue) or not 2 <= len(v.items) <= 3 or (i == 0 and len(v.items) == 3):
                raise Bad(v.span, "a knot is [t, value] (the first) or [t, value, rule] with rule one of "
                          + ", ".join(INTERPOLATIONS), "t is a fraction of training in [0, 1], e.g. [50%, 1e-3, cosine]")
            t = Float().coerce(v.items[0], env)
            if not 0 <= t <= 1:
                raise Bad(v.items[0].span, f"a knot's t is a fraction of training in [0, 1], got {t:g}", "write e.g. 50%")
            if knots and t < knots[-1][0]:
                raise Bad(v.items[0].span, f"knots must be in order of t: {t:g} comes after {knots[-1][0]:g}")
            if i:
                interp.append(Enum(*INTERPOLATIONS).coerce(v.items[2], env) if len(v.items) == 3 else "linear")
            knots.append((t, self.inner.coerce(v.items[1], env)))
        return Knots(tuple(knots), tuple(interp))

"""Experiment -> canonical, self-contained `.apd` text (`to_apd`).

Every field is written explicitly, so the text records exactly what ran (it is the run directory's
`spec.apd`), and `loads(to_apd(e)).experiment == e` for any resolved experiment `e`.
Objects with call forms are written as calls (adam(lr = 0.03)); arguments left out have the
defaults the call starts from. When no call can express an object, a block is written.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from runtime import spec as S
from runtime.spec.knots import Knots

from . import ast as A
from .fmt import render_file
from .parser import parse_number
from .schema import EXPERIMENT, TARGETS, TRAIN, Leaf, Obj
from .state import lang_path
from .values import Bool, Enum, Float, Groups, Int, Ints, Items, Key, Kind, Names, Optional, PerFeature, Range, Scheduled, Str

W = A.NOWHERE
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_VALUES = {"none", "true", "false", "all", "pi"}


def format_int(n: int) -> str:
    return f"{n:_}" if abs(n) >= 10_000 else str(n)


def format_number(x: float, percent: bool = False) -> str:
    """The shortest text that reads back as exactly `x` (integral floats without '.0')."""
    if percent and x != 0:
        text = f"{round(x * 100, 10):g}%"
        if "e" not in text and parse_number(text.lstrip("-")) == abs(x):
            return text
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    text = repr(float(x))
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), text)


def _num(x: int | float, percent: bool = False) -> A.Value:
    if isinstance(x, float) and abs(x) == math.pi:  # gated phase ranges read better as [-pi, pi]
        return A.Ident(W, "pi") if x > 0 else A.Neg(W, A.Ident(W, "pi"))
    text = format_int(x) if isinstance(x, int) else format_number(x, percent)
    if text.startswith("-"):
        return A.Neg(W, A.Number(W, text[1:], None))
    return A.Number(W, text, None)


def _string(s: str) -> A.String:
    text = '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    return A.String(W, text, s)


def _ident(name: str) -> A.Ident:
    return A.Ident(W, name)


def value_node(kind: Kind, v: Any, percent: bool = False) -> A.Value:
    """The syntax for value `v` of a field of `kind`."""
    if isinstance(kind, Optional):
        return _ident("none") if v is None else value_node(kind.inner, v, percent)
    if isinstance(kind, Bool):
        return _ident("true" if v else "false")
    if isinstance(kind, (Int, Float)):
        return _num(v if isinstance(kind, Int) else float(v), percent)
    if isinstance(kind, Enum):
        return _ident(v)
    if isinstance(kind, Str):
        return _string(v)
    if isinstance(kind, Key):
        return _name(v)
    if isinstance(kind, Range):
        lo, hi = (_num(float(x)) for x in v)
        if kind.style == "uniform":
            return A.Call(W, "uniform", W, (A.Arg(W, None, None, lo), A.Arg(W, None, None, hi)))
        return A.ListValue(W, (lo, hi))
    if isinstance(kind, Groups):
        return A.ListValue(W, tuple(A.ListValue(W, tuple(_num(int(i)) for i in g)) for g in v))
    if isinstance(kind, Names):
        return _ident("all") if v is None else A.ListValue(W, tuple(_name(n) for n in v))
    if isinstance(kind, Ints):
        return A.ListValue(W, tuple(_num(int(i)) for i in v))
    if isinstance(kind, Scheduled):
        return _schedule(v) if isinstance(v, Knots) else value_node(kind.inner, v, percent)
    if isinstance(kind, PerFeature):
        return _per_feature(v)
    if isinstance(kind, Items):
        return A.ListValue(W, tuple(_item(kind, item) for item in v))
    raise TypeError(f"no syntax for {kind!r}")


def _schedule(k: Knots) -> A.Call:
    """linear(a, b) / cosine(a, b) when one segment spans the run, else knots([t, v], [t, v, rule], ...)."""
    (t0, v0), rest = k.knots[0], k.knots[1:]
    if len(rest) == 1 and t0 == 0.0 and rest[0][0] == 1.0 and k.interp[0] != "hold":
        return A.Call(W, k.interp[0], W, (A.Arg(W, None, None, _num(v0)), A.Arg(W, None, None, _num(rest[0][1]))))
    items = [A.ListValue(W, (_num(t0), _num(v0)))]
    for (t, v), rule in zip(rest, k.interp):
        items.append(A.ListValue(W, (_num(t), _num(v)) + (() if rule == "linear" else (_ident(rule),))))
    return A.Call(W, "knots", W, tuple(A.Arg(W, None, None, i) for i in items))


def _per_feature(v: Any) -> A.Value:
    """A per-feature value: a number, a list, or its decay form with every argument."""
    if isinstance(v, (tuple, list)):
        return A.ListValue(W, tuple(_num(float(x)) for x in v))
    if isinstance(v, S.Profile):
        form = PerFeature.FORMS[v.shape]
        args = [A.Arg(W, None, None, _num(float(getattr(v, f)))) for f in form.positional]
        args += [A.Arg(W, kw, W, _num(float(getattr(v, f)))) for kw, f in form.keywords.items()]
        return A.Call(W, v.shape, W, tuple(args))
    return _num(float(v))


def _name(v: str) -> A.Value:
    """A name as a bare word where it is one, else as a string ("layers.0.W_in", "fc*")."""
    return _ident(v) if _NAME.fullmatch(v) and v not in _RESERVED_VALUES else _string(v)


def _item(kind: Items, item: Any) -> A.Value:
    """One item of an Items list as its call: the form whose fixed fields it has, positional
    arguments up to the last one that is not at its default (the required ones always), then the
    keywords that differ from the defaults."""
    for name, (cls, form, kinds) in kind.forms.items():
        if type(item) is not cls or any(getattr(item, f) != v for f, v in form.fixed.items()):
            continue
        fresh = cls()
        pos = list(form.positional)
        while len(pos) > form.required and getattr(item, pos[-1]) == getattr(fresh, pos[-1]):
            pos.pop()
        args = [A.Arg(W, None, None, value_node(kinds[f], getattr(item, f))) for f in pos]
        for kw, f in form.keywords.items():
            if f not in pos and getattr(item, f) != getattr(fresh, f):
                args.append(A.Arg(W, kw, W, value_node(kinds[f], getattr(item, f))))
        return A.Call(W, name, W, tuple(args)) if args else _ident(name)
    raise TypeError(f"no call writes {item!r}")


def _assign(path: str, value: A.Value) -> A.Assign:
    parts = tuple(path.split("."))
    return A.Assign(W, parts, tuple(W for _ in parts), value)


def _block(name: str, body: list, label: A.Value | None = None) -> A.Block:
    return A.Block(W, name, W, label, tuple(body), W, W)


def _leaf(name: str, leaf: Leaf, v: Any) -> A.Assign:
    return _assign(name, value_node(leaf.kind, v, percent=name == "warmup"))


def _as_call(obj: Obj, value: Any) -> A.Value | None:
    """`value` as one of obj's call forms, or None if no form reproduces it exactly."""
    if value is None:
        return _ident("none") if obj.optional else None
    fresh = type(value)()  # in a merged block, the method's own class
    own = {f.name for f in dataclasses.fields(fresh)}
    for name, form in obj.forms.items():
        if not own.issuperset((*form.fixed, *form.positional, *form.keywords.values())):
            continue  # another method's form
        if any(getattr(value, f) != v for f, v in form.fixed.items()):
            continue
        args, rebuilt = [], dict(form.fixed)
        for i, f in enumerate(form.positional[: form.required]):
            args.append(A.Arg(W, None, None, value_node(obj.fields[f].kind, getattr(value, f))))
            rebuilt[f] = getattr(value, f)
        for i, (kw, f) in enumerate(form.keywords.items()):
            # the first keyword (lr, warmup, source) is always written: it is what a reader looks for
            if f in rebuilt or (i > 0 and getattr(value, f) == getattr(fresh, f)):
                continue
            v = getattr(value, f)
            args.append(A.Arg(W, kw, W, value_node(obj.fields[f].kind, v, percent=f == "warmup")))
            rebuilt[f] = v
        if dataclasses.replace(fresh, **rebuilt) == value:
            return A.Call(W, name, W, tuple(args)) if args else _ident(name)
    return None


def _fields(obj: Obj, value: Any, method: str = "") -> list:
    """Every field of `value` (of schema `obj`) as statements; with `method`, the fields of the other
    decomposition methods are left out (their class has no such field)."""
    body = []
    for name, node in obj.fields.items():
        if method and node.methods and method not in node.methods:
            continue
        if isinstance(node, Obj):
            if node.rt is not None:
                continue  # train: written by the caller inside the target block
            v = getattr(value, name)
            call = _as_call(node, v) if node.forms else None
            if call is not None:
                body.append(_assign(name, call))
            else:
                body.append(_block(name, _fields(node, v, method)))
        else:
            body.append(_leaf(name, node, getattr(value, name)))
    return body


def _target(exp: S.Experiment) -> A.Block:
    t = exp.target
    if isinstance(t, S.FileTarget):
        label = A.Call(W, "file", W, (A.Arg(W, None, None, _string(t.path)),))
        return A.Block(W, "target", W, label, None, None, None)
    schema = TARGETS[t.kind]
    body = _fields(schema, t)
    if "train" in schema.fields and exp.train is not None:
        body.append(_block("train", _fields(TRAIN, exp.train)))
    return _block("target", body, _ident(t.kind))


def _expect(e: S.Expectation) -> A.Expect:
    reduce = None if e.reduce == "all" else e.reduce
    at_least = None if e.at_least is None else _num(e.at_least)
    return A.Expect(W, e.metric, W, reduce, None, e.op, _num(float(e.value)), at_least)


def leaf_at(rt: str, kind: str) -> Leaf | None:
    """The schema leaf of runtime path `rt` for a target of `kind`."""
    parts = rt.split(".")
    node: Leaf | Obj = EXPERIMENT
    if parts[0] == "train":
        node, parts = TRAIN, parts[1:]
    elif parts[0] == "target":
        node, parts = TARGETS.get(kind, TARGETS["tms"]), parts[1:]
    for p in parts:
        if not isinstance(node, Obj) or p not in node.fields:
            return None
        node = node.fields[p]
    return node if isinstance(node, Leaf) else None


def _sweep(exp: S.Experiment) -> A.Block | None:
    if not exp.sweep or not exp.sweep.axes:
        return None


    kind = exp.target.kind if not isinstance(exp.target, S.FileTarget) else "file"
    entries: list = []  # an Assign, or the list of Assigns of one zip group
    groups: dict[int, list] = {}
    for axis in exp.sweep.axes:
        leaf = leaf_at(axis.path, kind)
        if leaf is None:
            raise ValueError(f"sweep path {axis.path!r} names no field of the spec language")
        values = A.ListValue(W, tuple(value_node(leaf.kind, v) for v in axis.values))
        line = _assign(lang_path(axis.path), values)
        if axis.group is None:
            entries.append(line)
        elif axis.group in groups:
            groups[axis.group].append(line)
        else:
            groups[axis.group] = [line]
            entries.append(groups[axis.group])
    return _block("sweep", [_block("zip", e) if isinstance(e, list) else e for e in entries])


def to_apd(exp: S.Experiment) -> str:
    """Canonical, self-contained `.apd` text for an experiment (normally a resolved one)."""
    body = [
        _leaf("seed", EXPERIMENT.fields["seed"], exp.seed),
        _leaf("replicates", EXPERIMENT.fields["replicates"], exp.replicates),
        _leaf("dtype", EXPERIMENT.fields["dtype"], exp.dtype),
        _target(exp),
    ]
    for name in ("data", "decompose", "report"):
        block = _block(name, _fields(EXPERIMENT.fields[name], getattr(exp, name), exp.decompose.method))
        if name == "report":
            block = dataclasses.replace(block, body=block.body + tuple(_expect(e) for e in exp.report.expect))
        body.append(block)
    sweep = _sweep(exp)
    if sweep is not None:
        body.append(sweep)
    label = _ident(exp.name) if _NAME.fullmatch(exp.name) and exp.name not in _RESERVED_VALUES else _string(exp.name)
    tree = A.File("<generated>", (_block("experiment", body, label),), ())
    header = "# The resolved experiment, written by apdspec. Call arguments left out have their defaults.\n"
    return header + render_file(tree, generated=True)

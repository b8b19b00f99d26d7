"""The closed schema of the language: every block, key, value kind and call form, generated from the
runtime's dataclasses and their field metadata (runtime/spec/fields.py), so that a target kind or
a decomposition method adds its keys by declaring its fields.

Language paths mirror `runtime.spec` field paths (decompose.loss.simplicity), with one exception:
target training is written inside the target block (target tms { train { ... } }) but is
`Experiment.train` in the runtime. The decompose block (and its loss block) is the union of every
method's fields: a key one method owns (declared on its Decompose or loss class only) is tagged
with it (`methods`), and setting it for another method is an error. Defaults are never repeated
here: they come from the runtime dataclasses. `valid` strings document the ranges that
`runtime.spec.validate()` enforces (a test probes them against validate()).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from runtime import spec as S
from runtime.spec.fields import Form  # noqa: F401  (re-exported: the language's call forms)
from runtime.spec.knots import Knots

from .values import Bool, Enum, Float, Groups, Int, Ints, Items, Key, Kind, Names, Optional, Path, PerFeature, Range, Scheduled, Str


@dataclass(frozen=True)
class Leaf:
    kind: Kind
    doc: str
    forms: dict[str, Form] = field(default_factory=dict)
    paper: str = ""  # paper symbol / equation
    valid: str = ""  # the range runtime.spec.validate() enforces, for the docs ("> 0", "[0, 1)")
    methods: tuple[str, ...] = ()  # the decomposition methods that read it; () = every method
    default: Any = None  # its default (for the method that owns it)


@dataclass(frozen=True)
class Obj:
    cls: type
    fields: dict[str, Union[Leaf, "Obj"]]
    doc: str = ""
    forms: dict[str, Form] = field(default_factory=dict)  # call forms that replace the whole object
    optional: bool = False  # `= none` allowed
    rt: str | None = None  # absolute runtime path, when it differs from the language path
    methods: tuple[str, ...] = ()  # the decomposition methods that read it; () = every method
    default: Any = None  # its default (for the method that owns it)
    variants: dict[str, type] = field(default_factory=dict)  # merged blocks: method -> its class
    call_blocks: tuple[str, ...] = ()  # forms that may also be written `name form(...)` (data file("x.npz"))


Node = Union[Leaf, Obj]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_in(hint: Any) -> tuple[type | None, bool]:
    """(the dataclass a hint holds, whether None is allowed); a schedule (Knots) is a value, not a block."""
    args = typing.get_args(hint)
    optional = type(None) in args
    for t in (hint, *args):
        if isinstance(t, type) and dataclasses.is_dataclass(t) and t is not Knots:
            return t, optional
    return None, optional


def _kind(hint: Any, meta: dict) -> Kind:
    """The language value kind of a field's type and metadata."""
    if meta.get("items"):  # a list of calls, each building one of these classes (a network's layers)
        return items_kind(meta["items"])
    if meta.get("names"):  # `all` (None, where the field is optional) or a list of names
        registry = {"metric": lambda: S.METRICS, "plot": lambda: S.PLOTS, "layer": lambda: None}[meta["names"]]
        return Names(registry, meta["names"], all_ok=type(None) in typing.get_args(hint))
    args = typing.get_args(hint)
    if type(None) in args:
        rest = tuple(a for a in args if a is not type(None))
        return Optional(_kind(rest[0] if len(rest) == 1 else Union[rest], meta))
    if Knots in args:  # float | Knots: a coefficient that may follow a schedule
        return Scheduled(Float(meta.get("max"), meta.get("why", "")))
    if meta.get("key") == "paper":
        return Key(_paper_keys, "paper experiment")
    if meta.get("key") == "layer":
        return Key(noun="layer")
    if hint is bool:
        return Bool()
    if hint is int:
        return Int(meta.get("max"))
    if hint is float:
        return Float(meta.get("max"), meta.get("why", ""))
    if hint is str:
        if meta.get("path"):
            return Path()
        return Enum(*meta["choices"]) if meta.get("choices") else Str()
    origin = typing.get_origin(hint)
    if origin is tuple:
        inner = typing.get_args(hint)
        if inner and typing.get_origin(inner[0]) is tuple:
            return Groups()
        if inner == (int, Ellipsis):
            return Ints()
        return Range(meta.get("style", "list"))
    raise TypeError(f"no language value kind for {hint!r}")


def items_kind(classes: tuple[type, ...]) -> Items:
    """The Items kind of a list whose items are calls of `classes` (their FORMS), each argument
    typed by its field."""
    forms = {}
    for cls in classes:
        hints = _hints(cls)
        kinds = {f.name: _kind(hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls) if f.init}
        for name, form in cls.FORMS.items():
            forms[name] = (cls, form, kinds)
    return Items(forms, "layer", "linear(fc1, 8), relu, linear(fc2)")


def _paper_keys():
    """The runtime's table of paper results (runtime/spec/paper.py)."""
    from runtime.spec.paper import PAPER

    return PAPER


# Runtime fields the schema handles with dedicated syntax rather than `key = value`.
SPECIAL_FIELDS = {
    (S.Experiment, "name"): "experiment NAME { ... }",
    (S.Experiment, "target"): "target KIND { ... }",
    (S.Experiment, "train"): "target KIND { train { ... } }",
    (S.Experiment, "sweep"): "sweep { ... }",
    (S.Report, "expect"): "expect METRIC OP VALUE",
    (S.FileTarget, "path"): 'target file("path")',
}


def _node(cls: type, f: dataclasses.Field, hint: Any, default: Any, methods: tuple[str, ...] = ()) -> Node:
    meta = dict(f.metadata)
    if meta.get("per_feature"):  # a number, a list or a decay form: one value, not a block
        return Leaf(PerFeature(meta["per_feature"]), meta.get("doc", ""), {}, meta.get("paper", ""),
                    meta.get("valid", ""), methods, default)
    sub, optional = _dataclass_in(hint)
    if sub is not None:
        return obj(sub, meta.get("doc", ""), optional=optional, methods=methods, default=default)
    return Leaf(_kind(hint, meta), meta.get("doc", ""), dict(meta.get("forms") or {}), meta.get("paper", ""),
                meta.get("valid", ""), methods, default)


def obj(cls: type, doc: str = "", *, optional: bool = False, methods: tuple[str, ...] = (), default: Any = None,
        rt: str | None = None, extra: dict[str, Node] | None = None) -> Obj:
    """The schema of dataclass `cls` (whose default value is `default`: None for an object that is
    off by default): a node per field that has language syntax."""
    hints = _hints(cls)
    proto = cls() if default is None else default  # what the fields default to once the object is on
    extra = dict(extra or {})
    fields: dict[str, Node] = {}
    for f in dataclasses.fields(cls):
        if f.name in extra:  # given: at the field's place
            fields[f.name] = extra.pop(f.name)
        elif f.init and (cls, f.name) not in SPECIAL_FIELDS:
            fields[f.name] = _node(cls, f, hints[f.name], getattr(proto, f.name))
    fields.update(extra)  # blocks that are not fields of cls (a target's train)
    return Obj(cls, fields, doc, dict(getattr(cls, "FORMS", {})), optional, rt, methods, default,
               call_blocks=tuple(getattr(cls, "CALL_BLOCKS", ())))


def merged(variants: dict[str, type], doc: str, defaults: dict[str, Any], base: type, shared: set[str] | None = None,
           **extra_fields: Node) -> Obj:
    """One block for several methods' classes (`variants`: method -> class, `defaults`: method ->
    its default instance): a field every method has is shared (`shared`, when given, says which),
    one only some have is tagged with them. Nested blocks merge the same way."""
    names: dict[str, list[str]] = {}
    for m, cls in variants.items():
        for f in dataclasses.fields(cls):
            if f.init:
                names.setdefault(f.name, []).append(m)
    fields: dict[str, Node] = {}
    for name, owners in names.items():
        if name in extra_fields:
            fields[name] = extra_fields[name]
            continue
        is_shared = (name in shared) if shared is not None else len(owners) == len(variants)
        methods = () if is_shared else tuple(owners)
        m = owners[0]
        cls = variants[m]
        f = next(f for f in dataclasses.fields(cls) if f.name == name)
        hint = _hints(cls)[name]
        sub, optional = _dataclass_in(hint)
        if sub is not None and len(owners) > 1 and any(
                _dataclass_in(_hints(variants[o])[name])[0] is not sub for o in owners):
            # the methods' own classes of one block (decompose.loss): merge them too
            own_doc = next((g.metadata.get("doc", "") for g in dataclasses.fields(base) if g.name == name), None)
            fields[name] = dataclasses.replace(
                merged({o: _dataclass_in(_hints(variants[o])[name])[0] for o in owners},
                       own_doc if own_doc is not None else f.metadata.get("doc", ""),
                       {o: getattr(defaults[o], name) for o in owners}, _dataclass_in(_hints(variants[m])[name])[0]),
                methods=methods)
            continue
        # one method's coefficient may follow a schedule, another's only a number: the wider syntax
        # parses both; validate() says which method takes a number only (checks.schedule_issues)
        m = next((o for o in owners if Knots in typing.get_args(_hints(variants[o])[name])), m)
        cls, f = variants[m], next(g for g in dataclasses.fields(variants[m]) if g.name == name)
        node = _node(cls, f, _hints(cls)[name], getattr(defaults[m], name), methods)
        forms = {k: v for o in owners for k, v in
                 (next(g for g in dataclasses.fields(variants[o]) if g.name == name).metadata.get("forms") or {}).items()}
        fields[name] = dataclasses.replace(node, forms=forms) if isinstance(node, Leaf) and forms else node
    forms = {n: f for cls in variants.values() for n, f in getattr(cls, "FORMS", {}).items()}  # each names its own
    return Obj(base, fields, doc, forms, variants=dict(variants), default=defaults.get(S.DEFAULT_METHOD))


# validate() and the architecture build one entry per layer: bound layer counts before they run.
MAX_LAYERS = S.MAX_LAYERS

TRAIN = obj(S.Training, "how the target network is trained (kinds that are trained)", rt="train")

TARGETS: dict[str, Obj] = {
    name: obj(spec.cls, spec.doc, extra={"train": TRAIN} if spec.trained else None) for name, spec in S.KINDS.items()
}
TARGETS["file"] = Obj(S.FileTarget, {}, 'a target saved by `apdspec run`: target file("runs/x/target.npz")')


def _decompose() -> Obj:
    variants = {m: spec.cls for m, spec in S.METHODS.items()}
    defaults = {m: cls() for m, cls in variants.items()}
    shared = {f.name for f in dataclasses.fields(S.Decompose)} - {"method"}
    method = Leaf(Enum(*S.METHODS), "; ".join(spec.doc for spec in S.METHODS.values()), default=S.DEFAULT_METHOD)
    return merged(variants, "the decomposition (APD paper §2, App. A.2.2; SPD paper §2)", defaults, S.Decompose,
                  shared=shared, method=method)


DECOMPOSE = _decompose()
LOSSES = DECOMPOSE.fields["loss"]
DATA = obj(S.Data, "the inputs: generated sparse features (notes §2), or a data file")
REPORT = obj(S.Report, "metrics, plots and expectations")

EXPERIMENT = obj(S.Experiment, "one experiment", default=S.Experiment(), extra={"decompose": DECOMPOSE})
EXPERIMENT.fields.update(data=DATA, report=REPORT)  # the same objects as the names above

REDUCTIONS = ("mean", "min", "max", "median")


def walk(node: Obj, prefix: tuple[str, ...] = ()):
    """(language path, node) for every node under node, depth first."""
    for name, child in node.fields.items():
        yield prefix + (name,), child
        if isinstance(child, Obj):
            yield from walk(child, prefix + (name,))


def blocks(root: Obj = EXPERIMENT) -> dict[tuple[str, ...], Obj]:
    """Language path -> block (object) node, for the docs."""
    return {path: node for path, node in walk(root) if isinstance(node, Obj)}

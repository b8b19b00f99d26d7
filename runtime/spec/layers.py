"""The layer vocabulary: a target written as a network of layers (`target mlp { network = [...] }`).

    network = [
      linear(W, 2, bias = false),                                       # h = x W
      linear(hidden, 2, bias = false, init = identity, frozen = true),  # h = h I (a frozen identity)
      linear(W_T, tied = W),                                            # z = h W^T + b
      relu,
    ]

Items are calls of the classes below (their FORMS), so the language's syntax, its checks and the
docs' tables come from these dataclasses' field metadata. A network is a tuple of items; a
residual block `residual([...])` adds its body's output to the stream it reads (r -> r + body(r)),
so embeddings and unembeddings are plain (usually frozen) linear layers around it.

`walk(features, network)` runs the shapes through a network once: every linear layer's input and
output width, the output width, and every structural problem located by its index path
(`network[2].tied`), which the language maps to the exact argument's file:line:column.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .fields import Form, setting

ACTIVATION_NAMES = ("relu", "gelu", "identity")
INITS = ("default", "identity", "zeros", "unit_rows")
_LINEAR_KW = {k: k for k in ("out", "bias", "tied", "init", "frozen")}
_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


@dataclass(frozen=True)
class Linear:
    """One linear layer, h -> h W (+ b), W of shape (d_in, d_out) (row-vector convention)."""

    FORMS: ClassVar[dict[str, Form]] = {"linear": Form(positional=("name", "out"), keywords=_LINEAR_KW, required=1)}

    name: str = setting("", "the layer's name: its weight is the parameter NAME and its bias NAME.bias (decomposed "
                            "and truth name it too); a bare name or a string", key="layer",
                        valid="unique; letters, digits, _ separated by .")
    out: int | None = setting(None, "output width; none = inferred: a tied layer's is its source's input width, the "
                                    "last layer of a residual block's the stream width, the network's last layer's "
                                    "the input width (features)", valid="> 0")
    bias: bool = setting(True, "add a bias (nn.Linear's default)")
    tied: str | None = setting(None, "use the transpose of this earlier layer's weight (TMS's W^T): no weight of its "
                                     "own", key="layer")
    init: str = setting("default", "default (PyTorch nn.Linear's: U(-1/sqrt(d_in), 1/sqrt(d_in)) weight and bias), "
                                   "identity (square layers), zeros, unit_rows (random unit-norm rows: a residual "
                                   "stream's embedding); biases start at zero except with default", choices=INITS)
    frozen: bool = setting(False, "keep the weight and bias fixed in target training (e.g. a frozen identity)")
    op: str = field(default="linear", init=False)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: relu, gelu (exact, erf) or identity."""

    FORMS: ClassVar[dict[str, Form]] = {a: Form(fixed={"fn": a}) for a in ACTIVATION_NAMES}

    fn: str = setting("relu", "the function", choices=ACTIVATION_NAMES)
    op: str = field(default="act", init=False)


BLOCK_ITEMS = (Linear, Activation)


@dataclass(frozen=True)
class Residual:
    """A residual block: r -> r + body(r); its body's output width is the stream's."""

    FORMS: ClassVar[dict[str, Form]] = {"residual": Form(positional=("body",), required=1)}

    body: tuple = setting((), "the block's layers and activations", items=BLOCK_ITEMS)
    op: str = field(default="residual", init=False)


ITEMS = (Linear, Activation, Residual)
ITEM_CLASSES = {cls.__dataclass_fields__["op"].default: cls for cls in ITEMS}  # "op" tag -> class (serial)


# ------------------------------------------------------------------------------------------
# Shapes and structure


@dataclass(frozen=True)
class LinearUse:
    """A linear layer as the network runs it."""

    layer: Linear
    where: str  # index path, e.g. "network[2]" or "network[1].body[0]"
    d_in: int
    d_out: int
    source: "LinearUse | None"  # the layer whose weight a tied layer reads
    residual: bool  # inside a residual block

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def param(self) -> str:
        """The parameter holding its weight (a tied layer's source's)."""
        return self.source.name if self.source is not None else self.name


@dataclass(frozen=True)
class Problem:
    where: str  # index path of the item or argument, e.g. "network[2].tied"
    message: str
    hint: str = ""


@dataclass
class Walk:
    """The shapes of a network on `features` inputs."""

    linears: list[LinearUse] = field(default_factory=list)  # in forward order
    n_out: int = 0
    problems: list[Problem] = field(default_factory=list)

    def by_name(self) -> dict[str, LinearUse]:
        return {u.name: u for u in self.linears}


def walk(features: int, network: tuple, root: str = "network") -> Walk:
    """Run the widths through `network` (the first layer reads `features` inputs)."""
    w = Walk()
    seen: dict[str, LinearUse] = {}
    # the network's last layer may leave `out` unset: it then writes `features` outputs (as the
    # stream a residual block adds to)
    width = _walk_items(network, features, root, False, seen, w)
    w.n_out = width
    if not w.linears and not w.problems:
        w.problems.append(Problem(root, "the network has no linear layer",
                                  "write e.g. network = [linear(fc1, 8), relu, linear(fc2, 5)]"))
    return w


def _walk_items(items: tuple, width: int, root: str, in_residual: bool, seen: dict, w: Walk) -> int:
    stream = width  # the width a residual body's output must have
    for i, item in enumerate(items):
        where = f"{root}[{i}]"
        if isinstance(item, Linear):
            last = not any(isinstance(x, Linear) for x in items[i + 1:])
            width = _walk_linear(item, width, where, in_residual, seen, w, stream if last else None)
        elif isinstance(item, Residual):
            if in_residual:
                w.problems.append(Problem(where, "a residual block cannot hold another one",
                                          "write the blocks one after the other"))
                continue
            body_width = _walk_items(item.body, width, where + ".body", True, seen, w)
            if not any(isinstance(x, Linear) for x in item.body):
                w.problems.append(Problem(where, "a residual block needs a linear layer",
                                          "write e.g. residual([linear(W_in, 50), relu, linear(W_out)])"))
            elif body_width != width:
                w.problems.append(Problem(where, f"the block's output width is {body_width}; the stream it adds to "
                                                 f"has width {width}",
                                          "leave the block's last layer's out unset (it is then the stream width)"))
        elif not isinstance(item, Activation):
            w.problems.append(Problem(where, f"not a layer: {item!r}"))
    return width


def _walk_linear(layer: Linear, d_in: int, where: str, in_residual: bool, seen: dict, w: Walk,
                 stream: int | None) -> int:
    """`stream`: the stream width when this is the last linear layer of a residual block."""
    name = layer.name
    ok = True
    if not _NAME.fullmatch(name) or name.endswith(".bias"):
        w.problems.append(Problem(where + ".name", f"{name!r} is not a layer name",
                                  "use letters, digits and _ separated by '.', not ending in .bias (e.g. fc1, "
                                  "\"layers.0.W_in\")"))
        ok = False
    elif name in seen:
        w.problems.append(Problem(where + ".name", f"a layer named {name!r} is already defined",
                                  f"every layer needs its own name (it names the parameter); to reuse {name}'s "
                                  f"weight transposed write linear(NAME, tied = {name})"))
        ok = False
    source = None
    d_out = layer.out
    if layer.tied is not None:
        source = seen.get(layer.tied)
        if source is None:
            w.problems.append(Problem(where + ".tied", f"no earlier layer is named {layer.tied!r}",
                                      "a tied layer reads the transpose of an earlier layer's weight; "
                                      + known_hint(layer.tied, list(seen), "earlier layers")))
            return d_out or d_in
        if source.source is not None:
            w.problems.append(Problem(where + ".tied", f"{layer.tied!r} is itself tied to {source.source.name!r}",
                                      f"tie to {source.source.name!r} instead"))
            return d_out or d_in
        if source.d_out != d_in:
            w.problems.append(Problem(where, f"a layer tied to {layer.tied!r} reads its output width "
                                             f"{source.d_out}, but its input has width {d_in}"))
        if d_out is not None and d_out != source.d_in:
            w.problems.append(Problem(where + ".out", f"a layer tied to {layer.tied!r} has out = {source.d_in} (the "
                                                      f"transpose of a {source.d_in} x {source.d_out} weight), not "
                                                      f"{d_out}", "leave out unset for a tied layer"))
        d_out = source.d_in
        for arg, default in (("init", "default"), ("frozen", False)):
            if getattr(layer, arg) != default:
                w.problems.append(Problem(where + f".{arg}", f"a tied layer has no weight of its own: its {arg} is "
                                                               f"{layer.tied}'s", f"set {arg} on {layer.tied}"))
    elif d_out is None:
        if stream is None:
            w.problems.append(Problem(where, f"linear layer {name!r} needs its output width",
                                      f"write linear({name}, WIDTH)"))
            return d_in
        d_out = stream
    if d_out <= 0:
        w.problems.append(Problem(where + ".out", f"out must be > 0, got {d_out}"))
        return d_in
    if layer.init == "identity" and d_in != d_out:
        w.problems.append(Problem(where + ".init", f"an identity init needs a square layer; {name!r} is "
                                                    f"{d_in} x {d_out}"))
    use = LinearUse(layer, where, d_in, d_out, source, in_residual)
    if ok:
        seen[name] = use
    w.linears.append(use)
    return d_out


def known_hint(name: str, names: list[str], what: str = "the linear layers") -> str:
    """"did you mean 'x'?" for a near name, else the list of names."""
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"did you mean {near[0]!r}?" if near else f"{what}: " + (", ".join(names) or "none")


def matched(patterns: tuple[str, ...] | None, names: list[str]) -> tuple[list[str], list[int]]:
    """(names matched by any of `patterns` (glob, in `names` order; None: all), indices of the
    patterns that match nothing)."""
    if patterns is None:
        return list(names), []
    hits = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    empty = [i for i, p in enumerate(patterns) if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    return hits, empty


def linear_count(network: tuple) -> int:
    """Linear layers in a network (bounded before anything iterates over them per layer)."""
    n = 0
    for item in network:
        if isinstance(item, Linear):
            n += 1
        elif isinstance(item, Residual):
            n += sum(isinstance(x, Linear) for x in item.body)
    return n


def network_text(network: tuple) -> str:
    """A short one-line description: `linear W 5x2 -> linear hidden -> ...` is left to the
    language; this is for messages: the item names in order."""
    parts = []
    for item in network:
        if isinstance(item, Linear):
            parts.append(item.name)
        elif isinstance(item, Activation):
            parts.append(item.fn)
        elif isinstance(item, Residual):
            parts.append("residual(" + ", ".join(x.name if isinstance(x, Linear) else x.fn for x in item.body) + ")")
    return " -> ".join(parts)


def as_items(values: Any) -> tuple:
    """Items from their plain-data form (serial: dicts tagged with "op")."""
    out = []
    for v in values:
        if isinstance(v, dict):
            d = dict(v)
            cls = ITEM_CLASSES[d.pop("op", "linear")]
            if cls is Residual:
                d["body"] = as_items(d.get("body", ()))
            out.append(cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "op"}))
        else:
            out.append(v)
    return tuple(out)


# ------------------------------------------------------------------------------------------
# Presets: the kinds a network can be


@dataclass(frozen=True)
class NetworkView:
    """What a kind's recogniser reads of a network target (runtime/targets/mlp): its checked
    shapes, the decomposed layers' names and the ground truth it states."""

    features: int
    network: tuple
    walk: Walk
    decomposed: tuple[str, ...]
    truth: Any  # mlp GroundTruth: input_features, output_features, dense

    def flat(self) -> list:
        """The top-level items without identity activations (they compute nothing)."""
        return [x for x in self.network if not (isinstance(x, Activation) and x.fn == "identity")]

    def use(self, layer: Linear) -> LinearUse:
        return self.walk.by_name()[layer.name]  # names are unique in a checked network

    def all_decomposed(self) -> bool:
        return set(self.decomposed) == {u.name for u in self.walk.linears}

    def truth_within(self, input_features=(), output_features=(), dense=()) -> bool:
        """Whether the stated truth says nothing the kind's ground truth does not."""
        t = self.truth
        return (set(t.input_features) <= set(input_features) and set(t.output_features) <= set(output_features)
                and set(t.dense) <= set(dense))


# kind -> recogniser (NetworkView -> an equivalent target of that kind, or None); each kind that
# is expressible as a network registers one in its spec.py, beside `as_network` (its network form)
PRESETS: dict[str, Any] = {}

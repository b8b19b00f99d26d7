"""A target written as a network of layers (runtime/spec/layers.py): its dataclass, shapes, checks,
ground truth and the presets it is recognised as.

    target mlp {
      features = 5
      network = [linear(W, 2, bias = false), linear(hidden, 2, bias = false, init = identity, frozen = true),
                 linear(W_T, tied = W), relu]
      decomposed = all
      truth { input_features = [W]  output_features = [W_T]  dense = [hidden] }
    }

Parameters (per replicate): every untied linear layer's weight NAME (d_in, d_out) and its bias
NAME.bias (d_out,). Decomposed: the linear layers `decomposed` names (glob patterns), a tied one
reading its source's parameter transposed. A network that has the form of an existing kind (a
TMS, a residual MLP, a deep linear network: `layers.PRESETS`) runs as that kind (`equivalent`).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from ...spec import Issue, KINDS, KindSpec, Layer, Target, declare_metric, setting
from ...spec.checks import positive
from ...spec.import_rules import ImportRules
from ...spec.layers import (
    ACTIVATION_NAMES, ITEMS, PRESETS, Activation, Linear, NetworkView, known_hint, linear_count, matched, walk,
)


@dataclass(frozen=True)
class GroundTruth:
    """What the network's mechanisms are by design; nothing stated: no ground-truth metrics."""

    input_features: tuple[str, ...] = setting((), "matrices that read the input, one rank-one mechanism per feature: "
                                                  "feature f (input f) is row f", names="layer")
    output_features: tuple[str, ...] = setting((), "matrices that write the output, one rank-one mechanism per "
                                                   "feature: feature f (output f) is column f", names="layer")
    dense: tuple[str, ...] = setting((), "matrices that are one mechanism by design (e.g. a frozen identity): all "
                                         "their weight in the fewest components that can hold it", names="layer")

    def stated(self) -> bool:
        return bool(self.input_features or self.output_features or self.dense)


DEFAULT_NETWORK = (Linear("fc1", 2), Activation("relu"), Linear("fc2"))


@dataclass(frozen=True)
class MlpTarget(Target):
    """A network of linear layers, activations and residual blocks (runtime/spec/layers.py)."""

    features: int = setting(5, "input features: the network's input width (feature f is input f)", paper="F",
                            valid="> 0")
    network: tuple = setting(DEFAULT_NETWORK, "the layers in order: linear(...), relu / gelu / identity, "
                                              "residual([...]) (see Networks)", items=ITEMS)
    decomposed: tuple[str, ...] | None = setting(None, "the linear layers decomposed: names or glob patterns "
                                                       "(\"fc*\"); all = every one", names="layer",
                                                 valid="each matches a linear layer; a tied layer with its source")
    truth: GroundTruth = setting(GroundTruth(), "the network's ground truth, for the metrics to compare against")
    kind: str = field(default="mlp", init=False)


@functools.lru_cache(maxsize=64)
def uses(arch: MlpTarget):
    """(walk, decomposed uses in forward order); cached: the forward pass asks every step."""
    w = walk(arch.features, arch.network)
    names, _ = matched(arch.decomposed, [u.name for u in w.linears])
    return w, [u for u in w.linears if u.name in names]


# ------------------------------------------------------------------------------------------
# Importing a state dict of nn.Linear layers (`apdspec import-target --kind mlp`)

_ENTRY = re.compile(r"(.+)\.(weight|bias)")


def _rename(source: str) -> str | None:
    """fc1.weight -> fc1 (the layer's weight), fc1.bias -> fc1.bias."""
    m = _ENTRY.fullmatch(source)
    if m is None:
        return None
    return m.group(1) if m.group(2) == "weight" else source


def _activations(options: dict, gaps: int) -> list[str]:
    given = options.get("activation")
    if gaps == 0:
        return []
    if not given:
        raise ValueError("a state dict does not say which activations sit between its layers: give --activation "
                         f"relu (or {', '.join(a for a in ACTIVATION_NAMES if a != 'relu')}; a comma list gives one "
                         f"per gap, {gaps} here)")
    acts = [a.strip() for a in given.split(",")]
    if len(acts) == 1:
        acts = acts * gaps
    if len(acts) != gaps or any(a not in ACTIVATION_NAMES for a in acts):
        raise ValueError(f"--activation {given!r}: give one of {', '.join(ACTIVATION_NAMES)}, or a comma list of "
                         f"{gaps} (one per gap between the {gaps + 1} layers)")
    return acts


def _import_arch(params: dict, options: dict) -> "MlpTarget":
    """The chain of layers in the source's order (a state dict lists modules in forward order);
    each layer must read what the one before writes."""
    names = [k for k in params if not k.endswith(".bias")]
    for k in params:
        if k.endswith(".bias") and k[: -len(".bias")] not in params:
            raise ValueError(f"{k!r} has no weight {k[:-len('.bias')] + '.weight'!r}")
    if not names:
        raise ValueError("the source holds no weight (NAME.weight)")
    items: list = []
    acts = _activations(options, len(names) - 1)
    width = None
    for i, n in enumerate(names):
        W = params[n]
        if W.ndim not in (2, 3):
            raise ValueError(f"{n + '.weight'!r} has shape {W.shape}: a linear layer's weight has 2 axes (or 3 with a "
                             "leading replicate axis)")
        d_in, d_out = W.shape[-2:]
        if width is not None and d_in != width:
            raise ValueError(f"{n + '.weight'!r} reads {d_in} inputs but {names[i - 1] + '.weight'!r} writes {width} "
                             "outputs: the layers do not chain in the order the state dict lists them")
        b = params.get(f"{n}.bias")
        if b is not None and tuple(b.shape[-1:]) != (d_out,):
            raise ValueError(f"{n + '.bias'!r} has shape {b.shape}, expected ({d_out},) (the layer's outputs)")
        items.append(Linear(n, int(d_out), bias=b is not None))
        if i < len(acts):
            items.append(Activation(acts[i]))
        width = d_out
    out_act = options.get("output_activation")
    if out_act:
        if out_act not in ACTIVATION_NAMES:
            raise ValueError(f"--output-activation {out_act!r}: one of {', '.join(ACTIVATION_NAMES)}")
        items.append(Activation(out_act))
    return MlpTarget(features=int(params[names[0]].shape[-2]), network=tuple(items))


IMPORT = ImportRules(
    names={"NAME": ("NAME.weight",), "NAME.bias": ("NAME.bias",)},
    arch=_import_arch,
    rename=_rename,
)


class MlpKind(KindSpec):
    name = "mlp"
    cls = MlpTarget
    doc = ("a network written as layers: linear (with or without bias, tied, frozen), relu / gelu / identity, "
           "residual blocks; its decomposed matrices and ground truth declared")
    labels = ("identity", "abs", "act_plus_resid")
    labels_hint = "an mlp target is trained on identity (y = x), abs (y = |x|) or act_plus_resid labels, got {labels!r}"
    label_coefficients = True
    importer = IMPORT

    def matrices(self, arch: MlpTarget) -> tuple[Layer, ...]:
        _, dec = uses(arch)
        return tuple(Layer(u.name, u.param, u.source is not None, u.d_in, u.d_out) for u in dec)

    def param_shapes(self, arch: MlpTarget):
        w = walk(arch.features, arch.network)
        req: dict[str, tuple[int, ...]] = {}
        for u in w.linears:
            if u.source is None:
                req[u.name] = (u.d_in, u.d_out)
            if u.layer.bias:
                req[f"{u.name}.bias"] = (u.d_out,)
        return req, {}

    def layer_count(self, arch: MlpTarget):
        return "network", linear_count(arch.network)

    def decompose_defaults(self, arch: MlpTarget, method: str) -> dict:
        _, dec = uses(arch)
        # full rank of the widest decomposed matrix: one component can hold any of them
        return {"rank": max((min(u.d_in, u.d_out) for u in dec), default=1)}

    def issues(self, arch: MlpTarget) -> list[Issue]:
        issues: list[Issue] = []
        positive("target.features", arch.features, issues)
        if arch.features <= 0:
            return issues
        w = walk(arch.features, arch.network)
        issues += [Issue(f"target.{p.where}", p.message, p.hint) for p in w.problems]
        if w.problems:
            return issues
        names = [u.name for u in w.linears]
        hits, empty = matched(arch.decomposed, names)
        for i in empty:
            issues.append(Issue(f"target.decomposed[{i}]", f"{arch.decomposed[i]!r} matches no linear layer",
                                "the linear layers: " + ", ".join(names)))
        if not hits and not empty:
            issues.append(Issue("target.decomposed", "no layer is decomposed", "write decomposed = all"))
        for u in w.linears:
            if u.source is not None and (u.name in hits) != (u.source.name in hits):
                one, other = (u.name, u.source.name) if u.name in hits else (u.source.name, u.name)
                issues.append(Issue("target.decomposed", f"{one!r} is decomposed but {other!r}, which shares its "
                                    "weight (tied), is not", f"decompose both or neither (add {other!r})"))
        issues += _truth_issues(arch, w, hits)
        return issues

    def data_issues(self, exp: Any, arch: MlpTarget) -> list[Issue]:
        w = walk(arch.features, arch.network)
        if exp.train is None or w.problems or w.n_out == arch.features:
            return []
        return [Issue("target.network", f"the network writes {w.n_out} outputs for {arch.features} inputs; trained "
                      f"here on {exp.train.labels or 'identity'} labels it needs one output per input",
                      "end the network with a layer of out = features (or leave the last layer's out unset), or load "
                      "a trained one: target file(...) after apdspec import-target", ("train.labels",))]

    def equivalent(self, arch: MlpTarget) -> Target | None:
        if self.issues(arch):
            return None
        w, dec = uses(arch)
        view = NetworkView(arch.features, arch.network, w, tuple(u.name for u in dec), arch.truth)
        for recognise in PRESETS.values():
            found = recognise(view)
            if found is not None:
                return found
        return None

    def dense_matrices(self, arch: MlpTarget) -> tuple[str, ...]:
        return arch.truth.dense

    def truth_note(self, arch: Any) -> str | None:
        t = arch.truth
        if not t.stated():
            return ("No ground truth was given (target.truth states none): the metrics are the decomposition's own "
                    "(faithfulness, reconstruction, sparsity) and the plots.")
        parts = []
        if t.input_features:
            parts.append("one mechanism per input feature in row f of " + ", ".join(t.input_features))
        if t.output_features:
            parts.append("one mechanism per output feature in column f of " + ", ".join(t.output_features))
        if t.dense:
            parts.append("one dense mechanism each: " + ", ".join(t.dense))
        return "Ground truth (stated in the spec): " + "; ".join(parts) + "."

    def suggested_spec(self, arch: MlpTarget) -> str | None:
        return "specs/mlp.apd"

    def label(self, arch: MlpTarget) -> str:
        w = walk(arch.features, arch.network)
        return f"network {arch.features} -> {w.n_out}, {len(w.linears)} linear layers"

    def describe(self, arch: MlpTarget) -> str:
        w = walk(arch.features, arch.network)
        if w.problems:
            return f"mlp: features = {arch.features}"
        uses_of = w.by_name()

        def text(items) -> list[str]:
            out = []
            for x in items:
                if isinstance(x, Linear):
                    u = uses_of[x.name]
                    tags = [f"tied to {u.source.name}"] if u.source else []
                    tags += [x.init] if x.init != "default" else []
                    tags += ["frozen"] if x.frozen else []
                    tags += [] if x.bias else ["no bias"]
                    out.append(f"{u.name} {u.d_in}x{u.d_out}" + (f" ({', '.join(tags)})" if tags else ""))
                elif isinstance(x, Activation):
                    out.append(x.fn)
                else:
                    out.append("residual(" + " -> ".join(text(x.body)) + ")")
            return out

        return f"mlp: {arch.features} inputs -> " + " -> ".join(text(arch.network)) + f" -> {w.n_out} outputs"


def _truth_issues(arch: MlpTarget, w: Any, decomposed: list[str]) -> list[Issue]:
    issues: list[Issue] = []
    by_name = w.by_name()
    first = w.linears[0] if w.linears else None
    t = arch.truth
    stated: dict[str, str] = {}
    for fname in ("input_features", "output_features", "dense"):
        for i, name in enumerate(getattr(t, fname)):
            path = f"target.truth.{fname}[{i}]"
            u = by_name.get(name)
            if u is None:
                issues.append(Issue(path, f"no linear layer is named {name!r}", known_hint(name, list(by_name))))
                continue
            if name not in decomposed:
                issues.append(Issue(path, f"{name!r} is not decomposed: its ground truth has nothing to compare with",
                                    f"add it to decomposed, or drop it here", ("target.decomposed",)))
            if name in stated:
                issues.append(Issue(path, f"{name!r} is already stated in truth.{stated[name]}"))
                continue
            stated[name] = fname
            if fname == "input_features" and (u is not first or u.residual or u.d_in != arch.features):
                issues.append(Issue(path, f"{name!r} does not read the network's input: its rows are not the features",
                                    "input_features names the first layer (x @ W: row f of W is feature f)"))
            if fname == "output_features" and (not _writes_output(arch, u) or u.d_out != w.n_out
                                               or w.n_out != arch.features):
                issues.append(Issue(path, f"{name!r} does not write the network's output (with one output per "
                                          "feature): its columns are not the features",
                                    "output_features names the last layer (followed by activations only)"))
    return issues


def _writes_output(arch: MlpTarget, u: Any) -> bool:
    """True if `u` is the network's last top-level linear layer and no residual block follows it."""
    items = arch.network
    idx = next((i for i, x in enumerate(items) if isinstance(x, Linear) and x.name == u.name), None)
    return idx is not None and all(isinstance(x, Activation) for x in items[idx + 1:])


KINDS["mlp"] = MlpKind()

_M = ("mlp",)


def _needs(what: str, field_name: str):
    def requires(arch: Any):
        t = getattr(arch, "truth", None)
        if t is None or not getattr(t, field_name) and not (field_name == "input_features" and t.output_features):
            return f"{what} needs a ground truth: state target.truth.{field_name}", (f"target.truth.{field_name}",)
        return None
    return requires


declare_metric("feature_mmcs", "mean over the truth's feature matrices (input_features: rows, output_features: "
                               "columns) and features of the best cosine between a component's and the target's "
                               "row / column f (the TMS MMCS, paper eq. 3)", kinds=_M,
               requires=_needs("feature_mmcs", "input_features"))
declare_metric("feature_ml2r", "the norm ratio of those best-matching rows / columns (the TMS ML2R, paper eq. 4)",
               kinds=_M, requires=_needs("feature_ml2r", "input_features"))
declare_metric("feature_matched", "features whose best-matching component has cosine >= 0.99 in every feature matrix",
               kinds=_M, requires=_needs("feature_matched", "input_features"))

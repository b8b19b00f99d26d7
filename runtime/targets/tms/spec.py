"""TMS (toy model of superposition, APD paper §3.1): its spec dataclass, shapes, defaults and checks.

    y = ReLU(h_K W^T + b),  h_0 = x W,  h_k = h_{k-1} V_k   (W tied: the output layer reuses it)

Parameters (per replicate): "W" (F, H), "hidden.k" (H, H), "b" (F). Decomposed uses, in forward
order: "W" (x @ W), "hidden.k", "W.T" (h @ W^T, tied: no parameter of its own). The hidden layers
V_k are by default the SPD paper's frozen identity (TMS 5-2 + ID: x^ = ReLU(W^T I W x + b)), whose
ground truth is one dense mechanism; `hidden_weights = trained` makes them trained layers instead.

As a network in the layer vocabulary (`as_network`; a network of this form runs as this kind):

    [linear(W, H, bias = false), linear(hidden.k, H, bias = false, init = identity, frozen = true) ...,
     linear(W_T, tied = W, bias = BIAS), relu]
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...spec import CiTruth, Issue, KINDS, KindSpec, Layer, MAX_LAYERS, Target, declare_metric, declare_plot, setting
from ...spec.checks import in_choices, positive
from ...spec.import_rules import ImportRules, dims, layer_count, require
from ...spec.layers import PRESETS, Activation, Linear, NetworkView
from ...spec.registry import cosine, count_of, declare_ci_truth_metrics, non_negative

HIDDEN_WEIGHTS = ("identity", "trained")


@dataclass(frozen=True)
class TmsTarget(Target):
    """Toy model of superposition: y = ReLU(h_K W^T + b), h_0 = x W, h_k = h_{k-1} V_k (tied W)."""

    features: int = setting(5, "input features", paper="F (m1)", valid="> 0")
    hidden: int = setting(2, "hidden width", paper="H (m2)", valid="> 0")
    hidden_layers: int = setting(0, "extra linear H x H layers K", max=MAX_LAYERS, valid=f">= 0, <= {MAX_LAYERS}")
    hidden_weights: str = setting("identity", "the hidden layers: a frozen identity (the SPD paper's TMS + ID), or "
                                              "trained from a xavier-normal init", choices=HIDDEN_WEIGHTS)
    bias: bool = setting(True, "train the output bias b")
    kind: str = field(default="tms", init=False)


def _arch(params: dict, options: dict) -> TmsTarget:
    F, H = dims(require(params, "W", "tms", IMPORT), 2, "W")
    K = layer_count(params, "hidden.", "")
    identity = all(np.array_equal(params[f"hidden.{k}"], np.broadcast_to(np.eye(H), params[f"hidden.{k}"].shape))
                   for k in range(K) if params[f"hidden.{k}"].shape[-2:] == (H, H))
    return TmsTarget(features=F, hidden=H, hidden_layers=K, hidden_weights="identity" if identity else "trained",
                     bias="b" in params)


IMPORT = ImportRules(
    names={"W": ("W", "linear1.weight"), "hidden.{l}": ("hidden.{l}", "hidden_layers.{l}.weight"), "b": ("b", "b_final")},
    arch=_arch,
    function="y = ReLU(x W W^T + b), its output layer the transpose of its input layer (tied)",
    tied={"linear2.weight": ("W", "a TMS target's output layer is the transpose of its input layer (tied), so they "
                                  "must hold the same matrix")},
)


class TmsKind(KindSpec):
    name = "tms"
    cls = TmsTarget
    doc = "toy model of superposition: y = ReLU(x W W^T + b) (paper §3.1)"
    labels = ("identity",)
    labels_hint = "a TMS target reconstructs its input; labels must be identity, got {labels!r}"
    importer = IMPORT

    def matrices(self, arch: TmsTarget) -> tuple[Layer, ...]:
        F, H = arch.features, arch.hidden
        ls = [Layer("W", "W", False, F, H)]
        ls += [Layer(f"hidden.{k}", f"hidden.{k}", False, H, H) for k in range(arch.hidden_layers)]
        ls.append(Layer("W.T", "W", True, H, F))
        return tuple(ls)

    def param_shapes(self, arch: TmsTarget):
        F, H = arch.features, arch.hidden
        req, opt = {"W": (F, H)}, {}
        (req if arch.bias else opt)["b"] = (F,)  # the model makes a zero bias either way
        req.update({f"hidden.{k}": (H, H) for k in range(arch.hidden_layers)})
        return req, opt

    def layer_count(self, arch: TmsTarget):
        return "hidden_layers", arch.hidden_layers

    def decompose_defaults(self, arch: TmsTarget, method: str) -> dict:
        return {"rank": min(arch.features, arch.hidden) + 1}  # the reference's APD default (notes §3.1)

    def issues(self, arch: TmsTarget) -> list[Issue]:
        issues: list[Issue] = []
        for f in ("features", "hidden"):
            positive(f"target.{f}", getattr(arch, f), issues)
        positive("target.hidden_layers", arch.hidden_layers, issues, strict=False)
        in_choices("target.hidden_weights", arch.hidden_weights, HIDDEN_WEIGHTS, issues)
        return issues

    def ci_truth(self, arch: TmsTarget) -> tuple[CiTruth, ...]:
        """W and W^T: every feature its own subcomponent; a frozen hidden identity: H subcomponents
        carry every input together (trained hidden layers: no ground truth)."""
        dense = tuple(CiTruth("dense", (name,), k=arch.hidden) for name in self.dense_matrices(arch))
        return (CiTruth("identity", ("W",)), CiTruth("identity", ("W.T",))) + dense

    def dense_matrices(self, arch: TmsTarget) -> tuple[str, ...]:
        if arch.hidden_weights != "identity":
            return ()
        return tuple(f"hidden.{k}" for k in range(arch.hidden_layers))

    def truth_note(self, arch: TmsTarget) -> str | None:
        if not self.dense_matrices(arch):
            return None
        return ("Ground truth: one mechanism per feature in row f of W and column f of W^T (mmcs, ml2r); the frozen "
                "hidden identity is one dense mechanism (dense_share, dense_error).")

    def suggested_spec(self, arch: TmsTarget) -> str | None:
        if arch.hidden_layers:
            return None
        return {(5, 2): "specs/tms_5_2.apd", (40, 10): "specs/tms_40_10_paper.apd"}.get((arch.features, arch.hidden))

    def label(self, arch: TmsTarget) -> str:
        extra = ""
        if arch.hidden_layers:
            what = "ID" if arch.hidden_weights == "identity" else "hidden"
            extra = f" + {what}" if arch.hidden_layers == 1 else f" + {arch.hidden_layers} {what}"
        return f"TMS {arch.features}-{arch.hidden}{extra}"

    def finish_seconds(self, arch: TmsTarget) -> float:
        return 2.0 + 0.12 * arch.features  # measured: TMS 5-2 ~3 s, 40-10 ~7 s

    def describe(self, arch: TmsTarget) -> str:
        hidden = f" ({arch.hidden_weights})" if arch.hidden_layers else ""
        return (f"tms: features F = {arch.features}, hidden H = {arch.hidden}, hidden_layers = {arch.hidden_layers}"
                f"{hidden}, bias = {str(arch.bias).lower()}")


KINDS["tms"] = TmsKind()


# ------------------------------------------------------------------------------------------
# TMS as a network in the layer vocabulary


def as_network(arch: TmsTarget) -> tuple[int, tuple, tuple[str, ...] | None]:
    """(features, network, decomposed) of a TMS target written in the layer vocabulary (its preset form)."""
    H = arch.hidden
    identity = arch.hidden_weights == "identity"
    hidden = tuple(Linear(f"hidden.{k}", H, bias=False, init="identity" if identity else "default", frozen=identity)
                   for k in range(arch.hidden_layers))
    return arch.features, (Linear("W", H, bias=False), *hidden, Linear("W_T", tied="W", bias=arch.bias),
                           Activation("relu")), None


def recognise(net: NetworkView) -> TmsTarget | None:
    """The TMS a network is: x W, then K square bias-free layers (all frozen identities or all
    trained from the default init), then W^T (tied, with or without bias), then relu; every matrix
    decomposed; its stated ground truth within the TMS's (W's rows, W^T's columns, the identities)."""
    items = net.flat()
    if len(items) < 3 or not isinstance(items[-1], Activation) or items[-1].fn != "relu":
        return None
    layers = items[:-1]
    if not all(isinstance(x, Linear) for x in layers):
        return None
    first, *hidden, last = layers
    if first.bias or first.tied or first.init != "default" or first.frozen:
        return None
    if last.tied != first.name:
        return None
    H = net.use(first).d_out
    kinds = {(h.init, h.frozen) for h in hidden}
    if kinds - {("identity", True), ("default", False)} or len(kinds) > 1:
        return None
    if any(h.bias or h.tied or net.use(h).d_out != H for h in hidden):
        return None
    identity = kinds == {("identity", True)}
    if not net.all_decomposed() or not net.truth_within(
            (first.name,), (last.name,), tuple(h.name for h in hidden) if identity else ()):
        return None
    return TmsTarget(features=net.features, hidden=H, hidden_layers=len(hidden),
                     hidden_weights="identity" if identity or not hidden else "trained", bias=last.bias)


PRESETS["tms"] = recognise

declare_metric("mmcs", "mean max cosine similarity between component rows and target rows (paper eq. 3)", kinds=("tms",),
               bounds=cosine)
declare_metric("ml2r", "mean L2 ratio of the best-matching component rows (paper eq. 4)", kinds=("tms",),
               bounds=non_negative)
declare_metric("matched_rows", "target rows whose best-matching component row has cosine >= 0.99 (MMCS counted; "
                               "the other rows are split or shared)", kinds=("tms",),
               bounds=count_of("target rows (features)", lambda exp, arch: arch.features))

declare_metric("ci_error", "per feature, sum over subcomponents of |g - ground truth| on its one-hot input (x_f = "
                           "0.75; truth 1 for the feature's best-matching subcomponent, 0 elsewhere), mean over features "
                           "and the matrices W, W^T", kinds=("tms",), importance="causal")


def _polygons_need_2d(arch: TmsTarget):
    if arch.hidden != 2:
        return "the polygons plot needs a 2-D hidden layer (hidden = 2)", ("target.hidden",)
    return None


declare_plot("polygons", "Fig. 3: 2-D feature directions of target, sum and components (hidden = 2)", kinds=("tms",),
             requires=_polygons_need_2d)

declare_ci_truth_metrics("tms", dense=True)  # dense: a frozen hidden identity

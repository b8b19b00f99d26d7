"""The deep linear network: its spec dataclass, shapes, defaults, checks and ground-truth metrics.

    h_0 = x,  h_l = h_{l-1} W_l (l = 1..L),  y = h_L      (no bias, no nonlinearity)

Parameters (per replicate): "layers.l.W" (d, d), l = 0..L-1. Every layer starts at the identity
(plus `init_noise`) and is trained to reproduce sparse inputs (labels y = x), so the layers stay
(near) the identity: in every layer, input dimension f is carried by the rank-one piece e_f e_f^T.
That is the ground truth (`recovered_features` and the per-layer MMCS / ML2R, analysis.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...spec import CiTruth, Issue, KINDS, KindSpec, Layer, MAX_LAYERS, Target, declare_metric, setting
from ...spec.registry import declare_ci_truth_metrics
from ...spec.checks import positive
from ...spec.layers import PRESETS, Linear, NetworkView
from ...spec.registry import cosine, count_of, non_negative


@dataclass(frozen=True)
class DeepLinearTarget(Target):
    """A deep linear network of `layers` square `features` x `features` layers, identity-initialised."""

    features: int = setting(5, "input features: the width d of every layer", paper="d", valid="> 0")
    layers: int = setting(3, "linear layers L", max=MAX_LAYERS, valid=f"> 0, <= {MAX_LAYERS}")
    init_noise: float = setting(0.0, "std of the Gaussian noise added to each layer's identity init", valid=">= 0")
    kind: str = field(default="deep_linear", init=False)


class DeepLinearKind(KindSpec):
    name = "deep_linear"
    cls = DeepLinearTarget
    doc = "deep linear network: y = x W_1 ... W_L, identity-initialised square layers (ground truth: e_f e_f^T per layer)"
    labels = ("identity",)
    labels_hint = "a deep linear network reproduces its input; labels must be identity, got {labels!r}"

    def matrices(self, arch: DeepLinearTarget) -> tuple[Layer, ...]:
        d = arch.features
        return tuple(Layer(f"layers.{l}.W", f"layers.{l}.W", False, d, d) for l in range(arch.layers))

    def param_shapes(self, arch: DeepLinearTarget):
        return {f"layers.{l}.W": (arch.features, arch.features) for l in range(arch.layers)}, {}

    def layer_count(self, arch: DeepLinearTarget):
        return "layers", arch.layers

    def ci_truth(self, arch: DeepLinearTarget) -> tuple[CiTruth, ...]:
        """Every layer: every feature its own subcomponent."""
        return tuple(CiTruth("identity", (m.name,)) for m in self.matrices(arch))

    def decompose_defaults(self, arch: DeepLinearTarget, method: str) -> dict:
        return {"rank": 1}  # the ground-truth components are rank one in every layer

    def issues(self, arch: DeepLinearTarget) -> list[Issue]:
        issues: list[Issue] = []
        positive("target.features", arch.features, issues)
        positive("target.layers", arch.layers, issues)
        positive("target.init_noise", arch.init_noise, issues, strict=False)
        return issues

    def label(self, arch: DeepLinearTarget) -> str:
        return f"deep linear {arch.features} x {arch.layers}"

    def describe(self, arch: DeepLinearTarget) -> str:
        return f"deep_linear: {arch.layers} layers of {arch.features} x {arch.features}, init noise {arch.init_noise:g}"


KINDS["deep_linear"] = DeepLinearKind()


def as_network(arch: DeepLinearTarget) -> tuple[int, tuple, tuple[str, ...] | None]:
    """(features, network, decomposed) of a deep linear network in the layer vocabulary (init_noise 0: its
    network form has no noise)."""
    d = arch.features
    return d, tuple(Linear(f"layers.{l}.W", d, bias=False, init="identity") for l in range(arch.layers)), None


def recognise(net: NetworkView) -> DeepLinearTarget | None:
    """A chain of square, bias-free, trained layers that start at the identity, nothing else, all
    decomposed, no stated truth (the kind measures its own)."""
    items = net.flat()
    if not items or not all(isinstance(x, Linear) for x in items):
        return None
    d = net.features
    if any(x.bias or x.tied or x.frozen or x.init != "identity" or net.use(x).d_out != d for x in items):
        return None
    if not net.all_decomposed() or net.truth.stated():
        return None
    return DeepLinearTarget(features=d, layers=len(items))


PRESETS["deep_linear"] = recognise

_D = ("deep_linear",)
declare_metric("layer_mmcs", "mean over layers of MMCS: for each layer and input dimension f, the best cosine between "
                             "a component's row f and the layer's row f", kinds=_D, bounds=cosine)
declare_metric("layer_ml2r", "mean over layers of ML2R: the norm ratio of those best-matching rows", kinds=_D,
               bounds=non_negative)
declare_metric("recovered_features", "input dimensions matched (cosine >= 0.99) in every layer, by one component "
                                     "across the layers where components span layers (APD), else by one per layer",
               kinds=_D, bounds=count_of("input dimensions", lambda exp, arch: arch.features))

declare_ci_truth_metrics("deep_linear", dense=False)

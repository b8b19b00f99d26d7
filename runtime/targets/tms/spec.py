"""TMS (toy model of superposition, APD paper §3.1): its spec dataclass, shapes, defaults and checks.

    y = ReLU(h_K W^T + b),  h_0 = x W,  h_k = h_{k-1} V_k   (W tied: the output layer reuses it)

Parameters (per replicate): "W" (F, H), "hidden.k" (H, H), "b" (F). Decomposed uses, in forward
order: "W" (x @ W), "hidden.k", "W.T" (h @ W^T, tied: no parameter of its own).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...spec import CiTruth, Issue, KINDS, KindSpec, Layer, MAX_LAYERS, Target, declare_metric, declare_plot, setting
from ...spec.registry import declare_ci_truth_metrics
from ...spec.checks import positive
from ...spec.import_rules import ImportRules, dims, layer_count, require
from ...spec.registry import cosine, count_of, non_negative


@dataclass(frozen=True)
class TmsTarget(Target):
    """Toy model of superposition: y = ReLU(h_K W^T + b), h_0 = x W, h_k = h_{k-1} V_k (tied W)."""

    features: int = setting(5, "input features", paper="F (m1)", valid="> 0")
    hidden: int = setting(2, "hidden width", paper="H (m2)", valid="> 0")
    hidden_layers: int = setting(0, "extra linear H x H layers K", max=MAX_LAYERS, valid=f">= 0, <= {MAX_LAYERS}")
    bias: bool = setting(True, "train the output bias b")
    kind: str = field(default="tms", init=False)


def _arch(params: dict, options: dict) -> TmsTarget:
    F, H = dims(require(params, "W", "tms", IMPORT), 2, "W")
    return TmsTarget(features=F, hidden=H, hidden_layers=layer_count(params, "hidden.", ""), bias="b" in params)


IMPORT = ImportRules(
    names={"W": ("W", "linear1.weight"), "hidden.{l}": ("hidden.{l}", "hidden_layers.{l}.weight"), "b": ("b", "b_final")},
    arch=_arch,
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
        return issues

    def ci_truth(self, arch: TmsTarget) -> tuple[CiTruth, ...]:
        """W and W^T: every feature its own subcomponent (hidden layers: trained, no ground truth)."""
        return (CiTruth("identity", ("W",)), CiTruth("identity", ("W.T",)))

    def suggested_spec(self, arch: TmsTarget) -> str | None:
        if arch.hidden_layers:
            return None
        return {(5, 2): "specs/tms_5_2.apd", (40, 10): "specs/tms_40_10_paper.apd"}.get((arch.features, arch.hidden))

    def label(self, arch: TmsTarget) -> str:
        extra = f" + {arch.hidden_layers} hidden" if arch.hidden_layers else ""
        return f"TMS {arch.features}-{arch.hidden}{extra}"

    def finish_seconds(self, arch: TmsTarget) -> float:
        return 2.0 + 0.12 * arch.features  # measured: TMS 5-2 ~3 s, 40-10 ~7 s

    def describe(self, arch: TmsTarget) -> str:
        return (f"tms: features F = {arch.features}, hidden H = {arch.hidden}, hidden_layers = {arch.hidden_layers}, "
                f"bias = {str(arch.bias).lower()}")


KINDS["tms"] = TmsKind()

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

declare_ci_truth_metrics("tms", dense=False)

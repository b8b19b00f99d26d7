"""The residual MLP of compressed computation (APD paper §3.2-3.3): spec dataclass, shapes, defaults, checks.

A residual network (spec/networks.py) with a fixed unit-norm embedding W_E (F x D), W_U = W_E^T,
and `layers` MLPs of d_mlp neurons; trained so that y_i = x_i + act(c_i x_i) (act_plus_resid).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...spec import CiTruth, Issue, KINDS, KindSpec, MAX_LAYERS, Target, declare_metric, declare_plot, setting
from ...spec.registry import declare_ci_truth_metrics
from ...spec.checks import in_choices, positive
from ...spec.import_rules import ImportRules, dims, layer_count, require
from ...spec.layers import PRESETS, Activation, Linear, NetworkView, Residual
from ...spec.networks import residual_matrices, residual_shapes
from ...spec.registry import count_of, non_negative


@dataclass(frozen=True)
class ResidMlpTarget(Target):
    """Residual MLP (compressed computation): fixed unit-norm embedding W_E, W_U = W_E^T."""

    features: int = setting(100, "input features", paper="F", valid="> 0")
    d_embed: int = setting(1000, "residual width", paper="D", valid="> 0")
    d_mlp: int = setting(50, "MLP neurons per layer", valid="> 0")
    layers: int = setting(1, "MLP layers", max=MAX_LAYERS, valid=f"> 0, <= {MAX_LAYERS}")
    activation: str = setting("relu", "MLP nonlinearity (also used in the labels)", choices=("relu", "gelu"))
    in_bias: bool = setting(False, "bias before the nonlinearity")
    out_bias: bool = setting(False, "bias after the MLP output")
    embedding: str = setting("random", "fixed W_E: random unit-norm rows, or identity", choices=("random", "identity"),
                             valid="identity needs features = d_embed")
    init_scale: float = setting(1.0, "scale of the MLP weight init", valid="> 0")
    output_activation: bool = setting(False, "apply the nonlinearity to the output")
    kind: str = field(default="resid_mlp", init=False)


def _arch(params: dict, options: dict) -> ResidMlpTarget:
    F, D = dims(require(params, "W_E", "resid_mlp", IMPORT), 2, "W_E")
    layers = layer_count(params, "layers.", ".W_in")
    if layers == 0:
        raise ValueError("a resid_mlp target needs layers.0.W_in (source name: layers.0.mlp_in.weight)")
    d_mlp = dims(params["layers.0.W_in"], 2, "layers.0.W_in")[1]
    act = options.get("activation") or "relu"
    if act not in ("relu", "gelu"):
        raise ValueError(f"a resid_mlp target's activation is relu or gelu, got --activation {act!r}")
    if options.get("output_activation"):
        raise ValueError("--output-activation applies to --kind mlp; a resid_mlp's output activation is its own")
    return ResidMlpTarget(features=F, d_embed=D, d_mlp=d_mlp, layers=layers, activation=act,
                          in_bias=any(".b_in" in k for k in params), out_bias=any(".b_out" in k for k in params))


IMPORT = ImportRules(
    names={
        "W_E": ("W_E",),
        "W_U": ("W_U",),
        "layers.{l}.W_in": ("layers.{l}.W_in", "layers.{l}.mlp_in.weight"),
        "layers.{l}.b_in": ("layers.{l}.b_in", "layers.{l}.bias1", "layers.{l}.mlp_in.bias"),
        "layers.{l}.W_out": ("layers.{l}.W_out", "layers.{l}.mlp_out.weight"),
        "layers.{l}.b_out": ("layers.{l}.b_out", "layers.{l}.bias2", "layers.{l}.mlp_out.bias"),
    },
    arch=_arch,
    function="y = (r + MLP(r)) W_U with r = x W_E: a residual stream that adds the MLP's output to its input",
    derived={"W_U": ("W_E transposed (the original ties W_U = W_E^T)",
                     lambda p: np.swapaxes(p["W_E"], -1, -2).copy())},
)


class ResidMlpKind(KindSpec):
    name = "resid_mlp"
    cls = ResidMlpTarget
    doc = "residual MLP (compressed computation, paper §3.2-3.3)"
    labels = ("act_plus_resid", "abs")
    labels_hint = "a residual MLP target needs act_plus_resid or abs labels"
    label_coefficients = True
    importer = IMPORT

    def matrices(self, arch: ResidMlpTarget):
        return residual_matrices(arch.d_embed, arch.d_mlp, arch.layers)

    def param_shapes(self, arch: ResidMlpTarget):
        return residual_shapes(arch.features, arch.features, arch.d_embed, arch.d_mlp, arch.layers,
                               arch.in_bias, arch.out_bias), {}

    def layer_count(self, arch: ResidMlpTarget):
        return "layers", arch.layers

    def default_values(self, arch: ResidMlpTarget):
        return (-1.0, 1.0)

    def ci_truth(self, arch: ResidMlpTarget) -> tuple[CiTruth, ...]:
        """W_in of every layer together: every feature its own subcomponent (in the layer that computes
        it); each W_out: one dense block of d_mlp subcomponents (SPD paper Fig. 8; VPD notes §6)."""
        names = [m.name for m in residual_matrices(arch.d_embed, arch.d_mlp, arch.layers)]
        return ((CiTruth("identity", tuple(n for n in names if n.endswith(".W_in"))),)
                + tuple(CiTruth("dense", (n,), arch.d_mlp) for n in names if n.endswith(".W_out")))

    def bars(self, arch: ResidMlpTarget) -> tuple[tuple[str, str, float], ...]:
        """95 % of the features dedicated (the SPD paper's 100 of 100 for the 1-layer model, with slack)."""
        return (("dedicated_features", ">=", 0.95 * arch.features),)

    def decompose_defaults(self, arch: ResidMlpTarget, method: str) -> dict:
        # APD: the reference's rank min(d_embed, d_mlp) and xavier gain 2 (notes §3.2)
        return {"rank": min(arch.d_embed, arch.d_mlp), **({"init_scale": 2.0} if method == "apd" else {})}

    def issues(self, arch: ResidMlpTarget) -> list[Issue]:
        issues: list[Issue] = []
        for f in ("features", "d_embed", "d_mlp", "layers"):
            positive(f"target.{f}", getattr(arch, f), issues)
        in_choices("target.activation", arch.activation, ("relu", "gelu"), issues)
        in_choices("target.embedding", arch.embedding, ("random", "identity"), issues)
        positive("target.init_scale", arch.init_scale, issues)
        if arch.embedding == "identity" and arch.features != arch.d_embed:
            issues.append(Issue("target.embedding", "an identity embedding needs features == d_embed",
                                f"features = {arch.features}, d_embed = {arch.d_embed}", ("target.features",)))
        return issues

    def suggested_spec(self, arch: ResidMlpTarget) -> str | None:
        if (arch.features, arch.d_embed) != (100, 1000):
            return None
        return {(50, 1): "specs/resid_mlp_1l.apd", (25, 2): "specs/resid_mlp_2l.apd"}.get((arch.d_mlp, arch.layers))

    def label(self, arch: ResidMlpTarget) -> str:
        return f"residual MLP, {arch.layers} layer{'s' if arch.layers > 1 else ''}, {arch.features} features"

    def finish_seconds(self, arch: ResidMlpTarget) -> float:
        return 5.0 + 10.0 * arch.layers  # measured: 1 layer ~15 s, 2 layers ~30 s (C 200)

    def describe(self, arch: ResidMlpTarget) -> str:
        return (f"resid_mlp: features = {arch.features}, d_embed = {arch.d_embed}, d_mlp = {arch.d_mlp}, "
                f"layers = {arch.layers}, {arch.activation}")


KINDS["resid_mlp"] = ResidMlpKind()


# ------------------------------------------------------------------------------------------
# The residual MLP as a network in the layer vocabulary


def as_network(arch: ResidMlpTarget) -> tuple[int, tuple, tuple[str, ...] | None]:
    """(features, network, decomposed) of a residual MLP written in the layer vocabulary (its preset form):
    a frozen embedding, one residual block per layer, the tied unembedding. Its init_scale has no
    network form (the vocabulary's default init is the kind's with init_scale 1)."""
    D, act = arch.d_embed, arch.activation
    embed = "identity" if arch.embedding == "identity" else "unit_rows"
    blocks = tuple(Residual((Linear(f"layers.{l}.W_in", arch.d_mlp, bias=arch.in_bias), Activation(act),
                             Linear(f"layers.{l}.W_out", bias=arch.out_bias))) for l in range(arch.layers))
    out = (Activation(act),) if arch.output_activation else ()
    return arch.features, (Linear("W_E", D, bias=False, init=embed, frozen=True), *blocks,
                           Linear("W_U", tied="W_E", bias=False), *out), ("layers.*",)


def recognise(net: NetworkView) -> ResidMlpTarget | None:
    """The residual MLP a network is: a frozen bias-free embedding (unit_rows: random; identity),
    L residual blocks linear(d_mlp) -> relu / gelu -> linear, all alike, W_U tied to the embedding,
    then nothing or the same activation; exactly the blocks' matrices decomposed; no stated truth
    (the kind measures its own)."""
    items = net.flat()
    if len(items) < 3 or not isinstance(items[0], Linear):
        return None
    embed, rest = items[0], items[1:]
    if embed.bias or embed.tied or not embed.frozen or embed.init not in ("unit_rows", "identity"):
        return None
    blocks = []
    while rest and isinstance(rest[0], Residual):
        blocks.append(rest.pop(0))
    if not blocks or not rest or not isinstance(rest[0], Linear):
        return None
    unembed, tail = rest[0], rest[1:]
    if unembed.tied != embed.name or unembed.bias:
        return None
    shapes = set()
    for b in blocks:
        body = [x for x in b.body if not (isinstance(x, Activation) and x.fn == "identity")]
        if len(body) != 3 or not isinstance(body[0], Linear) or not isinstance(body[1], Activation) \
                or not isinstance(body[2], Linear) or body[1].fn not in ("relu", "gelu"):
            return None
        w_in, w_out = body[0], body[2]
        if any(x.tied or x.frozen or x.init != "default" for x in (w_in, w_out)):
            return None
        shapes.add((net.use(w_in).d_out, body[1].fn, w_in.bias, w_out.bias))
    if len(shapes) != 1:
        return None
    (d_mlp, act, in_bias, out_bias), = shapes
    if len(tail) > 1 or (tail and (not isinstance(tail[0], Activation) or tail[0].fn != act)):
        return None
    mlp = {x.name for b in blocks for x in b.body if isinstance(x, Linear)}
    if set(net.decomposed) != mlp or net.truth.stated():
        return None
    D = net.use(embed).d_out
    embedding = "identity" if embed.init == "identity" else "random"
    return ResidMlpTarget(features=net.features, d_embed=D, d_mlp=d_mlp, layers=len(blocks), activation=act,
                          in_bias=in_bias, out_bias=out_bias, embedding=embedding, output_activation=bool(tail))


PRESETS["resid_mlp"] = recognise

_R = ("resid_mlp",)
_FEATURES = count_of("features", lambda exp, arch: arch.features)
# APD's components span the layers; SPD's are per matrix, its categories count every layer's W_in
_COMPONENTS = count_of("components (at most C per layer)", lambda exp, arch: exp.decompose.components * arch.layers)
for _name, _doc, _methods, _bounds in (
    ("dedicated_features", "features with a component that represents only them", None, _FEATURES),
    ("mono_components", "components representing exactly one feature", None, _COMPONENTS),
    ("duo_components", "components representing exactly two features", None, _COMPONENTS),
    ("poly_components", "components representing more than two features", None, _COMPONENTS),
    ("scrubbed_loss", "mean MSE with the active features' components forced on", None, non_negative),
    ("anti_scrubbed_loss", "mean MSE with the active features' components forced off", None, non_negative),
    ("random_loss", "mean MSE with random half of the components on", None, non_negative),
    ("scrub_ratio", "anti_scrubbed_loss / scrubbed_loss", None, non_negative),
    ("canonical_scrubbed_loss", "scrubbed loss of the target's one-feature-per-component decomposition (1 layer)", None,
     non_negative),
    ("canonical_anti_scrubbed_loss", "anti-scrubbed loss of the target's one-feature-per-component decomposition "
                                     "(1 layer)", None, non_negative),
    ("canonical_scrub_ratio", "canonical_anti_scrubbed_loss / canonical_scrubbed_loss: the yardstick for scrub_ratio",
     None, non_negative),
    ("per_feature_loss_top1", "mean per-feature MSE with per-sample top-1", ("apd",), non_negative),
    ("per_feature_loss_topk", "mean per-feature MSE with batch top-k", ("apd",), non_negative),
    ("active_per_feature", "mean number of active components per single feature", ("apd",), non_negative),
):
    declare_metric(_name, _doc, kinds=_R, methods=_methods, bounds=_bounds)

for _name, _doc, _methods in (
    ("neuron_contributions", "Figs. 6, 10: neuron contributions, target vs component", None),
    ("feature_response", "Figs. 7, 24: feature response with scrubbed subnets", None),
    ("scrub_histogram", "Figs. 8, 25: ablation loss histograms", None),
    ("target_response", "Figs. 14-15, 19-20: target model responses", None),
    ("per_feature_loss", "Figs. 16-17, 21-22: per-feature losses, top-1 vs batch top-k", ("apd",)),
    ("active_components", "Figs. 18, 23: active components per feature", ("apd",)),
    ("component_categories", "dead / mono / duo / poly components", None),
):
    declare_plot(_name, _doc, kinds=_R, methods=_methods)

declare_ci_truth_metrics("resid_mlp", dense=True)

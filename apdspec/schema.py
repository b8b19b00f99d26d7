"""The closed schema of the language: every block, key, value kind and call form.

Language paths mirror `runtime.spec` field paths (decompose.loss.simplicity), with one exception:
target training is written inside the target block (target tms { train { ... } }) but is
`Experiment.train` in the runtime. Defaults are never repeated here: they come from the runtime
dataclasses (`runtime.spec` is the contract). `valid` strings document the ranges that
`runtime.spec.validate()` enforces (a test probes them against validate()).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from runtime import spec as S

from .values import Bool, Enum, Float, Groups, Int, Key, Kind, Names, Optional, Range


@dataclass(frozen=True)
class Form:
    """A call such as adam(lr = 3e-2) or schatten(0.7, p = 1): fixed settings plus arguments.

    Field names are relative to the object the form builds (object forms), or to the object that
    holds the field (field forms, which set sibling fields, e.g. simplicity and simplicity_p)."""

    fixed: dict[str, Any] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    keywords: dict[str, str] = field(default_factory=dict)  # argument name -> field name
    required: int = 0  # leading positional arguments that must be given


@dataclass(frozen=True)
class Leaf:
    kind: Kind
    doc: str
    forms: dict[str, Form] = field(default_factory=dict)
    paper: str = ""  # paper symbol / equation
    valid: str = ""  # the range runtime.spec.validate() enforces, for the docs ("> 0", "[0, 1)")
    method: str = ""  # the decomposition method that reads it: "apd", "spd", or "" (both)


@dataclass(frozen=True)
class Obj:
    cls: type
    fields: dict[str, Union[Leaf, "Obj"]]
    doc: str = ""
    forms: dict[str, Form] = field(default_factory=dict)  # call forms that replace the whole object
    optional: bool = False  # `= none` allowed
    rt: str | None = None  # absolute runtime path, when it differs from the language path
    method: str = ""  # the decomposition method that reads it: "apd", "spd", or "" (both)


Node = Union[Leaf, Obj]


def _opt_forms(name_field: str, names: tuple[str, ...], keywords: dict[str, str], positional=()) -> dict[str, Form]:
    return {n: Form(fixed={name_field: n}, keywords=keywords, positional=positional) for n in names}


OPTIMIZER_KW = {k: k for k in ("lr", "weight_decay", "beta1", "beta2", "eps")}


def optimizer(doc: str) -> Obj:
    return Obj(
        S.Optimizer,
        {
            "name": Leaf(Enum("adam", "adamw"), "adam, or adamw (decoupled weight decay)"),
            "lr": Leaf(Float(), "learning rate (peak, after warmup)", valid="> 0"),
            "weight_decay": Leaf(Float(), "decoupled weight decay (adamw)", valid=">= 0"),
            "beta1": Leaf(Float(), "Adam beta1", valid="[0, 1)"),
            "beta2": Leaf(Float(), "Adam beta2", valid="[0, 1)"),
            "eps": Leaf(Float(), "Adam epsilon", valid="> 0"),
        },
        doc,
        forms=_opt_forms("name", ("adam", "adamw"), OPTIMIZER_KW, positional=("lr",)),
    )


def schedule(doc: str) -> Obj:
    forms = _opt_forms("kind", ("constant", "linear", "cosine"), {"warmup": "warmup"})
    forms["exponential"] = Form(fixed={"kind": "exponential"}, keywords={"warmup": "warmup", "halflife": "halflife"})
    return Obj(
        S.Schedule,
        {
            "kind": Leaf(Enum("constant", "linear", "cosine", "exponential"), "LR multiplier after warmup (notes §6)"),
            "warmup": Leaf(Float(), "fraction of the steps with linear warmup from 0, e.g. 5%", valid="[0, 1]"),
            "halflife": Leaf(Optional(Float()), "half-life in steps (exponential only)",
                             valid="> 0; required by exponential"),
        },
        doc,
        forms=forms,
    )


# validate() and the architecture build one entry per layer: bound layer counts before they run.
MAX_LAYERS = 1000

TRAIN = Obj(
    S.Training,
    {
        "steps": Leaf(Int(), "optimiser steps", valid="> 0"),
        "batch": Leaf(Int(), "batch size", valid="> 0"),
        "optimizer": optimizer("optimiser: adam(...) or adamw(...)"),
        "schedule": schedule("learning-rate schedule"),
        "seed": Leaf(Optional(Int()), "seed of target init and data; none = the experiment seed"),
        "labels": Leaf(Optional(Enum("identity", "act_plus_resid", "abs")),
                       "identity (TMS), act_plus_resid (y = x + act(x)), abs; none = per target kind",
                       valid="identity for tms; not identity for resid_mlp"),
        "label_coeffs": Leaf(Enum("ones", "uniform"), "label coefficients c_i: ones, or uniform in [1, 2)"),
        "label_seed": Leaf(Int(), "seed of uniform label coefficients"),
        "importance": Leaf(Float(), "feature i is weighted importance^i"),
        "log_every": Leaf(Int(), "steps between log lines", valid="> 0"),
    },
    "how the target network is trained (TMS and residual MLP)",
    rt="train",
)

TARGETS: dict[str, Obj] = {
    "tms": Obj(
        S.TmsTarget,
        {
            "features": Leaf(Int(), "input features", paper="F (m1)", valid="> 0"),
            "hidden": Leaf(Int(), "hidden width", paper="H (m2)", valid="> 0"),
            "hidden_layers": Leaf(Int(MAX_LAYERS), "extra linear H x H layers K", valid=f">= 0, <= {MAX_LAYERS}"),
            "bias": Leaf(Bool(), "train the output bias b"),
            "train": TRAIN,
        },
        "toy model of superposition: y = ReLU(x W W^T + b) (paper §3.1)",
    ),
    "resid_mlp": Obj(
        S.ResidMlpTarget,
        {
            "features": Leaf(Int(), "input features", paper="F", valid="> 0"),
            "d_embed": Leaf(Int(), "residual width", paper="D", valid="> 0"),
            "d_mlp": Leaf(Int(), "MLP neurons per layer", valid="> 0"),
            "layers": Leaf(Int(MAX_LAYERS), "MLP layers", valid=f"> 0, <= {MAX_LAYERS}"),
            "activation": Leaf(Enum("relu", "gelu"), "MLP nonlinearity (also used in the labels)"),
            "in_bias": Leaf(Bool(), "bias before the nonlinearity"),
            "out_bias": Leaf(Bool(), "bias after the MLP output"),
            "embedding": Leaf(Enum("random", "identity"), "fixed W_E: random unit-norm rows, or identity",
                              valid="identity needs features = d_embed"),
            "init_scale": Leaf(Float(), "scale of the MLP weight init", valid="> 0"),
            "output_activation": Leaf(Bool(), "apply the nonlinearity to the output"),
            "train": TRAIN,
        },
        "residual MLP (compressed computation, paper §3.2-3.3)",
    ),
    "gated": Obj(
        S.GatedTarget,
        {
            "functions": Leaf(Int(), "gated functions", valid="> 0"),
            "neurons": Leaf(Int(), "ReLU neurons per function", valid=">= 2"),
            "layers": Leaf(Int(MAX_LAYERS), "MLP layers the neurons are split over",
                           valid=f"> 0, <= {MAX_LAYERS}, divides functions x neurons"),
            "input_range": Leaf(Range(), "range of x", valid="low < high"),
            "amplitude_range": Leaf(Range(), "range of a, d, g in F_i", valid="low < high"),
            "frequency_range": Leaf(Range(), "range of b, e in F_i", valid="low < high"),
            "phase_range": Leaf(Range(), "range of c, f in F_i", valid="low < high"),
            "simple_bias": Leaf(Bool(), "the simple-bias gating variant"),
            "seed": Leaf(Optional(Int()), "seed of the trig coefficients; none = the experiment seed"),
        },
        "hand-coded gated-function network (paper App. B.1); not trained",
    ),
    "file": Obj(S.FileTarget, {}, 'a target saved by `apdspec run`: target file("runs/x/target.npz")'),
}

TOPK = Obj(
    S.TopK,
    {
        "mode": Leaf(Enum("batch", "sample", "exact"), "batch, sample or exact",
                     valid="exact needs replicates = 1"),
        # bounded so that the runtime's value x batch stays finite (int() of it cannot overflow)
        "value": Leaf(Float(1e18, "top-k cannot exceed the number of components"),
                      "batch: k / B (may exceed 1); sample: k per sample", paper="k",
                      valid="batch: value x batch >= 1 and value <= components; sample: an integer in [1, components]"),
    },
    "APD: top-k selection of active components (paper eq. 16, 25)",
    forms={
        "batch": Form(fixed={"mode": "batch"}, positional=("value",), required=1),  # floor(value x B) per batch
        "sample": Form(fixed={"mode": "sample"}, positional=("value",), required=1),  # k per sample
        "exact": Form(fixed={"mode": "exact"}),  # k = active input features in the batch
    },
    optional=True,
    method="apd",
)

ATTRIBUTION = Obj(
    S.Attribution,
    {
        "kind": Leaf(Enum("gradient", "activation", "ablation"), "attribution method (paper eq. 8)",
                     valid="ablation cannot drive the Lp sparsity loss"),
        "source": Leaf(Enum("target", "apd"), "gradient only: gradients of the target model or of the APD model",
                       valid="apd needs kind gradient"),
    },
    "APD: how components are attributed (notes §5)",
    forms={
        "gradient": Form(fixed={"kind": "gradient"}, keywords={"source": "source"}),
        "activation": Form(fixed={"kind": "activation"}),
        "ablation": Form(fixed={"kind": "ablation"}),
    },
    method="apd",
)

REVIVE = Obj(
    S.Revive,
    {
        "kind": Leaf(Enum("split"), "split: a dead component takes one of two input groups of a most-chosen live one"),
        "every": Leaf(Int(), "steps between revivals", valid="> 0"),
        "until": Leaf(Int(), "last step at which components are revived", valid="> 0"),
        "window": Leaf(Int(), "a component chosen in fewer than half of this many steps before a revival is dead",
                       valid="(0, every]"),
        "clear": Leaf(Bool(), "at the last revival, zero the dead components no donor could be split for (measured worse on TMS 40-10)"),
        "adopt": Leaf(Bool(), "a dead component left over by the splits takes, from every component, the part that "
                              "reads an input top-k leaves unserved even when it is large (measured better on TMS 40-10)"),
    },
    "APD: dead-component revival, not part of APD (runtime/engine/revive.py); none = off, as in the paper",
    forms={"split": Form(fixed={"kind": "split"},
                         keywords={k: k for k in ("every", "until", "window", "clear", "adopt")})},
    optional=True,
    method="apd",
)

CAUSAL_IMPORTANCE = Obj(
    S.CausalImportance,
    {
        "kind": Leaf(Enum("mlp"), "mlp: one MLP R -> R per subcomponent on its inner activation h_c = a . V_c",
                     paper="Gamma^l_c, gamma^l_c (§2.3, App. A.1)"),
        "hidden": Leaf(Int(), "hidden units of each MLP", paper="d_gate (App. A.1)", valid="> 0"),
        "activation": Leaf(Enum("gelu", "gelu_tanh"), "gelu: z Phi(z) with the exact erf (the paper's, as torch's "
                           "default); gelu_tanh: its tanh approximation", paper="GELU (App. A.1)"),
        "lower_leak": Leaf(Float(), "slope below 0 of the hard sigmoid of the masks",
                           paper="sigma_H,lower, 0.01 (App. A.2)", valid="[0, 1)"),
        "upper_leak": Leaf(Float(), "slope above 1 of the hard sigmoid of the importance loss",
                           paper="sigma_H,upper, 0.01 (App. A.2)", valid="[0, 1)"),
    },
    "SPD: the causal-importance function g = sigma_H(gamma(h)) of every subcomponent",
    forms={"mlp": Form(fixed={"kind": "mlp"}, positional=("hidden",),
                       keywords={k: k for k in ("hidden", "activation", "lower_leak", "upper_leak")})},
    method="spd",
)

FAITHFULNESS_WARMUP = Obj(
    S.FaithfulnessWarmup,
    {
        "steps": Leaf(Int(), "AdamW steps on the faithfulness loss alone (V, U) before training", valid="> 0"),
        "lr": Leaf(Float(), "their learning rate", valid="> 0"),
        "weight_decay": Leaf(Float(), "their decoupled weight decay", valid=">= 0"),
    },
    "SPD, not in the paper (the authors' later configs): start from subcomponents that sum to the target; none = off",
    forms={"adamw": Form(keywords={k: k for k in ("steps", "lr", "weight_decay")})},
    optional=True,
    method="spd",
)

_COEF = "coefficient; none = term off"
LOSSES = Obj(
    S.Losses,
    {
        "faithfulness": Leaf(Optional(Float()), _COEF, paper="L_faithfulness, eq. 14 (mean over the N weights)",
                             valid=">= 0"),
        "minimality": Leaf(Optional(Float()), _COEF, paper="L_minimality, eq. 17 (top-k output MSE); beta",
                           valid=">= 0; needs top-k", method="apd"),
        "act_recon": Leaf(Optional(Float()), _COEF, paper="hidden-activation reconstruction (App. A.2.2)",
                          valid=">= 0", method="apd"),
        "simplicity": Leaf(Optional(Float()), _COEF + "; schatten(coef, p = P) also sets simplicity_p",
                           forms={"schatten": Form(positional=("simplicity",), keywords={"p": "simplicity_p"}, required=1)},
                           paper="L_simplicity, eq. 22; alpha", valid=">= 0", method="apd"),
        "simplicity_p": Leaf(Float(), "Schatten exponent", paper="p (eq. 22)", valid="> 0", method="apd"),
        "sparsity": Leaf(Optional(Float()), _COEF + "; lp(coef, p = P) also sets sparsity_p",
                         forms={"lp": Form(positional=("sparsity",), keywords={"p": "sparsity_p"}, required=1)},
                         paper="L_p penalty on attributions, eq. 26", valid=">= 0; required without top-k", method="apd"),
        "sparsity_p": Leaf(Float(), "attribution exponent", paper="p1 (eq. 26)", valid="> 0", method="apd"),
        "output_recon": Leaf(Optional(Float()), _COEF, paper="unmasked output MSE", valid=">= 0", method="apd"),
        "stochastic_recon": Leaf(Optional(Float()), _COEF, paper="beta_1, L_stochastic-recon (§2.2)",
                                 valid=">= 0; this or stochastic_recon_layerwise", method="spd"),
        "stochastic_recon_layerwise": Leaf(Optional(Float()), _COEF, paper="beta_2, L_stochastic-recon-layerwise (§2.2)",
                                           valid=">= 0", method="spd"),
        "importance_minimality": Leaf(Optional(Float()), _COEF + "; lp(coef, p = P) also sets importance_minimality_p",
                                      forms={"lp": Form(positional=("importance_minimality",),
                                                        keywords={"p": "importance_minimality_p"}, required=1)},
                                      paper="beta_3, L_importance-minimality (§2.3)", valid=">= 0", method="spd"),
        "importance_minimality_p": Leaf(Float(), "exponent of the causal importances", paper="p (§2.3)", valid="> 0",
                                        method="spd"),
        "importance_warmup": Leaf(Float(), "fraction of the steps over which beta_3 rises linearly from 0 (not in "
                                  "the paper)", valid="[0, 1]", method="spd"),
        "divergence": Leaf(Enum("mse"), "output divergence: mse = mean over batch and outputs of the squared difference",
                           paper="D (§2.2)", method="spd"),
    },
    "loss coefficients and exponents (APD: notes §4; SPD: SPD paper §2, App. pseudocode)",
)

DECOMPOSE = Obj(
    S.Decompose,
    {
        "method": Leaf(Enum("apd", "spd"), "apd: Attribution-based Parameter Decomposition (Braun et al. 2025); spd: "
                       "Stochastic Parameter Decomposition (Bushnaq, Braun & Sharkey 2025)"),
        "components": Leaf(Int(), "APD: parameter components; SPD: rank-one subcomponents per decomposed matrix",
                           paper="C", valid="> 0"),
        "rank": Leaf(Optional(Int()), "inner rank of each component matrix; none = per target", paper="m",
                     valid="[1, min(d_in, d_out) + 1]", method="apd"),
        "topk": TOPK,
        "attribution": ATTRIBUTION,
        "loss": LOSSES,
        "unit_norm": Leaf(Bool(), "normalise the U (A) factors to unit norm every step", method="apd"),
        "optimizer": optimizer("APD optimiser"),
        "schedule": schedule("APD learning-rate schedule"),
        "steps": Leaf(Int(), "optimiser steps", valid="> 0"),
        "batch": Leaf(Int(), "batch size", paper="B", valid="> 0"),
        "seed": Leaf(Optional(Int()), "seed of APD init and data; none = the experiment seed"),
        "init_scale": Leaf(Optional(Float()), "gain of the component init (SPD: of V); none = per target",
                           valid="> 0"),
        "log_every": Leaf(Int(), "steps between log lines", valid="> 0"),
        "restarts": Leaf(Int(), "independent inits per replicate; the lowest held-out top-k MSE (SPD: held-out SPD "
                         "loss) is kept (over finished runs instead: `apdspec pick`, docs/outputs.md)",
                         valid="> 0"),
        "revive": REVIVE,
        "causal_importance": CAUSAL_IMPORTANCE,
        "mask_samples": Leaf(Int(), "stochastic mask draws per step", paper="S (§2.2)", valid="> 0", method="spd"),
        "faithfulness_warmup": FAITHFULNESS_WARMUP,
        "checkpoint_every": Leaf(Optional(Int()), "steps between full-state checkpoints of a run directory "
                                 "(exact resume); none = every 10 % of the steps, 0 = none", valid=">= 0"),
        "checkpoint_keep": Leaf(Int(), "newest checkpoints kept", valid="> 0"),
    },
    "the decomposition (APD paper §2, App. A.2.2; SPD paper §2)",
)

DATA = Obj(
    S.Data,
    {
        "probability": Leaf(Float(), "probability that a feature (a control bit) is active", valid="(0, 1]"),
        "values": Leaf(Optional(Range("uniform")), "value range of active features; none = per target",
                       valid="low < high"),
        "mode": Leaf(Enum("at_least_zero_active", "exactly_n_active"), "how many features are active",
                     forms={"exactly_n_active": Form(fixed={"mode": "exactly_n_active"}, positional=("n_active",), required=1)},
                     valid="gated targets: at_least_zero_active"),
        "n_active": Leaf(Int(), "exactly_n_active: the number of active features", valid="[1, features]"),
        "synced": Leaf(Groups(), "groups of features that fire together",
                       valid="disjoint indices in [0, features); at_least_zero_active only"),
    },
    "sparse input features (notes §2)",
)


def _paper_keys():
    """The runtime's table of paper results (runtime/spec/paper.py), when the runtime has one."""
    try:
        from runtime.spec.paper import PAPER
    except ImportError:
        return None
    return PAPER


REPORT = Obj(
    S.Report,
    {
        "metrics": Leaf(Names(lambda: S.METRICS, "metric"), "metrics to compute; all = every applicable one",
                        valid="must apply to the target kind"),
        "plots": Leaf(Names(lambda: S.PLOTS, "plot"), "plots to draw; all = every applicable one",
                      valid="must apply to the target kind"),
        "eval_batches": Leaf(Int(), "batches for sampled analyses", valid="> 0"),
        "paper": Leaf(Optional(Key(_paper_keys, "paper experiment")),
                      "key of the paper's reference results the report compares with; none = no comparison"),
    },
    "metrics, plots and expectations",
)

EXPERIMENT = Obj(
    S.Experiment,
    {
        "seed": Leaf(Int(), "root seed"),
        "replicates": Leaf(Int(), "independent copies trained as one vectorised model", valid=">= 1"),
        "dtype": Leaf(Enum("float32", "float64"), "floating-point precision"),
        "data": DATA,
        "decompose": DECOMPOSE,
        "report": REPORT,
    },
    "one experiment",
)

REDUCTIONS = ("mean", "min", "max", "median")

# Runtime fields the schema handles with dedicated syntax rather than `key = value`.
SPECIAL_FIELDS = {
    (S.Experiment, "name"): "experiment NAME { ... }",
    (S.Experiment, "target"): "target KIND { ... }",
    (S.Experiment, "train"): "target KIND { train { ... } }",
    (S.Experiment, "sweep"): "sweep { ... }",
    (S.Report, "expect"): "expect METRIC OP VALUE",
    (S.FileTarget, "path"): 'target file("path")',
}


def walk(obj: Obj, prefix: tuple[str, ...] = ()):
    """(language path, node) for every node under obj, depth first."""
    for name, node in obj.fields.items():
        yield prefix + (name,), node
        if isinstance(node, Obj):
            yield from walk(node, prefix + (name,))

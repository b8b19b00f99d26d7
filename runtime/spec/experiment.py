"""The typed experiment description the runtime consumes: frozen dataclasses with their defaults.

Everything an APD experiment can vary lives here, so that (a) the `.apd` language (package `apdspec`)
compiles text into exactly these objects, and (b) a user embedding the runtime builds them directly in
Python. Defaults live in one place: the dataclass field defaults, plus `checks.resolve()` for the few
defaults that depend on the target kind. METRICS and PLOTS list what the runtime can report.

Symbols (paper / method notes): C = components, m = inner rank, k = top-k, W = A @ B per component
(row-vector convention h = a @ W), N = number of decomposed weights per replicate.

Two decomposition methods (`Decompose.method`): "apd" (Braun et al. 2025, the default) and "spd"
(Stochastic Parameter Decomposition, Bushnaq, Braun & Sharkey 2025): C rank-one subcomponents per
decomposed matrix, a causal-importance function per subcomponent, stochastic masks. Fields that only
one method reads are listed in APD_ONLY / SPD_ONLY (validate() rejects them off their method).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class TmsTarget:
    """Toy model of superposition: y = ReLU(h_K W^T + b), h_0 = x W, h_k = h_{k-1} V_k (tied W)."""

    features: int = 5
    hidden: int = 2
    hidden_layers: int = 0
    bias: bool = True
    kind: str = field(default="tms", init=False)


@dataclass(frozen=True)
class ResidMlpTarget:
    """Residual MLP (compressed computation): fixed unit-norm embedding W_E, W_U = W_E^T."""

    features: int = 100
    d_embed: int = 1000
    d_mlp: int = 50
    layers: int = 1
    activation: str = "relu"  # relu | gelu
    in_bias: bool = False
    out_bias: bool = False
    embedding: str = "random"  # random (fixed random unit-norm rows) | identity (needs features == d_embed)
    init_scale: float = 1.0
    output_activation: bool = False
    kind: str = field(default="resid_mlp", init=False)


@dataclass(frozen=True)
class GatedTarget:
    """Hand-coded gated-function network (paper App. B.1, notes §1.3): y = sum_i alpha_i g_i(x).

    F_i(x) = a sin(b x + c) + d cos(e x + f) + g with a, d, g ~ U(amplitude), b, e ~ U(frequency),
    c, f ~ U(phase); g_i is its piecewise-linear interpolant with `neurons` ReLU neurons.
    """

    functions: int = 4
    neurons: int = 10  # per function
    layers: int = 2
    input_range: tuple[float, float] = (0.0, 5.0)
    amplitude_range: tuple[float, float] = (-1.0, 1.0)
    frequency_range: tuple[float, float] = (0.1, 1.0)
    phase_range: tuple[float, float] = (-math.pi, math.pi)
    simple_bias: bool = False
    seed: int | None = None  # seed of the trig coefficients; None -> experiment seed
    kind: str = field(default="gated", init=False)


@dataclass(frozen=True)
class FileTarget:
    """A target saved by apdspec as `.npz` (the run directory's `target.npz`)."""

    path: str = ""
    kind: str = field(default="file", init=False)


Target = Union[TmsTarget, ResidMlpTarget, GatedTarget, FileTarget]


TARGET_KINDS = {"tms": TmsTarget, "resid_mlp": ResidMlpTarget, "gated": GatedTarget, "file": FileTarget}


@dataclass(frozen=True)
class Optimizer:
    """Adam / AdamW (decoupled weight decay, PyTorch semantics)."""

    name: str = "adam"  # adam | adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class Schedule:
    """LR multiplier after `warmup` (a fraction of steps, linear from 0): notes §6."""

    kind: str = "constant"  # constant | linear | cosine | exponential
    warmup: float = 0.0
    halflife: float | None = None  # steps; exponential only


@dataclass(frozen=True)
class Training:
    """How the target network is trained (TMS and residual MLP; gated targets are hand-coded)."""

    steps: int = 5000
    batch: int = 1024
    optimizer: Optimizer = Optimizer(name="adamw", lr=5e-3, weight_decay=0.01)
    schedule: Schedule = Schedule(kind="linear")
    seed: int | None = None  # None -> experiment seed
    labels: str | None = None  # identity | act_plus_resid | abs ; None -> per target kind
    label_coeffs: str = "ones"  # ones | uniform (U[1,2), seeded by label_seed)
    label_seed: int = 0
    importance: float = 1.0  # feature i is weighted importance**i
    log_every: int = 500


@dataclass(frozen=True)
class Data:
    """Sparse features: each value ~ U(values) kept with probability `probability` (notes §2).

    For gated targets `probability` is the probability of each control bit and `values` the range
    of x (default: the target's input range).
    """

    probability: float = 0.05
    values: tuple[float, float] | None = None  # None -> (0,1) tms, (-1,1) resid_mlp, input_range gated
    mode: str = "at_least_zero_active"  # at_least_zero_active | exactly_n_active
    n_active: int = 1  # exactly_n_active only
    synced: tuple[tuple[int, ...], ...] = ()  # groups of features that fire together


@dataclass(frozen=True)
class TopK:
    """batch: k = floor(value * B) over the flattened (B x C) attributions (value may exceed 1);
    sample: integer k per sample; exact: k = number of nonzero input features in the batch."""

    mode: str = "batch"  # batch | sample | exact
    value: float = 1.0


@dataclass(frozen=True)
class Attribution:
    kind: str = "gradient"  # gradient | activation | ablation
    source: str = "target"  # target (notes §5.1) | apd (older variant, notes §5.2); gradient only


@dataclass(frozen=True)
class Losses:
    """Coefficients (None = term off) and exponents of the loss terms (APD: notes §4; SPD: SPD paper
    §2, App. "SPD Pseudocode"). `faithfulness` is shared; the other terms belong to one method."""

    faithfulness: float | None = 1.0  # param match, / N
    minimality: float | None = 1.0  # top-k reconstruction MSE vs target output
    act_recon: float | None = None  # hidden-activation reconstruction
    simplicity: float | None = None  # factorised Schatten-p, / (N B)
    simplicity_p: float = 1.0
    sparsity: float | None = None  # Lp on attributions (the Lp formulation)
    sparsity_p: float = 1.0
    output_recon: float | None = None  # unmasked output MSE vs target output
    # SPD terms (method = "spd")
    stochastic_recon: float | None = 1.0  # beta_1: D(f(x | stochastically masked W'), f(x | W)), mean over S
    stochastic_recon_layerwise: float | None = 1.0  # beta_2: one layer masked at a time, / (L S)
    importance_minimality: float | None = 3e-3  # beta_3: sum_l sum_c |sigma_H,upper(g)|^p, mean over B
    importance_minimality_p: float = 1.0  # p
    importance_warmup: float = 0.0  # fraction of steps over which beta_3 rises linearly from 0
    divergence: str = "mse"  # D: mse = mean over batch and outputs of the squared difference


@dataclass(frozen=True)
class Revive:
    """Not part of APD (off by default; runtime/engine/revive.py): every `every` steps up to step `until`,
    each component chosen in fewer than half of the last `window` steps takes over one of the two
    input groups of a most-chosen live component."""

    kind: str = "split"
    every: int = 1000
    until: int = 10_000
    window: int = 200
    clear: bool = False  # at the last revival, zero the dead components no donor could be split for
    adopt: bool = False  # dead components left over take inputs that top-k leaves unserved


@dataclass(frozen=True)
class CausalImportance:
    """SPD's causal-importance function Gamma (SPD paper §2.3, App. "Architecture of Causal Importance
    Function MLPs" and "Avoiding dead gradients with leaky hard sigmoids"): per subcomponent c of
    matrix l, g = sigma_H(gamma(h)) with h = the subcomponent's inner activation a . V_c and gamma a
    one-hidden-layer MLP R -> R of `hidden` (d_gate) units."""

    kind: str = "mlp"
    hidden: int = 16  # d_gate
    activation: str = "gelu"  # gelu (exact erf form, as torch's default) | gelu_tanh (tanh approximation)
    lower_leak: float = 0.01  # slope of sigma_H,lower below 0 (the masks)
    upper_leak: float = 0.01  # slope of sigma_H,upper above 1 (the importance-minimality loss)


@dataclass(frozen=True)
class FaithfulnessWarmup:
    """SPD, not in the paper (the authors' later configs): before the first step, `steps` AdamW steps
    on the faithfulness loss alone (the subcomponents V, U only), so that training starts from
    subcomponents that already sum to the target."""

    steps: int = 200
    lr: float = 1e-2
    weight_decay: float = 0.1


@dataclass(frozen=True)
class Decompose:
    method: str = "apd"  # apd | spd
    components: int = 5
    rank: int | None = None  # None -> min(F,H)+1 (tms), min(D,d_mlp) (resid), min(d_in,d_out) (gated)
    topk: TopK | None = TopK()
    attribution: Attribution = Attribution()
    loss: Losses = Losses()
    unit_norm: bool = False
    optimizer: Optimizer = Optimizer(name="adam", lr=1e-3)
    schedule: Schedule = Schedule()
    steps: int = 1000
    batch: int = 256
    seed: int | None = None  # None -> experiment seed
    init_scale: float | None = None  # None -> 1.0 (tms, gated), 2.0 (resid_mlp xavier gain)
    log_every: int = 100
    # Independent inits per replicate; the one with the lowest held-out top-k reconstruction MSE
    # is kept (no ground truth is used). 1 = the paper's single run.
    restarts: int = 1
    revive: Revive | None = None  # dead-component revival; None = the paper's APD
    # Full-state checkpoints of a run directory (runtime/store/checkpoint.py); they never change results.
    checkpoint_every: int | None = None  # steps; None -> every 10 % of the steps; 0 -> none
    checkpoint_keep: int = 2  # newest checkpoints kept
    # SPD (method = "spd"): C = components rank-one subcomponents per decomposed matrix
    causal_importance: CausalImportance = CausalImportance()
    mask_samples: int = 1  # S: stochastic mask draws per step
    faithfulness_warmup: FaithfulnessWarmup | None = None  # None = off, the paper's procedure


# Fields of Decompose / Losses that only one method reads (validate() reports them on the other).
APD_ONLY = ("rank", "topk", "attribution", "unit_norm", "revive", "loss.minimality", "loss.act_recon",
            "loss.simplicity", "loss.simplicity_p", "loss.sparsity", "loss.sparsity_p", "loss.output_recon")
SPD_ONLY = ("causal_importance", "mask_samples", "faithfulness_warmup", "loss.stochastic_recon", "loss.stochastic_recon_layerwise",
            "loss.importance_minimality", "loss.importance_minimality_p", "loss.importance_warmup",
            "loss.divergence")
METHODS = ("apd", "spd")


@dataclass(frozen=True)
class Expectation:
    """`expect METRIC OP VALUE` evaluated on each replicate (`reduce="all"`, or at least `at_least`
    replicates), or on a reduction over replicates (`mean`, `min`, `max`, `median`)."""

    metric: str
    op: str  # >= | <= | > | < | ==
    value: float
    reduce: str = "all"  # all | mean | min | max | median
    at_least: int | None = None
    text: str = field(default="", compare=False)  # the clause as written (display only)


@dataclass(frozen=True)
class Report:
    metrics: tuple[str, ...] | None = None  # None -> every metric that applies to the target
    plots: tuple[str, ...] | None = None  # None -> every plot that applies to the target
    expect: tuple[Expectation, ...] = ()
    eval_batches: int = 20  # batches used by sampled analyses (scrubbing, per-feature losses)
    paper: str | None = None  # key of the paper's reference numbers, e.g. "tms_5_2"


@dataclass(frozen=True)
class SweepAxis:
    path: str  # e.g. "decompose.loss.simplicity" or "seed"
    values: tuple[Any, ...]
    group: int | None = None  # axes with the same group are zipped; others form a grid


@dataclass(frozen=True)
class Sweep:
    axes: tuple[SweepAxis, ...] = ()


@dataclass(frozen=True)
class Experiment:
    name: str = "experiment"
    seed: int = 0
    replicates: int = 1  # independent copies (target + decomposition) trained as one vectorised model
    dtype: str = "float32"  # float32 | float64
    target: Target = TmsTarget()
    train: Training | None = Training()
    data: Data = Data()
    decompose: Decompose = Decompose()
    report: Report = Report()
    sweep: Sweep | None = None


# Metrics and plots the runtime can produce, with the target kinds they apply to.
ALL_KINDS = ("tms", "resid_mlp", "gated")


METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "faithfulness": (ALL_KINDS, "final faithfulness (param-match) loss"),
    "minimality": (ALL_KINDS, "final top-k reconstruction loss"),
    "act_recon": (ALL_KINDS, "final activation-reconstruction loss"),
    "simplicity": (ALL_KINDS, "final Schatten simplicity loss"),
    "sparsity": (ALL_KINDS, "final Lp sparsity loss"),
    "output_recon": (ALL_KINDS, "final unmasked output-reconstruction loss"),
    "total": (ALL_KINDS, "final total loss"),
    "target_loss": (ALL_KINDS, "target model MSE against the true labels"),
    "topk_mse": (ALL_KINDS, "MSE of the top-k APD output against the target output (eval batches)"),
    "mean_active": (ALL_KINDS, "mean number of active components per sample with a nonzero input"),
    "dead_components": (ALL_KINDS, "components never selected by top-k (with a positive attribution) on eval batches"),
    "mmcs": (("tms",), "mean max cosine similarity between component rows and target rows (paper eq. 3)"),
    "ml2r": (("tms",), "mean L2 ratio of the best-matching component rows (paper eq. 4)"),
    "matched_rows": (("tms",), "target rows whose best-matching component row has cosine >= 0.99 (MMCS counted; "
                               "the other rows are split or shared)"),
    "dedicated_features": (("resid_mlp",), "features with a component that represents only them"),
    "mono_components": (("resid_mlp",), "components representing exactly one feature"),
    "duo_components": (("resid_mlp",), "components representing exactly two features"),
    "poly_components": (("resid_mlp",), "components representing more than two features"),
    "scrubbed_loss": (("resid_mlp",), "mean MSE with the active features' components forced on"),
    "anti_scrubbed_loss": (("resid_mlp",), "mean MSE with the active features' components forced off"),
    "random_loss": (("resid_mlp",), "mean MSE with random half of the components on"),
    "scrub_ratio": (("resid_mlp",), "anti_scrubbed_loss / scrubbed_loss"),
    "canonical_scrubbed_loss": (("resid_mlp",), "scrubbed loss of the target's one-feature-per-component "
                                                "decomposition (1 layer)"),
    "canonical_anti_scrubbed_loss": (("resid_mlp",), "anti-scrubbed loss of the target's one-feature-per-component "
                                                     "decomposition (1 layer)"),
    "canonical_scrub_ratio": (("resid_mlp",), "canonical_anti_scrubbed_loss / canonical_scrubbed_loss: the yardstick "
                                              "for scrub_ratio"),
    "per_feature_loss_top1": (("resid_mlp",), "mean per-feature MSE with per-sample top-1"),
    "per_feature_loss_topk": (("resid_mlp",), "mean per-feature MSE with batch top-k"),
    "active_per_feature": (("resid_mlp",), "mean number of active components per single feature"),
    "separated_functions": (("gated",), "functions carried by their own component"),
    "function_mse": (("gated",), "MSE of APD top-k (SPD: the CI-masked model) vs target on one-hot control bits"),
    "stochastic_recon": (ALL_KINDS, "SPD: final stochastic reconstruction loss"),
    "stochastic_recon_layerwise": (ALL_KINDS, "SPD: final layerwise stochastic reconstruction loss"),
    "importance_minimality": (ALL_KINDS, "SPD: final importance-minimality loss"),
    "ci_masked_mse": (ALL_KINDS, "SPD: MSE of the output with every mask at its causal importance (r = 0) vs the "
                                 "target output (eval batches)"),
    "ci_l0": (ALL_KINDS, "SPD: mean number of subcomponents (all matrices) with causal importance > 0.1 per sample "
                         "with a nonzero input"),
    "alive_subcomponents": (ALL_KINDS, "SPD: subcomponents (all matrices) with causal importance > 0.1 on some eval "
                                       "sample"),
    "ci_error": (("tms",), "SPD: per feature, sum over subcomponents of |g - ground truth| on its one-hot input "
                           "(x_f = 0.75; truth 1 for the feature's best-matching subcomponent, 0 elsewhere), mean over "
                           "features and the matrices W, W^T"),
}

# Metrics that apply to one method only (absent: both). The runtime computes the shared ones with
# the method's own masks: top-k for APD, causal importances for SPD (docs/method.md).
METRIC_METHODS: dict[str, tuple[str, ...]] = {
    **{k: ("apd",) for k in ("minimality", "act_recon", "simplicity", "sparsity", "output_recon", "topk_mse",
                             "mean_active", "dead_components", "per_feature_loss_top1", "per_feature_loss_topk",
                             "active_per_feature")},
    **{k: ("spd",) for k in ("stochastic_recon", "stochastic_recon_layerwise", "importance_minimality",
                             "ci_masked_mse", "ci_l0", "alive_subcomponents", "ci_error")},
}


PLOTS: dict[str, tuple[tuple[str, ...], str]] = {
    "losses": (ALL_KINDS, "training curves of every loss term"),
    "components": (ALL_KINDS, "component weight matrices"),
    "attributions": (ALL_KINDS, "attributions on one-hot inputs per component"),
    "polygons": (("tms",), "Fig. 3: 2-D feature directions of target, sum and components (hidden = 2)"),
    "mse_by_sparsity": (("tms", "resid_mlp"), "MSE by number of active features"),
    "neuron_contributions": (("resid_mlp",), "Figs. 6, 10: neuron contributions, target vs component"),
    "feature_response": (("resid_mlp",), "Figs. 7, 24: feature response with scrubbed subnets"),
    "scrub_histogram": (("resid_mlp",), "Figs. 8, 25: ablation loss histograms"),
    "target_response": (("resid_mlp",), "Figs. 14-15, 19-20: target model responses"),
    "per_feature_loss": (("resid_mlp",), "Figs. 16-17, 21-22: per-feature losses, top-1 vs batch top-k"),
    "active_components": (("resid_mlp",), "Figs. 18, 23: active components per feature"),
    "component_categories": (("resid_mlp",), "dead / mono / duo / poly components"),
    "gated_functions": (("gated",), "Fig. 12: target vs APD top-k (SPD: the CI-masked model) per function"),
    "gated_network": (("gated",), "Fig. 13: component weights of the gated network"),
    "causal_importance": (ALL_KINDS, "SPD paper Figs. 8, 12, 13: causal importance of every subcomponent on one-hot "
                                     "inputs, per matrix, columns permuted"),
}

PLOT_METHODS: dict[str, tuple[str, ...]] = {
    **{k: ("apd",) for k in ("attributions", "per_feature_loss", "active_components", "gated_network")},
    "causal_importance": ("spd",),
}


def applies(name: str, kind: str, method: str, table: str = "metrics") -> bool:
    """Whether metric (or plot, table="plots") `name` applies to a target `kind` decomposed by `method`."""
    reg, methods = (METRICS, METRIC_METHODS) if table == "metrics" else (PLOTS, PLOT_METHODS)
    return name in reg and kind in reg[name][0] and method in methods.get(name, METHODS)

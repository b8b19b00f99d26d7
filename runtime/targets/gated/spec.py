"""The hand-coded gated-function network (APD paper App. B.1, notes §1.3): spec dataclass, shapes, checks.

A residual network (spec/networks.py) of width D = functions + 2 ([x, alpha_0 .., y]) whose neurons
are set by hand (model.py); not trained. Inputs are x and one control bit per function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...spec import Issue, KINDS, KindSpec, MAX_LAYERS, Target, declare_metric, declare_plot, setting
from ...spec.checks import positive, range_issues
from ...spec.import_rules import ImportRules, dims, layer_count, require
from ...spec.networks import residual_matrices, residual_shapes
from ...spec.registry import count_of, non_negative
from ...spec.target_file import EXTRA_PREFIX


@dataclass(frozen=True)
class GatedTarget(Target):
    """Hand-coded gated-function network (paper App. B.1, notes §1.3): y = sum_i alpha_i g_i(x).

    F_i(x) = a sin(b x + c) + d cos(e x + f) + g with a, d, g ~ U(amplitude), b, e ~ U(frequency),
    c, f ~ U(phase); g_i is its piecewise-linear interpolant with `neurons` ReLU neurons.
    """

    functions: int = setting(4, "gated functions", valid="> 0")
    neurons: int = setting(10, "ReLU neurons per function", valid=">= 2")
    layers: int = setting(2, "MLP layers the neurons are split over", max=MAX_LAYERS,
                          valid=f"> 0, <= {MAX_LAYERS}, divides functions x neurons")
    input_range: tuple[float, float] = setting((0.0, 5.0), "range of x", valid="low < high")
    amplitude_range: tuple[float, float] = setting((-1.0, 1.0), "range of a, d, g in F_i", valid="low < high")
    frequency_range: tuple[float, float] = setting((0.1, 1.0), "range of b, e in F_i", valid="low < high")
    phase_range: tuple[float, float] = setting((-math.pi, math.pi), "range of c, f in F_i", valid="low < high")
    simple_bias: bool = setting(False, "the simple-bias gating variant")
    seed: int | None = setting(None, "seed of the trig coefficients; none = the experiment seed")
    kind: str = field(default="gated", init=False)


def dims_of(arch: GatedTarget) -> tuple[int, int, int]:
    """(D, d_mlp, layers) of the residual network."""
    return arch.functions + 2, arch.functions * arch.neurons // max(arch.layers, 1), arch.layers


def _arch(params: dict, options: dict) -> GatedTarget:
    n_in, D = dims(require(params, "W_E", "gated", IMPORT), 2, "W_E")
    n = n_in - 1
    if n < 1 or D != n + 2:
        raise ValueError(f"W_E is {n_in} x {D} (inputs x residual width); a gated network of n functions has "
                         f"n + 1 inputs [x, alpha_0..] and width n + 2 [x, alpha_0.., y]")
    layers = layer_count(params, "layers.", ".W_in")
    if layers == 0:
        raise ValueError("a gated target needs layers.0.W_in (source name: mlps.0.input_layer.weight)")
    d_mlp = dims(params["layers.0.W_in"], 2, "layers.0.W_in")[1]
    if (d_mlp * layers) % n:
        raise ValueError(f"{layers} layers of {d_mlp} neurons cannot hold the same number of neurons for each of "
                         f"the {n} functions")
    arch = GatedTarget(functions=n, neurons=d_mlp * layers // n, layers=layers)
    given = options.get("input_range")
    if given is not None:
        return GatedTarget(functions=n, neurons=arch.neurons, layers=layers, input_range=(float(given[0]), float(given[1])))
    start, end, simple = _grid_of(params, arch)
    return GatedTarget(functions=n, neurons=arch.neurons, layers=layers, input_range=(start, end), simple_bias=simple)


def _grid_of(params: dict, arch: GatedTarget) -> tuple[float, float, bool]:
    """(start, end, simple_bias) of a hand-coded gated network, read off its first replicate's
    input weights and biases (notes §1.3): neuron k of function i has bias -t_k - S and control
    weight S (or bias -S and control weight S - t_k), with S = 2 (end - start) and knots
    t_k = start + (k - 1) (end - start) / (neurons - 1)."""
    n, L = arch.functions, arch.layers
    ctrl, bias, func = [], [], []
    for l in range(L):
        W = np.asarray(params[f"layers.{l}.W_in"], dtype=np.float64)
        b = np.asarray(params.get(f"layers.{l}.b_in", np.zeros(W.shape[-1])), dtype=np.float64)
        W, b = (W[0], b[0]) if W.ndim == 3 else (W, b)
        c = W[1:n + 1]  # (n, d_mlp): control-bit weights
        func.append(np.argmax(np.abs(c), axis=0))
        ctrl.append(c[func[-1], np.arange(c.shape[1])])
        bias.append(b)
    ctrl, bias, func = np.concatenate(ctrl), np.concatenate(bias), np.concatenate(func)
    hint = "this does not look like the hand-coded gated network; give --input-range LO,HI"
    tol = 1e-4 * max(1.0, float(np.max(np.abs(ctrl))))
    if np.ptp(ctrl) <= tol:
        S, simple = float(np.mean(ctrl)), False
        knots = -bias - S
    elif np.ptp(bias) <= tol:
        S, simple = float(-np.mean(bias)), True
        knots = S - ctrl
    else:
        raise ValueError(f"the input biases and control weights vary together: {hint}")
    length = S / 2.0
    if not length > 0:
        raise ValueError(f"control weight S = {S:g} is not positive: {hint}")
    delta = length / (arch.neurons - 1)
    start = float(np.min(knots)) + delta
    want = start + (np.arange(arch.neurons) - 1) * delta
    for i in range(n):
        got = np.sort(knots[func == i])
        if got.size != arch.neurons or not np.allclose(got, want, atol=1e-4 * max(1.0, length)):
            raise ValueError(f"function {i}'s neurons do not sit on one grid of {arch.neurons} knots: {hint}")
    start = float(np.round(start, 5)) + 0.0  # undo float32 noise (+ 0.0: no -0.0)
    return start, float(np.round(start + length, 5)) + 0.0, simple


IMPORT = ImportRules(
    names={
        "W_E": ("W_E", "W_E.weight"),
        "W_U": ("W_U", "W_U.weight"),
        "layers.{l}.W_in": ("layers.{l}.W_in", "mlps.{l}.input_layer.weight", "mlp_{l}.input_layer.weight"),
        "layers.{l}.b_in": ("layers.{l}.b_in", "mlps.{l}.input_layer.bias", "mlp_{l}.input_layer.bias"),
        "layers.{l}.W_out": ("layers.{l}.W_out", "mlps.{l}.output_layer.weight", "mlp_{l}.output_layer.weight"),
    },
    arch=_arch,
    zero={name: "apdspec's gated network has no output bias"
          for name in ("layers.{l}.b_out", "mlps.{l}.output_layer.bias", "mlp_{l}.output_layer.bias")},
)


class GatedKind(KindSpec):
    name = "gated"
    cls = GatedTarget
    doc = "hand-coded gated-function network (paper App. B.1); not trained"
    trained = False
    importer = IMPORT
    excludes = ("mse_by_sparsity",)
    feature_noun = "functions"  # control bits, not sparse features: no sparsity levels

    def features(self, arch: GatedTarget) -> int:
        return arch.functions

    def inputs(self, arch: GatedTarget) -> int:
        return arch.functions + 1  # [x, control bits]

    def outputs(self, arch: GatedTarget) -> int:
        return 1

    def matrices(self, arch: GatedTarget):
        return residual_matrices(*dims_of(arch))

    def param_shapes(self, arch: GatedTarget):
        n, N = arch.functions, arch.functions * arch.neurons
        D, d_mlp, layers = dims_of(arch)
        opt = {EXTRA_PREFIX + "coefficients": (n, 7), EXTRA_PREFIX + "output_weights": (n, arch.neurons),
               EXTRA_PREFIX + "permutation": (N,)}
        return residual_shapes(n + 1, 1, D, d_mlp, layers, True, False), opt

    def layer_count(self, arch: GatedTarget):
        return "layers", arch.layers

    def default_values(self, arch: GatedTarget):
        return tuple(arch.input_range)

    def decompose_defaults(self, arch: GatedTarget, method: str) -> dict:
        # min(d_embed, d_mlp) with d_embed = functions + 2
        return {"rank": min(arch.functions + 2, arch.functions * arch.neurons // max(arch.layers, 1))}

    def issues(self, arch: GatedTarget) -> list[Issue]:
        issues: list[Issue] = []
        for f in ("functions", "neurons", "layers"):
            positive(f"target.{f}", getattr(arch, f), issues)
        for f in ("input_range", "amplitude_range", "frequency_range", "phase_range"):
            range_issues(f"target.{f}", getattr(arch, f), issues)
        if arch.layers > 0 and (arch.functions * arch.neurons) % arch.layers:
            issues.append(Issue("target.layers", f"functions x neurons = {arch.functions * arch.neurons} "
                                f"neurons cannot be split evenly into {arch.layers} layers",
                                "choose layers that divide functions x neurons"))
        if arch.neurons < 2:
            issues.append(Issue("target.neurons", "a piecewise-linear function needs at least 2 neurons"))
        return issues

    def data_issues(self, exp, arch: GatedTarget) -> list[Issue]:
        issues = []
        if exp.data.synced:
            issues.append(Issue("data.synced", "synced groups apply to sparse-feature data, not to gated control bits"))
        if exp.data.anticorrelated:
            issues.append(Issue("data.anticorrelated", "anti-correlated groups apply to sparse-feature data, not to "
                                "gated control bits"))
        if exp.data.mode != "at_least_zero_active":
            issues.append(Issue("data.mode", "gated targets draw independent control bits; only at_least_zero_active applies"))
        return issues

    def suggested_spec(self, arch: GatedTarget) -> str | None:
        return "specs/gated.apd"

    def describe(self, arch: GatedTarget) -> str:
        D, d_mlp, n = dims_of(arch)
        return f"gated: {arch.functions} functions x {arch.neurons} neurons, {n} layers (d_embed {D}, d_mlp {d_mlp})"


KINDS["gated"] = GatedKind()

declare_metric("separated_functions", "functions carried by their own component", kinds=("gated",),
               bounds=count_of("functions", lambda exp, arch: arch.functions))
declare_metric("function_mse", "MSE of APD top-k (SPD: the CI-masked model) vs target on one-hot control bits",
               kinds=("gated",), bounds=non_negative)
declare_plot("gated_functions", "Fig. 12: target vs APD top-k (SPD: the CI-masked model) per function", kinds=("gated",))
declare_plot("gated_network", "Fig. 13: component weights of the gated network", kinds=("gated",), methods=("apd",))

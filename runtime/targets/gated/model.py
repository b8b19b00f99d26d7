"""The hand-coded gated-function network (notes §1.3, paper App. B.1).

Output y = sum_i alpha_i g_i(x), where g_i is the piecewise-linear interpolant (n ReLU neurons) of
a random trig function F_i(x) = a sin(b x + c) + d cos(e x + f) + g, and alpha_i are control bits.

Residual layout (D = functions + 2): [x, alpha_0 .. alpha_{n-1}, y]. Neuron (i, k) reads x (weight
1) and control bit i (weight S) and writes w_k into y; no neuron reads y and x / alpha never change,
so which layer a neuron sits in does not affect the function. The neurons are randomly permuted
and split into `layers` equal chunks, as in the reference.
"""
from __future__ import annotations

import numpy as np

from ...engine import draws
from ...engine.models import Params
from ...engine.registry import MODELS
from ...engine.seeding import stream
from ..resid_mlp.model import ResidualModel
from .spec import GatedTarget, dims_of

COEFFS = ("a", "b", "c", "d", "e", "f", "g")  # F = a sin(b x + c) + d cos(e x + f) + g


def grid(arch: GatedTarget) -> tuple[np.ndarray, np.ndarray, float]:
    """(grid points s_j, knots t_k, spacing delta): s_j = start + j delta, t_k = start + (k-1) delta."""
    start, end = map(float, arch.input_range)
    n = arch.neurons
    delta = (end - start) / (n - 1)
    j = np.arange(n, dtype=np.float64)
    return start + j * delta, start + (j - 1) * delta, delta


def suppression(arch: GatedTarget) -> float:
    """S = 2 (range_max - range_min): large enough to switch a neuron off on the input range."""
    return 2.0 * (float(arch.input_range[1]) - float(arch.input_range[0]))


def _trig(coeffs: np.ndarray, x: np.ndarray) -> np.ndarray:
    """coeffs (I, n, 7), x (I, B) -> (I, B, n)."""
    a, b, c, d, e, f, g = (coeffs[:, None, :, q] for q in range(7))
    x = x[:, :, None]
    return a * np.sin(b * x + c) + d * np.cos(e * x + f) + g


def draw_coefficients(arch: GatedTarget, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(I, functions, 7) coefficients a..g: a, d, g ~ U(amplitude), b, e ~ U(frequency), c, f ~ U(phase)."""
    ranges = {"a": arch.amplitude_range, "d": arch.amplitude_range, "g": arch.amplitude_range,
              "b": arch.frequency_range, "e": arch.frequency_range,
              "c": arch.phase_range, "f": arch.phase_range}
    shape = (replicates, arch.functions)
    return np.stack([rng.uniform(*map(float, ranges[name]), shape) for name in COEFFS], axis=-1)


def output_weights(arch: GatedTarget, coeffs: np.ndarray) -> np.ndarray:
    """(I, functions, neurons) w_k: w_0 = sigma_0, w_k = sigma_k - sigma_{k-1}, where sigma_j is the
    slope from grid point j-1 to j and the point before s_0 is (start - delta, 0)."""
    s, _, delta = grid(arch)
    I = coeffs.shape[0]
    v = _trig(coeffs, np.broadcast_to(s, (I, s.size)))  # (I, n, functions): F_i(s_j)
    v = np.swapaxes(v, 1, 2)  # (I, functions, n)
    v_prev = np.concatenate([np.zeros_like(v[..., :1]), v[..., :-1]], axis=-1)
    sigma = (v - v_prev) / delta
    sigma_prev = np.concatenate([np.zeros_like(sigma[..., :1]), sigma[..., :-1]], axis=-1)
    return sigma - sigma_prev


def neuron_indices(permutation: np.ndarray, neurons: int, functions: int, layers: int) -> list[list[list[int]]]:
    """Per layer, per function: the positions (within that layer's d_mlp neurons) of the function's
    neurons. Neuron j = i * neurons + k belongs to function i; layer l holds
    permutation[l*d_mlp:(l+1)*d_mlp] in order (reference `calc_neuron_indices`)."""
    perm = np.asarray(permutation).reshape(layers, -1)
    return [[[int(p) for p in np.flatnonzero(chunk // neurons == i)] for i in range(functions)] for chunk in perm]


def build_gated(arch: GatedTarget, replicates: int, rng_functions: np.random.Generator,
                rng_perm: np.random.Generator, dtype=np.float32) -> tuple[dict, dict]:
    """(params, extras) of the gated network; replicates get independent functions and permutations.

    params (models.py names, row-vector convention): W_E (I, functions+1, D), W_U (I, D, 1),
    layers.l.W_in (I, D, d_mlp), layers.l.b_in (I, d_mlp), layers.l.W_out (I, d_mlp, D).
    extras, every one with the leading replicate axis (float64 / int64): coefficients
    (I, functions, 7), output_weights (I, functions, neurons), permutation (I, functions*neurons).
    Grid points and knots depend only on the arch: see `grid`."""
    I, n_f, n = replicates, arch.functions, arch.neurons
    D, N = n_f + 2, n_f * n
    if N % arch.layers:
        raise ValueError(f"{N} neurons cannot be split evenly into {arch.layers} layers")
    d_mlp = N // arch.layers
    _, t, _ = grid(arch)
    S = suppression(arch)
    coeffs = draw_coefficients(arch, I, rng_functions)
    w = output_weights(arch, coeffs)  # (I, n_f, n)
    perm = np.stack([rng_perm.permutation(N) for _ in range(I)])  # (I, N)

    # Per-neuron quantities indexed by the unpermuted neuron j = i * n + k.
    func = np.repeat(np.arange(n_f), n)  # (N,)
    knot = np.tile(t, n_f)  # (N,)
    if arch.simple_bias:
        bias, ctrl = np.full(N, -S), S - knot
    else:
        bias, ctrl = -knot - S, np.full(N, S)

    W_E = np.zeros((I, n_f + 1, D))
    W_E[:, 0, 0] = 1.0
    W_E[:, np.arange(1, n_f + 1), np.arange(1, n_f + 1)] = 1.0
    W_U = np.zeros((I, D, 1))
    W_U[:, D - 1, 0] = 1.0
    params = {"W_E": W_E, "W_U": W_U}
    for l in range(arch.layers):
        W_in = np.zeros((I, D, d_mlp))
        b_in = np.zeros((I, d_mlp))
        W_out = np.zeros((I, d_mlp, D))
        for r in range(I):
            j = perm[r, l * d_mlp:(l + 1) * d_mlp]  # neuron at each position of this layer
            pos = np.arange(d_mlp)
            W_in[r, 0, pos] = 1.0  # reads x
            W_in[r, 1 + func[j], pos] = ctrl[j]  # reads its own control bit
            b_in[r] = bias[j]
            W_out[r, pos, D - 1] = w[r].reshape(-1)[j]  # writes only into y
        params[f"layers.{l}.W_in"] = W_in
        params[f"layers.{l}.b_in"] = b_in
        params[f"layers.{l}.W_out"] = W_out
    params = {k: v.astype(dtype) for k, v in params.items()}
    extras = {"coefficients": coeffs, "output_weights": w, "permutation": perm.astype(np.int64)}
    return params, extras


def build_for_experiment(exp, dtype=None) -> tuple[dict, dict]:
    """build_gated with the experiment's seeding: trig coefficients from target.seed (or the
    experiment seed) stream "gated_functions", permutation from the experiment seed stream
    "gated_permutation"."""
    arch = exp.target
    if not isinstance(arch, GatedTarget):
        raise TypeError(f"expected a gated target, got {type(arch).__name__}")
    fseed = exp.seed if arch.seed is None else arch.seed
    return build_gated(arch, exp.replicates, stream(fseed, "gated_functions"),
                       stream(exp.seed, "gated_permutation"), np.dtype(dtype or exp.dtype))


def _x_values(x: np.ndarray) -> np.ndarray:
    """Accept x as (I, B) values or (I, B, n_in) inputs whose column 0 is x."""
    x = np.asarray(x, dtype=np.float64)
    return x[..., 0] if x.ndim == 3 else x


def true_functions(extras: dict, x: np.ndarray) -> np.ndarray:
    """(I, B, functions) F_i(x), in float64."""
    return _trig(np.asarray(extras["coefficients"], dtype=np.float64), _x_values(x))


def piecewise_functions(arch: GatedTarget, extras: dict, x: np.ndarray) -> np.ndarray:
    """(I, B, functions) g_i(x) = sum_k w_k ReLU(x - t_k), without gating, in float64."""
    _, t, _ = grid(arch)
    hidden = np.maximum(_x_values(x)[..., None] - t, 0.0)  # (I, B, n)
    return np.einsum("ibk,ifk->ibf", hidden, np.asarray(extras["output_weights"], dtype=np.float64))


def gated_labels(extras: dict, x_with_bits: np.ndarray) -> np.ndarray:
    """(I, B, 1) true labels sum_i alpha_i F_i(x) for inputs (I, B, functions + 1), float64."""
    x_with_bits = np.asarray(x_with_bits, dtype=np.float64)
    F = true_functions(extras, x_with_bits)
    return np.sum(F * x_with_bits[..., 1:], axis=-1, keepdims=True)


class GatedModel(ResidualModel):
    """The gated network: a residual network with an input bias in every layer, ReLU, one output;
    inputs are x and one control bit per function."""

    kind = "gated"

    def dims(self, arch: GatedTarget):
        return dims_of(arch)

    def has_bias(self, arch: GatedTarget, l: int, which: str) -> bool:
        return which == "in"

    def build(self, exp, dtype) -> tuple[Params, dict]:
        return build_for_experiment(exp, dtype)

    def sample(self, arch: GatedTarget, data, shape, rng, dtype) -> np.ndarray:
        """Column 0 is x ~ U[lo,hi), then Bernoulli(p_i) control bits (data.probability, per bit)."""
        from ...engine.data import _uniform, below, feature_probabilities, value_range

        lo, hi = value_range(arch, data)
        x = _uniform(rng, lo, hi, shape + (1,), dtype)
        p = feature_probabilities(data, arch.functions)
        bits = draws.filled(shape + (arch.functions,), dtype, lambda s, n: below(rng, p, s, n))
        return np.concatenate([x, bits], axis=-1)

    def active(self, arch: GatedTarget, x: np.ndarray) -> np.ndarray:
        """Samples with an active control bit."""
        return np.any(x[..., 1:] != 0, axis=-1)

    def true_labels(self, arch: GatedTarget, extras: dict, x: np.ndarray) -> np.ndarray | None:
        return gated_labels(extras, x) if "coefficients" in extras else None


MODELS["gated"] = GatedModel()

"""The APD model: factorised components, their initialisation, the masked forward pass and every
loss term (notes §3-§4).

Storage layout (chosen so that every hot operation is one GEMM): for each decomposed parameter
NAME of shape (d_in, d_out),

    comps["NAME.A"]  (I, d_in, C*m)     column c*m + r is A_c[:, r]
    comps["NAME.B"]  (I, C*m, d_out)    row    c*m + r is B_c[r, :]

so W_c = A_c @ B_c, the summed weight is A @ B, and a layer's masked output is
((a @ A) * mask repeated m times) @ B: the rank-m bottleneck, never a (B, C, d_out) tensor
(notes §10.3.1). `to_components`/`from_components` convert to the documented (C, d_in, m) /
(C, m, d_out) layout of decomposition.npz.
"""
from __future__ import annotations

import math
from typing import Callable

import autograd.numpy as anp
import numpy as np

from ...engine import draws
from ...engine.models import (Layer, Params, Trace, decomposed_params, forward, layers_of,  # noqa: F401
                              n_decomposed_weights, param_shapes)
from ...spec import Target
from .kinds import hooks

Comps = dict  # "NAME.A" / "NAME.B" -> array
SCHATTEN_EPS = 1e-16


def init_components(arch: Target, C: int, m: int, replicates: int, init_scale: float,
                    rng: np.random.Generator, dtype=np.float32) -> Comps:
    """PyTorch-equivalent init (notes §3.2), with fans computed for one replicate.

    xavier_normal_ with gain init_scale on (1, C, d_in, m) and (1, C, m, d_out), or, where the kind
    says so (the gated network), kaiming_uniform_ (fan_in) x init_scale on (C, d_in, m) and (C, m, d_out).
    Drawn in float64 and cast to `dtype` piece by piece (engine/draws.py): the values of a float64
    draw, without a float64 copy of the components."""
    comps: Comps = {}
    kaiming = hooks(arch).init == "kaiming_uniform"
    for name, (d_in, d_out) in param_shapes(arch).items():
        if kaiming:
            bound_a = init_scale * math.sqrt(6.0 / (d_in * m))
            bound_b = init_scale * math.sqrt(6.0 / (m * d_out))
            A = draws.uniform(rng, -bound_a, bound_a, (replicates, C, d_in, m), dtype)
            B = draws.uniform(rng, -bound_b, bound_b, (replicates, C, m, d_out), dtype)
        else:
            std_a = init_scale * math.sqrt(2.0 / (C * d_in * m + d_in * m))
            std_b = init_scale * math.sqrt(2.0 / (C * m * d_out + m * d_out))
            A = draws.normal(rng, 0.0, std_a, (replicates, C, d_in, m), dtype)
            B = draws.normal(rng, 0.0, std_b, (replicates, C, m, d_out), dtype)
        comps.update(from_components(name, A, B))
    return comps


def from_components(name: str, A: np.ndarray, B: np.ndarray) -> Comps:
    """(I, C, d_in, m), (I, C, m, d_out) -> the flat storage layout."""
    I, C, d_in, m = A.shape
    return {f"{name}.A": np.ascontiguousarray(A.transpose(0, 2, 1, 3).reshape(I, d_in, C * m)),
            f"{name}.B": np.ascontiguousarray(B.reshape(I, C * m, B.shape[-1]))}


def to_components(comps: Comps, name: str, C: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat storage -> (I, C, d_in, m), (I, C, m, d_out)."""
    A, B = comps[f"{name}.A"], comps[f"{name}.B"]
    I, d_in, Cm = A.shape
    m = Cm // C
    return A.reshape(I, d_in, C, m).transpose(0, 2, 1, 3), B.reshape(I, C, m, B.shape[-1])


def summed_weight(comps: Comps, name: str):
    """sum_c A_c B_c as one GEMM (I, d_in, C*m) @ (I, C*m, d_out)."""
    return anp.matmul(comps[f"{name}.A"], comps[f"{name}.B"])


def component_weights(comps: Comps, name: str, C: int) -> np.ndarray:
    """Dense per-component weights (I, C, d_in, d_out) (analysis only; never in training)."""
    A, B = to_components(comps, name, C)
    return np.matmul(A, B)


def layer_factors(comps: Comps, layer: Layer):
    """(first, second) factor of a layer in the flat layout; a tied layer uses (B^T, A^T)."""
    A, B = comps[f"{layer.param}.A"], comps[f"{layer.param}.B"]
    if layer.transposed:
        return anp.swapaxes(B, -1, -2), anp.swapaxes(A, -1, -2)
    return A, B


def expand_mask(mask, m: int):
    """(I, B, C) mask -> (I, B, C*m), each component's entry repeated over its rank."""
    return anp.repeat(mask, m, axis=-1)


def apd_linear(arch: Target, comps: Comps, mask_m=None) -> Callable:
    """`linear` for models.forward: the (optionally masked) component bottleneck."""
    by_name = {layer.name: layer for layer in layers_of(arch)}

    def linear(name, a):
        first, second = layer_factors(comps, by_name[name])
        inner = anp.matmul(a, first)
        if mask_m is not None:
            inner = inner * mask_m
        return anp.matmul(inner, second)

    return linear


def apd_forward(arch: Target, frozen: Params, comps: Comps, x, mask=None, m: int | None = None) -> Trace:
    """APD model output on x with all components (mask None) or a (I, B, C) mask (0/1 or float)."""
    mask_m = None
    if mask is not None:
        mask_m = expand_mask(mask, m)
    return forward(arch, frozen, x, apd_linear(arch, comps, mask_m))


def dense_sum_params(arch: Target, frozen: Params, comps: Comps) -> Params:
    """Target-shaped parameters with every decomposed matrix replaced by sum_c W_c."""
    out = dict(frozen)
    for name in decomposed_params(arch):
        out[name] = np.asarray(summed_weight(comps, name))
    return out


# ------------------------------------------------------------------------------------------
# Loss terms. Each returns a per-replicate vector (I,).


def param_match(pairs, N: int):
    """sum over (W_sum, W_target, uses) of uses * ||W_sum - W_target||^2, divided by N."""
    total = 0.0
    for W_sum, W_target, uses in pairs:
        diff = W_sum - W_target
        total = total + uses * anp.sum(diff * diff, axis=(-2, -1))
    return total / N


def faithfulness_loss(arch: Target, comps: Comps, target: Params):
    """Param match (notes §4.2): sum over decomposed layers of ||sum_c W_c - W*||^2 / N.
    A tied matrix is counted once per use, exactly as N counts it."""
    uses: dict[str, int] = {}
    for layer in layers_of(arch):
        uses[layer.param] = uses.get(layer.param, 0) + 1
    pairs = [(summed_weight(comps, name), target[name], k) for name, k in uses.items()]
    return param_match(pairs, n_decomposed_weights(arch))


def mse_loss(y, y_ref):
    """Mean over batch and outputs per replicate (minimality, output reconstruction)."""
    d = y - y_ref
    return anp.mean(d * d, axis=(1, 2))


def act_recon_loss(arch: Target, apd: Trace, tgt: Trace):
    """Hidden-activation reconstruction (notes §4.4): every decomposed layer's pre-bias output, or
    the units the kind names (the residual MLP: ReLU of the pre-bias mlp_in outputs only, the
    reference's convention). Sum of squared errors over listed units / their count, averaged over
    the batch."""
    own = hooks(arch).act_recon
    if own is not None:
        names, act = own(arch)
    else:
        names = [l.name for l in layers_of(arch)]
        act = lambda h: h  # noqa: E731
    return act_recon([(act(apd.post[n]), act(tgt.post[n])) for n in names])


def act_recon(pairs):
    """(1/B) sum_b [sum over (h, h*) pairs and units of (h - h*)^2] / total units."""
    sq, units = 0.0, 0
    for h, h_ref in pairs:
        d = h - h_ref
        sq = sq + anp.sum(d * d, axis=-1)
        units += h_ref.shape[-1]
    return anp.mean(sq, axis=-1) / units


def rank_norms(arch: Target, comps: Comps):
    """S_{l,c,r} = ||A_{l,c}[:, r]||^2 ||B_{l,c}[r, :]||^2 for every layer use, stacked as
    (I, n_layer_uses, C*m). A tied use has the same S as its parameter (notes §3.4)."""
    per_param = {}
    for name in decomposed_params(arch):
        A, B = comps[f"{name}.A"], comps[f"{name}.B"]
        per_param[name] = anp.sum(A * A, axis=1) * anp.sum(B * B, axis=2)
    return anp.stack([per_param[layer.param] for layer in layers_of(arch)], axis=1)


def schatten_loss(arch: Target, comps: Comps, mask, C: int, p: float):
    """Factorised Schatten-p simplicity (notes §4.5):
    1/(N B) sum_b sum_l sum_c sum_r (s_bc S_lcr + 1e-16)^(p/2).

    For a 0/1 mask this is computed in closed form from n_c = #samples where c is active; a float
    mask (Lp mode) takes the generic path."""
    N = n_decomposed_weights(arch)
    S = rank_norms(arch, comps)  # (I, L, C*m)
    I, L, Cm = S.shape
    m = Cm // C
    Bsz = mask.shape[1]
    half_p = p / 2.0
    mask_val = mask if isinstance(mask, np.ndarray) else None
    if mask_val is not None and mask_val.dtype == bool:
        n_c = mask_val.sum(axis=1).astype(S.dtype)  # (I, C)
        per_c = anp.sum(anp.reshape((S + SCHATTEN_EPS) ** half_p, (I, L, C, m)), axis=(1, 3))  # (I, C)
        off = (Bsz - n_c) * (L * m * SCHATTEN_EPS ** half_p)
        return anp.sum(n_c * per_c + off, axis=1) / (N * Bsz)
    # generic: (I, B, C) float mask inside the power
    Sr = anp.reshape(S, (I, 1, L, C, m))
    s = anp.reshape(mask, (I, Bsz, 1, C, 1))
    return anp.sum((s * Sr + SCHATTEN_EPS) ** half_p, axis=(1, 2, 3, 4)) / (N * Bsz)


def schatten_loss_generic(arch: Target, comps: Comps, mask, C: int, p: float):
    """The definition written out (used by tests to pin the closed form)."""
    N = n_decomposed_weights(arch)
    S = rank_norms(arch, comps)
    I, L, Cm = S.shape
    m = Cm // C
    Sr = anp.reshape(S, (I, 1, L, C, m))
    s = anp.reshape(anp.asarray(mask, dtype=S.dtype), (I, mask.shape[1], 1, C, 1))
    return anp.sum((s * Sr + SCHATTEN_EPS) ** (p / 2.0), axis=(1, 2, 3, 4)) / (N * mask.shape[1])


def lp_terms(attr, d_out: int, p: float):
    """a_bc = (Attr_bc / d_L + 1e-16)^(p/2) (notes §4.6): the paper's |A_c(x)|^p."""
    return (attr / d_out + SCHATTEN_EPS) ** (p / 2.0)


def lp_sparsity_loss(terms):
    """sum over components, mean over batch, per replicate."""
    return anp.mean(anp.sum(terms, axis=2), axis=1)

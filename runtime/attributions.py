"""Component attributions Attr (I, B, C) and top-k masks (notes §5, §10.3).

Gradient attributions are computed as batched directional derivatives (forward mode, in closed
form): Attr_c = ||J . dtheta_c||^2, where component c enters layer l as the additive perturbation
a_l A_{l,c} B_{l,c} of its pre-bias output and the rest of the network propagates it linearly
with derivatives taken at the reference activations. One pass over the C tangents replaces the
reference's d_L backward passes. Tangents have layout (I, C, B, d). For residual networks the
perturbations of the residual stream are kept as unevaluated products (coefficient, matrix) and
only ever multiplied into the next narrow matrix (W_in of a later layer, or W_U), so no
(B, C, d_embed) tensor is formed.

Everything is written with autograd.numpy, so the Lp formulation can differentiate through it; in
top-k mode it is called on plain arrays, outside the traced loss.
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np

from .apd import Comps, apd_forward, dense_sum_params, layer_factors
from .models import Params, Trace, activation, layers_of, residual_dims
from .spec import ResidMlpTarget, Target, TmsTarget


def per_component_inner(a, first, C: int):
    """(I, B, d_in) @ first (I, d_in, C*m) -> (I, C, B, m): each component's bottleneck."""
    I, Bsz, _ = a.shape
    inner = anp.matmul(a, first)
    m = inner.shape[-1] // C
    return anp.transpose(anp.reshape(inner, (I, Bsz, C, m)), (0, 2, 1, 3))


def per_component_second(second, C: int):
    """second factor (I, C*m, d_out) -> (I, C, m, d_out)."""
    I, Cm, d_out = second.shape
    return anp.reshape(second, (I, C, Cm // C, d_out))


def per_component_out(a, first, second, C: int):
    """a @ A_c @ B_c for every component: (I, C, B, d_out). Only used where d_out is narrow."""
    return anp.matmul(per_component_inner(a, first, C), per_component_second(second, C))


def _apply(terms, M):
    """Multiply a lazily represented tangent sum_k coef_k @ mat_k by M (I, D, d')."""
    out = 0.0
    Mb = M[:, None]
    for coef, mat in terms:
        out = out + anp.matmul(coef, anp.matmul(mat, Mb))
    return out


def _layer(arch: Target):
    return {layer.name: layer for layer in layers_of(arch)}


def output_tangents(arch: Target, ref: Params, ref_trace: Trace, comps: Comps, C: int):
    """d y / d t along every component's parameter direction: (I, C, B, d_L).

    `ref` holds the weights and `ref_trace` the activations at which derivatives are taken: the
    target's (notes §5.1), or the APD model's summed weights and unmasked activations (§5.2)."""
    layers = _layer(arch)
    pre = ref_trace.pre
    if isinstance(arch, TmsTarget):
        f, s = layer_factors(comps, layers["W"])
        t = per_component_out(pre["W"], f, s, C)
        for k in range(arch.hidden_layers):
            name = f"hidden.{k}"
            f, s = layer_factors(comps, layers[name])
            t = anp.matmul(t, ref[name][:, None]) + per_component_out(pre[name], f, s, C)
        f, s = layer_factors(comps, layers["W.T"])
        t = anp.matmul(t, anp.swapaxes(ref["W"], -1, -2)[:, None]) + per_component_out(pre["W.T"], f, s, C)
        z = np.asarray(ref_trace.preact["out"])
        return t * (z > 0).astype(z.dtype)[:, None]

    _, act_grad = activation(arch)
    _, _, n_layers = residual_dims(arch)
    terms = []
    for l in range(n_layers):
        name_in, name_out = f"layers.{l}.W_in", f"layers.{l}.W_out"
        f, s = layer_factors(comps, layers[name_in])
        dz = per_component_out(pre[name_in], f, s, C)
        if terms:
            dz = dz + _apply(terms, ref[name_in])
        da = dz * act_grad(np.asarray(ref_trace.preact[f"layers.{l}"]))[:, None]
        terms.append((da, ref[name_out][:, None]))
        f, s = layer_factors(comps, layers[name_out])
        terms.append((per_component_inner(pre[name_out], f, C), per_component_second(s, C)))
    dy = _apply(terms, ref["W_U"])
    if isinstance(arch, ResidMlpTarget) and arch.output_activation:
        dy = dy * act_grad(np.asarray(ref_trace.preact["out"]))[:, None]
    return dy


def gradient_attributions(arch: Target, ref: Params, ref_trace: Trace, comps: Comps, C: int):
    """Attr_bc = sum_o (d y_o / d t_c)^2 — no 1/d_L, no square root (notes §5.1)."""
    dy = output_tangents(arch, ref, ref_trace, comps, C)
    return anp.transpose(anp.sum(dy * dy, axis=-1), (0, 2, 1))


def activation_attributions(arch: Target, apd_trace: Trace, comps: Comps, C: int):
    """Attr_bc = sum_l ||a_l A_{l,c} B_{l,c}||^2 on the APD's unmasked pass (notes §5.3), via the
    Gram matrices B_c B_c^T (m x m) instead of materialising the component outputs."""
    total = 0.0
    for layer in layers_of(arch):
        f, s = layer_factors(comps, layer)
        inner = per_component_inner(apd_trace.pre[layer.name], f, C)  # (I, C, B, m)
        sc = per_component_second(s, C)
        G = anp.matmul(sc, anp.swapaxes(sc, -1, -2))  # (I, C, m, m)
        total = total + anp.sum(anp.matmul(inner, G) * inner, axis=-1)
    return anp.transpose(total, (0, 2, 1))


def ablation_attributions(arch: Target, frozen: Params, comps: Comps, x, C: int, m: int) -> np.ndarray:
    """Attr_bc = mean_o (y_full - y_without_c)^2 (notes §5.4, the corrected version); C passes."""
    I, Bsz, _ = x.shape
    y_full = np.asarray(apd_forward(arch, frozen, comps, x).y)
    attr = np.empty((I, Bsz, C), dtype=y_full.dtype)
    for c in range(C):
        mask = np.ones((I, Bsz, C), dtype=y_full.dtype)
        mask[:, :, c] = 0
        d = y_full - np.asarray(apd_forward(arch, frozen, comps, x, mask=mask, m=m).y)
        attr[:, :, c] = np.mean(d * d, axis=-1)
    return attr


def attributions(kind: str, source: str, arch: Target, target: Params, tgt_trace: Trace,
                 comps: Comps, x, C: int, m: int, apd_trace: Trace | None = None):
    """Dispatch on the attribution kind / source of the spec. `apd_trace` is the APD model's
    unmasked pass (computed here when needed and not given)."""
    if kind == "gradient" and source == "target":
        return gradient_attributions(arch, target, tgt_trace, comps, C)
    if kind == "ablation":
        return ablation_attributions(arch, target, comps, x, C, m)
    if apd_trace is None:
        apd_trace = apd_forward(arch, target, comps, x)
    if kind == "activation":
        return activation_attributions(arch, apd_trace, comps, C)
    # gradient from the APD model: Jacobians at the APD's summed weights and unmasked activations
    # are constants (stop-gradient); the component perturbations use the APD's own layer inputs.
    from autograd.tracer import getval

    ref = dense_sum_params(arch, target, {k: getval(v) for k, v in comps.items()})
    ref_trace = Trace(None, apd_trace.pre, apd_trace.post,
                      {k: np.asarray(getval(v)) for k, v in apd_trace.preact.items()})
    return gradient_attributions(arch, ref, ref_trace, comps, C)


# ------------------------------------------------------------------------------------------
# Top-k masks (notes §5.5); ties are broken arbitrarily, as in the reference.


def batch_topk_mask(attr: np.ndarray, k: int) -> np.ndarray:
    """Per replicate, the k largest of the flattened (B x C) attributions."""
    I, Bsz, C = attr.shape
    flat = attr.reshape(I, Bsz * C)
    mask = np.zeros_like(flat, dtype=bool)
    if k >= Bsz * C:
        mask[:] = True
    elif k > 0:
        idx = np.argpartition(-flat, k - 1, axis=1)[:, :k]
        np.put_along_axis(mask, idx, True, axis=1)
    return mask.reshape(I, Bsz, C)


def sample_topk_mask(attr: np.ndarray, k: int) -> np.ndarray:
    """The k largest components of every sample."""
    C = attr.shape[-1]
    mask = np.zeros(attr.shape, dtype=bool)
    if k >= C:
        mask[:] = True
    elif k > 0:
        idx = np.argpartition(-attr, k - 1, axis=-1)[..., :k]
        np.put_along_axis(mask, idx, True, axis=-1)
    return mask


def topk_mask(mode: str, value: float, attr: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
    """batch: k = floor(value * B); sample: k = value per sample; exact: k = number of nonzero
    input entries in the batch (the count itself, without the reference's float round trip)."""
    Bsz = attr.shape[1]
    if mode == "batch":
        return batch_topk_mask(attr, int(value * Bsz))
    if mode == "sample":
        return sample_topk_mask(attr, int(value))
    if mode == "exact":
        return batch_topk_mask(attr, int(np.count_nonzero(x)))
    raise ValueError(f"unknown top-k mode {mode!r}")


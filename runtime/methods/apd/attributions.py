"""Component attributions Attr (I, B, C) and top-k masks (notes §5, §10.3).

Gradient attributions: Attr_bc = sum_o (d y_o / d t_c)^2, where component c enters layer l as the
additive perturbation a_l A_{l,c} B_{l,c} of its pre-bias output and the rest of the network
propagates it linearly with derivatives taken at the reference activations (notes §5.1). A kind may
register closed forms (kinds.APD_KINDS: forward-mode tangents, plain-array kernels); without them
`generic_gradient_attributions` computes the definition by reverse mode, one backward pass per
output (what the reference does), for any forward pass.

Everything is written with autograd.numpy, so the Lp formulation can differentiate through it; in
top-k mode it is called on plain arrays, outside the traced loss.
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np
from autograd import grad

from ...engine.models import Params, Trace, dense_linear, forward, layers_of, n_outputs
from ...spec import Target
from .components import Comps, apd_forward, dense_sum_params, layer_factors
from .kinds import hooks


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


def output_tangents(arch: Target, ref: Params, ref_trace: Trace, comps: Comps, C: int, x=None):
    """d y / d t along every component's parameter direction: (I, C, B, d_L), by the kind's closed
    form (kinds.ApdKind.tangents) or the generic reverse mode.

    `ref` holds the weights and `ref_trace` the activations at which derivatives are taken: the
    target's (notes §5.1), or the APD model's summed weights and unmasked activations (§5.2).
    `x` (the inputs) lets residual networks fold the fixed embedding into the first factor."""
    own = hooks(arch).tangents
    if own is not None:
        return own(arch, ref, ref_trace, comps, C, x)
    return generic_tangents(arch, ref, ref_trace, comps, C, x)


def generic_tangents(arch: Target, ref: Params, ref_trace: Trace, comps: Comps, C: int, x):
    """The definition for any forward pass: with g_l^o = d y_o / d (layer l's pre-bias output) at
    the reference point (one backward pass per output o, autograd), the tangent of component c is
        dy_c^o = sum_l <g_l^o, a_l A_{l,c} B_{l,c}> = sum_l sum_{r in c} (a_l A_l)_r (g_l^o B_l^T)_r.
    The backward passes run on constants (`ref`, x); only the component factors are traced."""
    from autograd.tracer import getval

    layers = layers_of(arch)
    ref = {k: np.asarray(getval(v)) for k, v in ref.items()}
    x = np.asarray(getval(x))
    base = dense_linear(ref, arch)
    zero = {l.name: np.zeros(np.shape(ref_trace.pre[l.name])[:-1] + (l.d_out,), dtype=x.dtype) for l in layers}

    def output(eps: dict, o: int):
        return anp.sum(forward(arch, ref, x, lambda name, a: base(name, a) + eps[name]).y[..., o])

    d_L = n_outputs(arch)
    bottleneck = {}
    for layer in layers:
        first, second = layer_factors(comps, layer)
        bottleneck[layer.name] = (anp.matmul(ref_trace.pre[layer.name], first), second)  # (I, B, C m), (I, C m, d_out)
    outs = []
    for o in range(d_L):
        g = grad(output)(zero, o)
        dy = 0.0
        for name, (u, second) in bottleneck.items():
            dy = dy + u * anp.matmul(g[name], anp.swapaxes(second, -1, -2))  # (I, B, C m)
        I, B, Cm = np.shape(dy)
        outs.append(anp.sum(anp.reshape(dy, (I, B, C, Cm // C)), axis=-1))  # (I, B, C)
    return anp.transpose(anp.stack(outs, axis=-1), (0, 2, 1, 3))  # (I, C, B, d_L)


def _plain(comps: Comps) -> bool:
    return all(isinstance(v, np.ndarray) for v in comps.values())


def gradient_attributions(arch: Target, ref: Params, ref_trace: Trace, comps: Comps, C: int, x=None):
    """Attr_bc = sum_o (d y_o / d t_c)^2 — no 1/d_L, no square root (notes §5.1): the kind's
    plain-array kernel where it has one and the factors are plain arrays, else from the tangents.
    `x`: the inputs, see `output_tangents`."""
    fast = hooks(arch).gradient_attributions
    if fast is not None and _plain(comps):
        attr = fast(arch, ref, ref_trace, comps, C)
        if attr is not None:
            return attr
    dy = output_tangents(arch, ref, ref_trace, comps, C, x)
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
        return gradient_attributions(arch, target, tgt_trace, comps, C, x)
    if kind == "ablation":
        return ablation_attributions(arch, target, comps, x, C, m)
    fast = hooks(arch).apd_gradient_attributions
    if kind == "gradient" and apd_trace is None and fast is not None and _plain(comps):
        attr = fast(arch, target, comps, x, C)
        if attr is not None:
            return attr
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
    return gradient_attributions(arch, ref, ref_trace, comps, C, x)


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


def live_choices(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The top-k mask (I, B, C) restricted to samples of x (I, B, n_in) with a nonzero input: what
    counts as a component being chosen (ties among the all-zero attributions of a zero input pick
    components arbitrarily)."""
    return mask & np.any(x != 0, axis=-1)[..., None]


def topk_mask(topk, attr: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
    """The mask of `topk` (spec.TopK, which computes its own k) on attributions (I, B, C): batch
    and exact modes keep the k largest of the flattened (B x C) entries per replicate, sample mode
    the k largest of every sample (x: the inputs, for exact top-k)."""
    k = topk.k(attr.shape[1], x)
    return sample_topk_mask(attr, k) if topk.mode == "sample" else batch_topk_mask(attr, k)

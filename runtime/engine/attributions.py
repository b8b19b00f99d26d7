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
from .models import Params, Trace, activation, forward, has_bias, layers_of, residual_dims
from ..spec import ResidMlpTarget, Target, TmsTarget


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
    """Multiply a lazily represented tangent sum_k coef_k @ mat_k by M (I, D, d').

    A term is (coef (I, C, B, k), mat): mat is either a dense (I, k, D) matrix shared by the
    components (I, 1, k, D), or ("flat", second) with second the flat (I, C*m, D) factor, whose per-component
    blocks are multiplied by M in one GEMM (I, C*m, D) @ (I, D, d') (notes §10.3.2's N_c)."""
    out = 0.0
    for coef, mat in terms:
        if isinstance(mat, tuple):
            second = mat[1]
            I, Cm, _ = second.shape
            C = coef.shape[1]
            folded = anp.reshape(anp.matmul(second, M), (I, C, Cm // C, M.shape[-1]))
        else:
            folded = anp.matmul(mat, M[:, None])
        out = out + anp.matmul(coef, folded)
    return out


def _stream_times(arch: Target, ref: Params, ref_trace: Trace, l: int, first, x):
    """r_{l-1} @ first (I, B, C*m) for the input r of residual layer l.

    When the inputs x are given and cheaper, uses the low-rank form of the residual stream
    r_{l-1} = x W_E + sum_{j<l} (h_j W_out,j + b_out,j): first W_E @ A (n_in x D x Cm), then the
    narrow products, instead of the (B x D) @ (D x Cm) GEMM (notes §10.3.2: E = W_E A_in)."""
    a = ref_trace.pre[f"layers.{l}.W_in"]
    D = a.shape[-1]
    Bsz = a.shape[1]
    if x is None:
        return anp.matmul(a, first)
    _, d_mlp, _ = residual_dims(arch)
    rows = x.shape[-1] + l * d_mlp
    if rows >= Bsz or rows >= D:
        return anp.matmul(a, first)
    out = anp.matmul(x, anp.matmul(ref["W_E"], first))
    bias = 0.0
    for j in range(l):
        h = ref_trace.pre[f"layers.{j}.W_out"]
        out = out + anp.matmul(h, anp.matmul(ref[f"layers.{j}.W_out"], first))
        if has_bias(arch, j, "out"):
            bias = bias + ref[f"layers.{j}.b_out"]
    if not isinstance(bias, float):
        out = out + anp.matmul(bias[:, None, :], first)
    return out


def _layer(arch: Target):
    return {layer.name: layer for layer in layers_of(arch)}


def output_tangents(arch: Target, ref: Params, ref_trace: Trace, comps: Comps, C: int, x=None):
    """d y / d t along every component's parameter direction: (I, C, B, d_L).

    `ref` holds the weights and `ref_trace` the activations at which derivatives are taken: the
    target's (notes §5.1), or the APD model's summed weights and unmasked activations (§5.2).
    `x` (the inputs, optional) lets residual networks fold the fixed embedding into the first
    factor (x (W_E A) instead of (x W_E) A), which is cheaper when n_in < D."""
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
        inner = _stream_times(arch, ref, ref_trace, l, f, x)
        I, Bsz, Cm = inner.shape
        inner = anp.transpose(anp.reshape(inner, (I, Bsz, C, Cm // C)), (0, 2, 1, 3))
        dz = anp.matmul(inner, per_component_second(s, C))
        if terms:
            dz = dz + _apply(terms, ref[name_in])
        da = dz * act_grad(np.asarray(ref_trace.preact[f"layers.{l}"]))[:, None]
        terms.append((da, ref[name_out][:, None]))
        f, s = layer_factors(comps, layers[name_out])
        terms.append((per_component_inner(pre[name_out], f, C), ("flat", s)))
    dy = _apply(terms, ref["W_U"])
    if isinstance(arch, ResidMlpTarget) and arch.output_activation:
        dy = dy * act_grad(np.asarray(ref_trace.preact["out"]))[:, None]
    return dy


TMS_ROW_BLOCK = 256  # rows per block of the TMS fast path: its (I, C, rows, F) tangents stay in cache


def _tms_attributions_plain(arch: TmsTarget, ref: Params, ref_trace: Trace | None, comps: Comps, C: int,
                            us: list | None = None, z_out=None) -> np.ndarray:
    """Gradient attributions of a TMS model on plain arrays (no autograd), same values as
    `output_tangents`: with u_{j,c} = a_j first_{j,c} (the component's bottleneck at layer j)
    and P_j the product of the weights after layer j,
        dy_c = r * sum_j u_{j,c} (second_{j,c} P_j),
    with the (m, F) maps second_{j,c} P_j formed once per step; per block of rows, the batched
    GEMMs are squared and summed over outputs while the block is in cache. `us` (the (I, C, B, m)
    bottlenecks) and `z_out` (the output pre-activation) may be given instead of `ref_trace`."""
    layers = layers_of(arch)
    weights = [ref[l.param] if not l.transposed else np.swapaxes(ref[l.param], -1, -2) for l in layers]
    I = weights[0].shape[0]
    F = arch.features
    # P_j: product of the layer weights after layer j (identity after the last)
    P = [None] * len(layers)
    acc = None
    for j in reversed(range(len(layers))):
        P[j] = acc
        acc = weights[j] if acc is None else np.matmul(weights[j], acc)
    Ms = []
    if us is None:
        us = [_component_bottleneck(ref_trace.pre[layer.name], layer_factors(comps, layer)[0], C) for layer in layers]
        z_out = ref_trace.preact["out"]
    for j, layer in enumerate(layers):
        _, second = layer_factors(comps, layer)
        Mj = second if P[j] is None else np.matmul(second, P[j])  # (I, C m, F)
        Ms.append(Mj.reshape(I, C, -1, F))
    Bsz = us[0].shape[2]
    r = (np.asarray(z_out) > 0).astype(Ms[0].dtype)  # (I, B, F)
    attr = np.empty((I, Bsz, C), dtype=Ms[0].dtype)
    ones = np.ones(F, dtype=Ms[0].dtype)
    for s0 in range(0, Bsz, TMS_ROW_BLOCK):
        s1 = min(s0 + TMS_ROW_BLOCK, Bsz)
        T = np.matmul(us[0][:, :, s0:s1], Ms[0])  # (I, C, rows, F)
        for u, Mj in zip(us[1:], Ms[1:]):
            T += np.matmul(u[:, :, s0:s1], Mj)
        T *= r[:, None, s0:s1]
        T *= T
        attr[:, s0:s1] = np.swapaxes(np.matmul(T, ones), 1, 2)  # sum over outputs as a GEMV
    return attr


def _component_bottleneck(a, first, C: int, inner=None):
    """(I, B, d_in) @ (I, d_in, C m): each component's bottleneck as a component-major view
    (I, C, B, m) of the one GEMM a @ first (`inner`, if already computed)."""
    if inner is None:
        inner = np.matmul(a, first)
    I, Bsz, Cm = inner.shape
    return np.swapaxes(inner.reshape(I, Bsz, C, Cm // C), 1, 2)


def _tms_apd_attributions_plain(arch: TmsTarget, frozen: Params, comps: Comps, x, C: int) -> np.ndarray:
    """APD-model gradient attributions (notes §5.2) of a TMS model on plain arrays: the APD's
    unmasked pass is run component-major, so its bottlenecks are the attribution's u_{j,c}."""
    layers = layers_of(arch)
    us = []
    a = x
    for layer in layers:
        first, second = layer_factors(comps, layer)
        inner = np.matmul(a, first)  # (I, B, C m)
        us.append(_component_bottleneck(a, first, C, inner))
        a = np.matmul(inner, second)  # the sum of the components' outputs (I, B, d_out)
    z = a + frozen["b"][:, None, :] if arch.bias else a
    return _tms_attributions_plain(arch, dense_sum_params(arch, frozen, comps), None, comps, C, us=us, z_out=z)


def _apd_forward_residual_plain(arch: Target, frozen: Params, comps: Comps, x):
    """The APD model's unmasked pass of a residual network (`models.forward` with the component
    bottleneck, as `apd.apd_forward`), also returning each layer's bottleneck a @ A."""
    u = {}

    def linear(name, a):
        _, l, kind = name.split(".")
        u[(int(l), kind)] = inner = np.matmul(a, comps[f"{name}.A"])
        return np.matmul(inner, comps[f"{name}.B"])

    return forward(arch, frozen, x, linear), u


def _residual_reverse_plain(arch: Target, ref: Params, ref_trace: Trace, comps: Comps, C: int,
                            u: dict | None = None) -> np.ndarray:
    """Gradient attributions of a residual network by reverse mode, one backward pass per output
    unit (worth it for narrow outputs: the gated network has d_L = 1). With g_l^o the gradient of
    output o with respect to layer l's pre-bias output (at the reference point),
        dy_c^o = sum_l <g_l^o, a_l A_{l,c} B_{l,c}> = sum_l sum_{r in c} (a_l A_l)_r (g_l^o B_l^T)_r,
    two (B, C m) GEMMs per layer instead of (C, B, d) tangents."""
    _, act_grad = activation(arch)
    _, _, n_layers = residual_dims(arch)
    pre, preact = ref_trace.pre, ref_trace.preact
    W_U = ref["W_U"]
    I, Bsz, _ = pre["layers.0.W_in"].shape
    d_L = W_U.shape[-1]
    out_act = isinstance(arch, ResidMlpTarget) and arch.output_activation
    if u is None:  # each layer's bottleneck a @ A (I, B, C m)
        u = {(l, w): np.matmul(pre[f"layers.{l}.{w}"], comps[f"layers.{l}.{w}.A"])
             for l in range(n_layers) for w in ("W_in", "W_out")}
    rho = [act_grad(np.asarray(preact[f"layers.{l}"])) for l in range(n_layers)]
    Cm = u[(0, "W_in")].shape[-1]
    blocks = np.repeat(np.eye(C, dtype=u[(0, "W_in")].dtype), Cm // C, axis=0)  # (C m, C): sums over r in c
    attr = 0.0
    for o in range(d_L):
        g_r = np.swapaxes(W_U[:, :, o:o + 1], -1, -2)  # d y_o / d r_L: (I, 1, D), the same for every row
        if out_act:
            g_r = g_r * act_grad(np.asarray(preact["out"]))[:, :, o:o + 1]
        dy = 0.0
        for l in reversed(range(n_layers)):
            B_out = comps[f"layers.{l}.W_out.B"]
            dy = dy + u[(l, "W_out")] * np.matmul(g_r, np.swapaxes(B_out, -1, -2))
            g_z = np.matmul(g_r, np.swapaxes(ref[f"layers.{l}.W_out"], -1, -2)) * rho[l]
            B_in = comps[f"layers.{l}.W_in.B"]
            dy = dy + u[(l, "W_in")] * np.matmul(g_z, np.swapaxes(B_in, -1, -2))
            if l > 0:
                g_r = g_r + np.matmul(g_z, np.swapaxes(ref[f"layers.{l}.W_in"], -1, -2))
        d = np.matmul(dy, blocks)
        attr = attr + d * d
    return attr


REVERSE_MAX_OUTPUTS = 2  # residual networks with at most this many outputs use reverse mode


def _plain(comps: Comps) -> bool:
    return all(isinstance(v, np.ndarray) for v in comps.values())


def gradient_attributions(arch: Target, ref: Params, ref_trace: Trace, comps: Comps, C: int, x=None):
    """Attr_bc = sum_o (d y_o / d t_c)^2 — no 1/d_L, no square root (notes §5.1). `x`: optional
    inputs, see `output_tangents`."""
    if isinstance(arch, TmsTarget) and _plain(comps):
        return _tms_attributions_plain(arch, ref, ref_trace, comps, C)
    if not isinstance(arch, TmsTarget) and _plain(comps) and ref["W_U"].shape[-1] <= REVERSE_MAX_OUTPUTS:
        return _residual_reverse_plain(arch, ref, ref_trace, comps, C)
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
    if kind == "gradient" and apd_trace is None and isinstance(arch, TmsTarget) and _plain(comps):
        return _tms_apd_attributions_plain(arch, target, comps, x, C)
    if (kind == "gradient" and apd_trace is None and not isinstance(arch, TmsTarget) and _plain(comps)
            and target["W_U"].shape[-1] <= REVERSE_MAX_OUTPUTS):
        # narrow outputs (gated): the APD pass on plain arrays keeps its bottlenecks for reverse mode
        trace, u = _apd_forward_residual_plain(arch, target, comps, x)
        ref = dense_sum_params(arch, target, comps)
        return _residual_reverse_plain(arch, ref, trace, comps, C, u)
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


def live_choices(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The top-k mask (I, B, C) restricted to samples of x (I, B, n_in) with a nonzero input: what
    counts as a component being chosen (ties among the all-zero attributions of a zero input pick
    components arbitrarily)."""
    return mask & np.any(x != 0, axis=-1)[..., None]


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


"""APD on TMS: its closed-form attributions and fused loss kernels, registered in APD_KINDS["tms"].

* `tms_tangents`: d y / d t along every component's direction in closed form (forward mode through
  the chain of layers; autograd-traceable, for the Lp formulation);
* `tms_attributions_plain` / `tms_apd_attributions_plain`: the same attributions on plain arrays,
  blocked over rows so the (I, C, rows, F) tangents stay in cache;
* `TmsLoss` / `TmsSparseLoss`: every top-k loss term with its hand-written backward pass (dense,
  vectorised over replicates; or pair-sparse for many components), chosen by `tms_variant`.

All are checked against the generic autograd definitions in the tests.
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np

from ...engine.models import Params, Trace, layers_of
from ...methods.apd.attributions import per_component_out
from ...methods.apd.components import Comps, dense_sum_params, layer_factors
from ...methods.apd.fused import _Common
from ...methods.apd.grouped import Pairs
from ...methods.apd.kinds import APD_KINDS, ApdKind
from .spec import TmsTarget


def tms_tangents(arch: TmsTarget, ref: Params, ref_trace: Trace, comps: Comps, C: int, x=None):
    """d y / d t along every component's parameter direction, (I, C, B, F) (see
    attributions.output_tangents): the chain rule through W, the hidden layers and W^T, then the
    output ReLU's derivative."""
    layers = {layer.name: layer for layer in layers_of(arch)}
    pre = ref_trace.pre
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


TMS_ROW_BLOCK = 256  # rows per block of the TMS fast path: its (I, C, rows, F) tangents stay in cache


def tms_attributions_plain(arch: TmsTarget, ref: Params, ref_trace: Trace | None, comps: Comps, C: int,
                            us: list | None = None, z_out=None) -> np.ndarray:
    """Gradient attributions of a TMS model on plain arrays (no autograd), same values as
    `tms_tangents`: with u_{j,c} = a_j first_{j,c} (the component's bottleneck at layer j)
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
        us = [component_bottleneck(ref_trace.pre[layer.name], layer_factors(comps, layer)[0], C) for layer in layers]
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


def component_bottleneck(a, first, C: int, inner=None):
    """(I, B, d_in) @ (I, d_in, C m): each component's bottleneck as a component-major view
    (I, C, B, m) of the one GEMM a @ first (`inner`, if already computed)."""
    if inner is None:
        inner = np.matmul(a, first)
    I, Bsz, Cm = inner.shape
    return np.swapaxes(inner.reshape(I, Bsz, C, Cm // C), 1, 2)


def tms_apd_attributions_plain(arch: TmsTarget, frozen: Params, comps: Comps, x, C: int) -> np.ndarray:
    """APD-model gradient attributions (notes §5.2) of a TMS model on plain arrays: the APD's
    unmasked pass is run component-major, so its bottlenecks are the attribution's u_{j,c}."""
    layers = layers_of(arch)
    us = []
    a = x
    for layer in layers:
        first, second = layer_factors(comps, layer)
        inner = np.matmul(a, first)  # (I, B, C m)
        us.append(component_bottleneck(a, first, C, inner))
        a = np.matmul(inner, second)  # the sum of the components' outputs (I, B, d_out)
    z = a + frozen["b"][:, None, :] if arch.bias else a
    return tms_attributions_plain(arch, dense_sum_params(arch, frozen, comps), None, comps, C, us=us, z_out=z)


class TmsLoss(_Common):
    """Top-k loss terms of a TMS model (any number of hidden layers) for one batch and mask.

    Masked forward, layer by layer (first, second = A, B; the tied output layer uses B^T, A^T):
        u_j = (a_j @ first_j) * s,  a_{j+1} = u_j @ second_j;   y = ReLU(a_L + b)
    Everything is a batched (I, R, .) array operation: ~10 NumPy calls forward and ~15 backward,
    instead of ~100 autograd primitives with their VJP bookkeeping."""

    def __init__(self, arch, target, C: int, m: int, losses, x, tgt, mask: np.ndarray, dtype, B_total=None):
        self._init_common(arch, target, C, m, losses, dtype, mask, B_total)
        self.layers = layers_of(arch)
        self.x = np.asarray(x, dtype=self.dtype)
        self.S = np.repeat(mask.astype(self.dtype), m, axis=-1)  # (I, R, C m)
        self.y_ref = np.asarray(tgt.y, dtype=self.dtype)
        self.b = np.asarray(target["b"], dtype=self.dtype)[:, None, :] if arch.bias else None
        if losses.act_recon is not None:
            self.ar_ref = {l.name: np.asarray(tgt.post[l.name], dtype=self.dtype) for l in self.layers}
            self.ar_units = sum(l.d_out for l in self.layers)
        self._save: dict = {}

    @staticmethod
    def _pair(F, layer):
        A, B = F[f"{layer.param}.A"], F[f"{layer.param}.B"]
        if layer.transposed:
            return np.swapaxes(B, -1, -2), np.swapaxes(A, -1, -2)
        return A, B

    def forward(self, factors):
        F = dict(zip(self.factor_names, factors))
        save = self._save = {"factors": tuple(factors)}
        vals = {t: np.zeros(self.I, dtype=self.dtype) for t in self.terms}
        if "minimality" in self.terms or "act_recon" in self.terms:
            self._output_terms(self._masked_outputs(F, save), save, vals)
        return self._weight_terms(F, save, vals)

    def _masked_outputs(self, F, save) -> list:
        """Every layer's masked output (dense bottleneck); saves what the backward pass needs."""
        a, acts = self.x, []
        for layer in self.layers:
            first, second = self._pair(F, layer)
            u = np.matmul(a, first)
            u *= self.S
            out = np.matmul(u, second)
            acts.append((a, u, out))
            a = out
        save["acts"] = acts
        return [out for _, _, out in acts]

    def _output_terms(self, outs, save, vals) -> None:
        """ReLU(z) with the frozen bias, then the minimality and act-recon values (both variants)."""
        B, dt = self.B, self.dtype
        z = outs[-1] if self.b is None else outs[-1] + self.b
        y = np.where(z > 0, z, 0.0).astype(dt, copy=False)
        save["z"], save["y"] = z, y
        if "minimality" in self.terms:
            d = y - self.y_ref
            vals["minimality"] = np.sum(d * d, axis=(1, 2)) / (B * d.shape[-1])
        if "act_recon" in self.terms:
            sq = 0.0
            for layer, out in zip(self.layers, outs):
                d = out - self.ar_ref[layer.name]
                sq = sq + np.sum(d * d, axis=(1, 2))
            vals["act_recon"] = sq / (B * self.ar_units)

    def _weight_terms(self, F, save, vals):
        """Faithfulness and Schatten (no activations needed), stacked with the others in term order."""
        if "faithfulness" in self.terms:
            vals["faithfulness"] = self._faith_forward(F, save)
        if "simplicity" in self.terms:
            vals["simplicity"] = self._schatten_forward(F, self.n_active, self.B, save)
        return np.stack([np.asarray(vals[t], dtype=self.dtype) for t in self.terms])

    def _backward_start(self, factors, g):
        """Gradients of the weight-only terms, and the seed gradient at the output layer (both
        variants): (F, save, grads, g_out or None, act-recon scale or None)."""
        F = dict(zip(self.factor_names, factors))
        save = self._saved_for(factors)
        dt, B = self.dtype, self.B
        g = {t: np.asarray(g[k], dtype=dt) for k, t in enumerate(self.terms)}
        grads = self._grads_with_faithfulness(F, save, g)
        if "simplicity" in self.terms:
            self._schatten_backward(F, self.n_active, B, save, g["simplicity"], grads)
        g_out = ar_scale = None
        if "minimality" in self.terms or "act_recon" in self.terms:
            z, y = save["z"], save["y"]
            if "minimality" in self.terms:
                scale = (2.0 * g["minimality"] / (B * y.shape[-1])).astype(dt)[:, None, None]
                g_out = np.where(z > 0, (y - self.y_ref) * scale, 0.0).astype(dt, copy=False)
            else:
                g_out = np.zeros_like(z)
            if "act_recon" in self.terms:
                ar_scale = (2.0 * g["act_recon"] / (B * self.ar_units)).astype(dt)[:, None, None]
        return F, save, grads, g_out, ar_scale

    def backward(self, factors, g):
        F, save, grads, g_out, ar_scale = self._backward_start(factors, g)
        if g_out is not None:
            acts = save["acts"]
            for j in reversed(range(len(self.layers))):
                layer = self.layers[j]
                a, u, out = acts[j]
                if "act_recon" in self.terms:
                    g_out = g_out + (out - self.ar_ref[layer.name]) * ar_scale
                first, second = self._pair(F, layer)
                g_inner = np.matmul(g_out, np.swapaxes(second, -1, -2))
                g_inner *= self.S
                gA, gB = grads[f"{layer.param}.A"], grads[f"{layer.param}.B"]
                if layer.transposed:  # first = B^T, second = A^T
                    gB += np.matmul(np.swapaxes(g_inner, -1, -2), a)
                    gA += np.matmul(np.swapaxes(g_out, -1, -2), u)
                else:
                    gA += np.matmul(np.swapaxes(a, -1, -2), g_inner)
                    gB += np.matmul(np.swapaxes(u, -1, -2), g_out)
                if j > 0:
                    g_out = np.matmul(g_inner, np.swapaxes(first, -1, -2))
        self._save = {}
        return [grads[n] for n in self.factor_names]


class TmsSparseLoss(TmsLoss):
    """TmsLoss with the masked pass on the active (sample, component) pairs only, grouped by
    component (as ResidualLoss): for many components (TMS 40-10: C = 40, ~2 active per sample)
    this replaces (R x d x C m) dense products by per-component GEMMs over their active rows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        mask = self.S[:, :, :: self.m] > 0
        self.pairs = [Pairs(mask[i]) for i in range(self.I)]

    def _masked_pass(self, F):
        m, dt = self.m, self.dtype
        I = self.I
        per_layer = []
        a_all = self.x
        outs = []
        for layer in self.layers:
            first, second = self._pair(F, layer)
            d_out = second.shape[-1]
            out = np.empty((I, a_all.shape[1], d_out), dtype=dt)
            saved = []
            for i in range(I):
                P = self.pairs[i]
                Ai = a_all[i][P.b]
                inner, op = P.bottleneck(Ai, first[i], second[i], m, dt)
                out[i] = P.scatter(op, d_out, dt)
                saved.append((Ai, inner))
            per_layer.append(saved)
            outs.append(out)
            a_all = out
        return per_layer, outs

    def _masked_outputs(self, F, save) -> list:
        per_layer, outs = self._masked_pass(F)
        save["pairs"], save["outs"] = per_layer, outs
        return outs

    def backward(self, factors, g):
        F, save, grads, g_out, ar_scale = self._backward_start(factors, g)
        dt, m = self.dtype, self.m
        if g_out is not None:
            per_layer, outs = save["pairs"], save["outs"]
            for j in reversed(range(len(self.layers))):
                layer = self.layers[j]
                if "act_recon" in self.terms:
                    g_out = g_out + (outs[j] - self.ar_ref[layer.name]) * ar_scale
                first, second = self._pair(F, layer)
                gA, gB = grads[f"{layer.param}.A"], grads[f"{layer.param}.B"]
                d_in = first.shape[1]
                g_prev = np.empty((self.I, g_out.shape[1], d_in), dtype=dt) if j > 0 else None
                for i in range(self.I):
                    P = self.pairs[i]
                    Ai, inner = per_layer[j][i]
                    Go = g_out[i][P.b]
                    ga_p = np.empty((P.K, d_in), dtype=dt) if j > 0 else None
                    f_i, s_i, gA_i, gB_i = first[i], second[i], gA[i], gB[i]
                    for c, s, e in P.groups:
                        sl = slice(c * m, (c + 1) * m)
                        g_inner = np.matmul(Go[s:e], s_i[sl].T)  # (n, m)
                        if layer.transposed:  # first = B^T, second = A^T
                            gA_i[:, sl] += np.matmul(Go[s:e].T, inner[s:e])
                            gB_i[sl] += np.matmul(g_inner.T, Ai[s:e])
                        else:
                            gB_i[sl] += np.matmul(inner[s:e].T, Go[s:e])
                            gA_i[:, sl] += np.matmul(Ai[s:e].T, g_inner)
                        if j > 0:
                            np.matmul(g_inner, f_i[:, sl].T, out=ga_p[s:e])
                    if j > 0:
                        g_prev[i] = P.scatter(ga_p, d_in, dt)
                if j > 0:
                    g_out = g_prev
        self._save = {}
        return [grads[n] for n in self.factor_names]


def tms_variant(I: int, R: int, C: int, m: int, arch) -> type:
    """Dense or pair-sparse TMS kernel, by a rough cost model: the dense pass does ~3 x 2 R C m
    (d_in + d_out) FLOPs per layer and replicate (at ~3e10 FLOP/s effective, with the
    elementwise passes), the sparse one ~12 small NumPy calls per layer, replicate and
    component (~4 us each)."""
    L = len(layers_of(arch))
    dims = sum(l.d_in + l.d_out for l in layers_of(arch))
    dense = I * 6.0 * R * C * m * dims / 3e10
    sparse = I * C * L * 12 * 4e-6
    return TmsSparseLoss if sparse < dense else TmsLoss



# ------------------------------------------------------------------------------------------
# Residual MLP: products shared by the gradient attributions and the fused loss


def _tms_fused(arch, target, C, m, losses, x, tgt, mask, dtype, B_total=None, variant=None, pre=None):
    """The fused loss of one batch; `variant` forces "dense" / "sparse" (default: `tms_variant`)."""
    cls = {"dense": TmsLoss, "sparse": TmsSparseLoss}.get(variant) or tms_variant(*mask.shape, m, arch)
    return cls(arch, target, C, m, losses, x, tgt, mask, dtype, B_total)


def _flops(exp, arch: TmsTarget, rows: float, K: float | None) -> dict:
    """cost.step_flops's TMS terms: the closed-form attributions (per layer use j, the bottleneck
    2 B d_in Cm, its map to the output 2 Cm d_out F with the later weights, the tangents 2 C B m F)
    and, for the dense kernel (few components), the dense masked pass 3 x 2 B Cm (d_in + d_out)."""
    dc = exp.decompose
    C, m = dc.components, dc.rank
    Cm, F = C * m, arch.features
    layers = layers_of(arch)
    out = {"attributions": float(sum(2 * rows * l.d_in * Cm + 2 * Cm * l.d_out * F + 2 * C * rows * m * F
                                     for l in layers))}
    if K is not None:
        dense = tms_variant(exp.replicates, max(int(rows), 1), C, m, arch) is TmsLoss
        out["masked_forward"] = sum(3 * 2 * (rows * Cm if dense else K * m) * (l.d_in + l.d_out) for l in layers)
    return out


APD_KINDS["tms"] = ApdKind(
    fused=_tms_fused, path="fused-tms", tangents=tms_tangents, flops=_flops,
    gradient_attributions=lambda arch, ref, ref_trace, comps, C: tms_attributions_plain(arch, ref, ref_trace, comps, C),
    apd_gradient_attributions=tms_apd_attributions_plain,
)

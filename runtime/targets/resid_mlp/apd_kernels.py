"""APD on residual networks (the residual MLP, and the gated network, which registers the same
kernels): closed-form attributions and the fused loss, registered in APD_KINDS.

* `residual_tangents`: d y / d t along every component's direction in forward mode, the residual
  stream's perturbations kept as unevaluated products (coefficient, matrix) and only ever multiplied
  into the next narrow matrix (W_in of a later layer, or W_U), so no (B, C, d_embed) tensor is
  formed (notes §10.3.2); autograd-traceable;
* `residual_reverse_plain`: reverse mode, one backward pass per output (narrow outputs: the gated
  network's d_L = 1);
* `ResidualPre`: the residual MLP's gradient attributions from the target and the fused loss's
  faithfulness products in one set of GEMMs; `ResidualLoss`: every top-k loss term with its
  hand-written backward pass.

All are checked against the generic autograd definitions in the tests.
"""
from __future__ import annotations

import dataclasses

import autograd.numpy as anp
import numpy as np

from ...engine.models import Params, Trace, activation, forward, layers_of, n_inputs, n_outputs
from ...spec import Target
from ...methods.apd.attributions import per_component_inner, per_component_second
from ...methods.apd.components import Comps, dense_sum_params, layer_factors
from ...methods.apd import fused as apd_fused
from ...methods.apd.fused import _Common
from ...methods.apd.grouped import Grouped, GroupedRows
from ...methods.apd.kinds import APD_KINDS, ApdKind, hooks
from ...engine.kernels import GradParts, RowsProduct
from .model import has_bias, output_activation, residual_dims


def residual_tangents(arch, ref: Params, ref_trace: Trace, comps: Comps, C: int, x=None):
    """d y / d t along every component's parameter direction, (I, C, B, d_L) (see
    attributions.output_tangents). `x` (the inputs, optional) folds the fixed embedding into the
    first factor (x (W_E A) instead of (x W_E) A), which is cheaper when n_in < D."""
    layers = {layer.name: layer for layer in layers_of(arch)}
    pre = ref_trace.pre
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
    if output_activation(arch):
        dy = dy * act_grad(np.asarray(ref_trace.preact["out"]))[:, None]
    return dy


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


def apd_forward_residual_plain(arch: Target, frozen: Params, comps: Comps, x):
    """The APD model's unmasked pass of a residual network (`models.forward` with the component
    bottleneck, as `apd.apd_forward`), also returning each layer's bottleneck a @ A."""
    u = {}

    def linear(name, a):
        _, l, kind = name.split(".")
        u[(int(l), kind)] = inner = np.matmul(a, comps[f"{name}.A"])
        return np.matmul(inner, comps[f"{name}.B"])

    return forward(arch, frozen, x, linear), u


def residual_reverse_plain(arch: Target, ref: Params, ref_trace: Trace, comps: Comps, C: int,
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
    out_act = output_activation(arch)
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


class ResidualLoss(_Common):
    """Top-k loss terms of a residual network for one batch and mask (constants).

    Masked forward of layer l on the residual stream r (r_0 = x W_E, constant):
        z_l = sum_{c active} (r_{l-1} A_in,c) B_in,c  (+ b_in),  h_l = act(z_l)
        o_l = sum_{c active} (h_l A_out,c) B_out,c  (+ b_out),   r_l = r_{l-1} + o_l
        y = r_L W_U  (act(y) with an output activation)
    Terms: faithfulness, minimality mean (y - y*)^2, act-recon (residual MLP: ReLU of the
    pre-bias W_in outputs; gated: every layer's pre-bias output), Schatten.

    Every masked product goes through `grouped.Grouped` (dense or per component, by cost). With
    the residual-MLP precompute (`ResidualPre`), layer 0's bottleneck r_0 A_in = x (W_E A_in) is
    taken from the attribution pass, and the last layer's output is only ever read through W_U,
    so it is evaluated as u (B_out W_U) with the attribution's N = B_out W_U (C m x d_L) instead
    of through the d_embed-wide B_out.

    Gradients of the d_embed-wide factors: A_in's masked-pass part is added into the faithfulness
    GEMM's output in place (per component, only the active components' columns), and layer 0's is
    one GEMM for both (`_fold_first_layer`); B_out's gradient is never formed: its faithfulness
    part A_out^T G (`kernels.RowsProduct`) and masked-pass rows (`grouped.GroupedRows`) are left
    to FastAdam, which evaluates them a block of components at a time. `backward_lazy` returns
    these as `kernels.GradParts`, with the Schatten term as a per-column / per-row scale of the
    factor (FastAdam adds it in cache, the unit-norm projection only changes the scale);
    `backward` returns plain arrays."""

    def __init__(self, arch, target, C: int, m: int, losses, x, tgt, mask: np.ndarray, dtype, B_total=None,
                 pre=None):
        self._init_common(arch, target, C, m, losses, dtype, mask, B_total)
        self.pre = pre
        D, d_mlp, n_layers = residual_dims(arch)
        self.D, self.d_mlp, self.n_layers = D, d_mlp, n_layers
        self.act, self.act_grad = activation(arch)
        self.grouped = [Grouped(mask[i], m, self.dtype) for i in range(self.I)]
        self.x = np.asarray(x, dtype=self.dtype)
        self.pairs = [g.pairs for g in self.grouped]
        self.r0 = np.asarray(tgt.pre["layers.0.W_in"], dtype=self.dtype)  # x @ W_E: shared with the target pass
        self.W_U = np.asarray(target["W_U"], dtype=self.dtype)
        self.y_ref = np.asarray(tgt.y, dtype=self.dtype)
        self.b_in = [np.asarray(target[f"layers.{l}.b_in"], dtype=self.dtype) if has_bias(arch, l, "in") else None
                     for l in range(n_layers)]
        self.b_out = [np.asarray(target[f"layers.{l}.b_out"], dtype=self.dtype) if has_bias(arch, l, "out") else None
                      for l in range(n_layers)]
        self.out_act = output_activation(arch)
        self.resid_act_recon = hooks(arch).act_recon is not None  # ReLU of W_in outputs (else every layer's)
        if losses.act_recon is not None:
            names = [f"layers.{l}.W_in" for l in range(n_layers)]
            if not self.resid_act_recon:
                names = [layer.name for layer in layers_of(arch)]
            self.ar_names = names
            self.ar_ref = {n: np.asarray(tgt.post[n], dtype=self.dtype) for n in names}
            if self.resid_act_recon:
                self.ar_ref = {n: np.where(h > 0, h, 0.0).astype(self.dtype) for n, h in self.ar_ref.items()}
            self.ar_units = sum(self.ar_ref[n].shape[-1] for n in names)
        # W_out's output feeds an act-recon term only for the gated network
        self.ar_out = losses.act_recon is not None and not self.resid_act_recon
        # the d_embed-wide factors whose gradients stay lazy (kernels.GradParts): large ones only (the
        # gated network's are tiny: plain arrays are cheaper there)
        size = self.I * D * C * m
        self.big = tuple(f"layers.{l}.{w}" for l in range(n_layers) for w in ("W_in.A", "W_out.B")
                         if size >= apd_fused.LAZY_MIN_SIZE)
        # <gradient, A> per column of the A factors, from the loss's own products (for the unit-norm
        # projection of lazy gradients; LossProblem sets it when the run normalises A)
        self.want_col_dots = False
        self._save: dict = {}

    def _fold_first_layer(self, pre) -> bool:
        """Take layer 0's A_in gradient as [G | W_E^T] [B_in^T ; x^T g_u] (one GEMM, 2 D (d_mlp +
        n_feats) C m FLOPs, on the features present) instead of the faithfulness GEMM plus
        per-component column blocks added through d_embed-long strides? Measured as fast on the
        1-layer residual MLP (more FLOPs, less memory traffic); used wherever the per-component
        form would be."""
        return pre is not None and not all(G.dense_is_cheaper(self.D) for G in self.grouped)

    def _folded_first_layer_grad(self, F, save, out):
        """out (I, D, C m) <- G B_in^T + W_E[feats]^T Y per replicate (save: faith_G, fold_Y)."""
        pre = save["pre"]
        G_faith = save.get("faith_G", {}).get("layers.0.W_in.A")
        B_in = F["layers.0.W_in.B"]
        for i in range(self.I):
            Y, basis = save["fold_Y"][i], pre.basis0[i]
            if G_faith is None:
                np.matmul(basis.T, Y, out=out[i])
            else:
                left = np.concatenate([G_faith[i], basis.T], axis=1)  # (D, d_mlp + n_feats)
                np.matmul(left, np.concatenate([B_in[i].T, Y], axis=0), out=out[i])
        return out

    def _via_N(self, pre, l: int) -> bool:
        """Is layer l's output read only through W_U (so it can be taken through N = B_out W_U)?"""
        return pre is not None and l == self.n_layers - 1 and not self.ar_out

    # -- masked pass of one replicate -----------------------------------------------------------

    def _forward_replicate(self, i, F, save):
        G = self.grouped[i]
        pre = save.get("pre")
        r = self.r0[i]
        post = {}
        y_pre = None
        for l in range(self.n_layers):
            A_in, B_in = F[f"layers.{l}.W_in.A"][i], F[f"layers.{l}.W_in.B"][i]
            A_out, B_out = F[f"layers.{l}.W_out.A"][i], F[f"layers.{l}.W_out.B"][i]
            # r_0 A_in = x (W_E A_in): the attribution pass computed it for every row
            inner = pre.inner0[i] if l == 0 and pre is not None else None
            u = G.first(r, A_in, inner=inner)
            z = G.second(u, B_in)
            post[f"layers.{l}.W_in"] = z
            zb = z if self.b_in[l] is None else z + self.b_in[l][i]
            h = np.asarray(self.act(zb), dtype=self.dtype)
            u2 = G.first(h, A_out)
            save[(i, l)] = (r, u, zb, h, u2)
            rb = r if self.b_out[l] is None else r + self.b_out[l][i]
            if self._via_N(pre, l):
                y_pre = np.matmul(rb, self.W_U[i])
                y_pre += G.second(u2, pre.N[i])
            else:
                o = G.second(u2, B_out)
                post[f"layers.{l}.W_out"] = o
                r = rb + o
        if y_pre is None:
            y_pre = np.matmul(r, self.W_U[i])
        y = np.asarray(self.act(y_pre), dtype=self.dtype) if self.out_act else y_pre
        save[(i, "y")] = (y, y_pre)
        save[(i, "post")] = post
        return y, post

    def forward(self, factors):
        F = dict(zip(self.factor_names, factors))
        save = self._save = {"pre": self._pre_for(factors), "factors": tuple(factors)}
        I, B = self.I, self.B
        vals = {t: np.zeros(I, dtype=self.dtype) for t in self.terms}
        if "minimality" in self.terms or "act_recon" in self.terms:
            for i in range(I):
                y, post = self._forward_replicate(i, F, save)
                if "minimality" in self.terms:
                    d = y - self.y_ref[i]
                    vals["minimality"][i] = np.sum(d * d) / (B * d.shape[-1])
                if "act_recon" in self.terms:
                    sq = 0.0
                    for n in self.ar_names:
                        h = post[n]
                        if self.resid_act_recon:
                            h = np.where(h > 0, h, 0.0)
                        d = h - self.ar_ref[n][i]
                        sq = sq + np.sum(d * d, axis=-1)
                    vals["act_recon"][i] = np.sum(sq) / B / self.ar_units
        if "faithfulness" in self.terms:
            vals["faithfulness"] = self._faith_forward(F, save)
        if "simplicity" in self.terms:
            vals["simplicity"] = self._schatten_forward(F, self.n_active, B, save)
        return np.stack([np.asarray(vals[t], dtype=self.dtype) for t in self.terms])

    def backward(self, factors, g):
        grads = self.backward_lazy(factors, g)
        return [np.asarray(grads[n]) if isinstance(grads[n], GradParts) else grads[n] for n in self.factor_names]

    def backward_lazy(self, factors, g) -> dict:
        """name -> gradient: plain arrays, and `GradParts` for the d_embed-wide factors."""
        F = dict(zip(self.factor_names, factors))
        save = self._saved_for(factors)
        g = {t: g[k] for k, t in enumerate(self.terms)}
        dt = self.dtype
        # the faithfulness GEMMs start every factor's gradient (zeros without the term)
        pre = save.get("pre")
        sparse_pass = "minimality" in self.terms or "act_recon" in self.terms
        # layer 0's input rows are x W_E: the masked pass's part of A_in's gradient, r_0^T g_u,
        # is W_E^T (x^T g_u), one GEMM with the faithfulness part (`_fold_first_layer`)
        fold = sparse_pass and "layers.0.W_in.A" in self.big and self._fold_first_layer(pre)
        fold_A = ("layers.0.W_in.A",) if fold else ()
        if fold:
            save["fold_Y"] = [None] * self.I
        # the second factors of the d_embed-wide products (B_out): their gradient, A_out^T G plus the
        # masked pass's per-component rows, is left to FastAdam to form a row block at a time
        rows_B = tuple(n for n in self.big if n.endswith(".B"))
        save["rows_B"] = {n: [None] * self.I for n in rows_B}
        grads = self._grads_with_faithfulness(F, save, g, fold_A + rows_B)
        parts = {n: [grads[n]] for n in self.big if n not in fold_A + rows_B}
        # <faithfulness part of A's gradient, A> per column = sum_k B[j, k] (A^T G)[j, k]: from B's gradient
        dots = {}
        for n in self.big if self.want_col_dots else ():
            if n.endswith(".A"):
                p = n[:-2]
                dots[n] = (np.einsum("ijk,ijk->ij", F[f"{p}.B"], grads[f"{p}.B"]) if "faithfulness" in self.terms
                           else np.zeros((self.I, F[n].shape[-1]), dtype=dt))
        if "simplicity" in self.terms:
            self._schatten_backward(F, self.n_active, self.B, save, g["simplicity"], grads, defer=self.big)
        if sparse_pass:
            # the masked pass adds its part into the gradients in place (per component: only the
            # active components' rows / columns), except layer 0's folded A_in gradient
            for i in range(self.I):
                self._backward_replicate(i, F, save, g, grads, dots)
            for n in fold_A:
                parts[n] = [self._folded_first_layer_grad(F, save, np.empty_like(F[n]))]
        faith_G = save.get("faith_G", {})
        for n in rows_B:
            parts[n] = []
            if n in faith_G:  # A^T G, with a copy of the (small) first factor: the optimiser updates it first
                parts[n].append(RowsProduct(F[n[:-2] + ".A"].copy(), faith_G[n]))
            if sparse_pass:
                parts[n].append(GroupedRows(list(zip(self.grouped, *zip(*save["rows_B"][n]))), F[n].shape, dt))
            if not parts[n]:
                parts[n] = [np.zeros_like(F[n])]
        u_sch = save.get("schatten_u", {})
        a2 = save.get("schatten_a2", {})
        out = {}
        for n in self.factor_names:
            if n not in self.big:
                out[n] = grads[n]
                continue
            axis = 1 if n.endswith(".A") else 2
            out[n] = GradParts(parts[n], X=F[n], w=u_sch.get(n), axis=axis, col_dots=dots.get(n),
                               x_sq=a2.get(n[:-2]) if axis == 1 else None, row_align=1 if axis == 1 else self.m)
        self._save = {}
        return out

    def _backward_replicate(self, i, F, save, g, grads, dots):
        G = self.grouped[i]
        pre = save.get("pre")
        dt, B = self.dtype, self.B
        y, y_pre = save[(i, "y")]
        post = save[(i, "post")]
        d_L = y.shape[-1]
        gy = None
        if "minimality" in self.terms:
            gy = (y - self.y_ref[i]) * dt.type(2.0 * g["minimality"][i] / (B * d_L))
            if self.out_act:
                gy = gy * self.act_grad(y_pre)
            g_r = np.matmul(gy, self.W_U[i].T)
        else:
            g_r = np.zeros((self.r0.shape[1], self.D), dtype=dt)
        ar = "act_recon" in self.terms
        if ar:
            ar_scale = dt.type(2.0 * g["act_recon"][i] / (B * self.ar_units))
        for l in reversed(range(self.n_layers)):
            r, u, zb, h, u2 = save.pop((i, l))
            A_in, B_in = F[f"layers.{l}.W_in.A"][i], F[f"layers.{l}.W_in.B"][i]
            A_out, B_out = F[f"layers.{l}.W_out.A"][i], F[f"layers.{l}.W_out.B"][i]
            g_o = g_r
            if self.ar_out and ar:
                n = f"layers.{l}.W_out"
                g_o = g_o + (post[n] - self.ar_ref[n][i]) * ar_scale
            if self._via_N(pre, l):  # the output gradient is gy W_U^T: through N = B_out W_U
                g_u2 = G.grad_u(gy, pre.N[i]) if gy is not None else np.zeros_like(u2)
            else:
                g_u2 = G.grad_u(g_o, B_out)
            nB = f"layers.{l}.W_out.B"
            if nB in save["rows_B"]:
                save["rows_B"][nB][i] = (u2, g_o)  # formed by FastAdam (GroupedRows)
            else:
                G.grad_second(u2, g_o, out=grads[nB][i], add=True)
            G.grad_first(h, g_u2, out=grads[f"layers.{l}.W_out.A"][i], add=True)
            g_z = G.grad_input(g_u2, A_out)
            g_z *= self.act_grad(zb)
            if ar:
                n = f"layers.{l}.W_in"
                z = post[n]
                if self.resid_act_recon:
                    g_z += np.where(z > 0, (np.where(z > 0, z, 0.0) - self.ar_ref[n][i]) * ar_scale, 0.0).astype(dt)
                else:
                    g_z += (z - self.ar_ref[n][i]) * ar_scale
            G.grad_second(u, g_z, out=grads[f"layers.{l}.W_in.B"][i], add=True)
            g_u = G.grad_u(g_z, B_in)
            nA = f"layers.{l}.W_in.A"
            if l == 0 and "fold_Y" in save:
                save["fold_Y"][i] = G.grad_first(self.x[i][:, pre.feats[i]], g_u)  # x^T g_u on the present features
            else:
                G.grad_first(r, g_u, out=grads[nA][i], add=True)
            if nA in dots:
                dots[nA][i] += G.col_dots(u, g_u)
            if l > 0:
                g_r = g_r + G.grad_input(g_u, A_in)


# ------------------------------------------------------------------------------------------
# TMS (dense, vectorised over replicates)


class ResidualPre:
    """One step's batch-independent products of a residual MLP, shared between the gradient
    attributions from the target (plain NumPy, before the mask exists) and `ResidualLoss`.

    For layer l with factors A_in, B_in, A_out, B_out and the faithfulness residuals
    D_in = A_in B_in - W_in*, D_out = A_out B_out - W_out*:
      * K1 = [V_l ; D_in^T] @ A_in, one GEMM: V_l are the rows spanning the target's residual
        stream at layer l's input (W_E's rows for the features present in the batch, the earlier
        W_out*, the summed output biases), so the layer's bottleneck on every row is
        [x, h_0*, .., 1] @ (V_l A_in) (notes §10.3.2's E = W_E A_in), and D_in^T A_in is the
        faithfulness gradient of B_in (up to its scale);
      * K2 = B_out @ [W_in*_{l+1} .. | W_U | D_out^T], one GEMM: the per-component maps of the
        component's output perturbation into every later layer and the output (N_c = B_out,c W_U),
        and B_out D_out^T, the faithfulness gradient of A_out (transposed, unscaled).
    The attributions then follow the forward-mode recursion of notes §10.3.2 with (C, rows, .)
    tangents. `attr` is (I, R, C) like `attributions.gradient_attributions`."""

    def __init__(self, arch, target, tgt, comps, C: int, m: int, x, dtype):
        D, d_mlp, L = residual_dims(arch)
        act, act_grad = activation(arch)
        dt = np.dtype(dtype)
        self.C, self.m = C, m
        names = [f"layers.{l}.{w}" for l in range(L) for w in ("W_in", "W_out")]
        self.factor_names = tuple(f"{n}.{ab}" for n in names for ab in ("A", "B"))
        self._factors = tuple(comps[n] for n in self.factor_names)
        I, R, _ = x.shape
        Cm = C * m
        self.diff = {n: np.empty(comps[f"{n}.A"].shape[:2] + (comps[f"{n}.B"].shape[2],), dtype=dt) for n in names}
        self.AtD = {f"layers.{l}.W_in": np.empty((I, Cm, d_mlp), dtype=dt) for l in range(L)}  # A_in^T D_in
        self.DBt = {f"layers.{l}.W_out": np.empty((I, d_mlp, Cm), dtype=dt) for l in range(L)}  # D_out B_out^T
        self.inner0 = np.empty((I, R, Cm), dtype=dt)
        self.attr = np.empty((I, R, C), dtype=dt)
        self.N = []  # per replicate: B_out W_U (C m, d_L) of the last layer (a view into its K2)
        self.feats, self.basis0 = [], []  # per replicate: the features present, W_E's rows for them
        out_act = output_activation(arch)
        for i in range(I):
            xi = x[i]
            feats = np.flatnonzero(np.any(xi != 0, axis=0))
            W_E = target["W_E"][i]
            self.feats.append(feats)
            self.basis0.append(W_E[feats])
            W_U = target["W_U"][i]
            F_out = W_U.shape[1]
            terms = []  # (coef (C, R, k), P (k, n_later) or (C, k, n_later), layer created)
            bias_sum = None
            for l in range(L):
                A_in, B_in = comps[f"layers.{l}.W_in.A"][i], comps[f"layers.{l}.W_in.B"][i]
                A_out, B_out = comps[f"layers.{l}.W_out.A"][i], comps[f"layers.{l}.W_out.B"][i]
                W_in, W_out = target[f"layers.{l}.W_in"][i], target[f"layers.{l}.W_out"][i]
                d_in_ = self.diff[f"layers.{l}.W_in"][i]
                np.matmul(A_in, B_in, out=d_in_)
                d_in_ -= W_in
                d_out_ = self.diff[f"layers.{l}.W_out"][i]
                np.matmul(A_out, B_out, out=d_out_)
                d_out_ -= W_out
                # the layer's input on every row: low-rank stream when it is narrower than the batch
                basis = [self.basis0[i]] + [target[f"layers.{j}.W_out"][i] for j in range(l)]
                coefs = [xi[:, feats]] + [tgt.pre[f"layers.{j}.W_out"][i] for j in range(l)]
                if bias_sum is not None:
                    basis.append(bias_sum[None])
                    coefs.append(np.ones((R, 1), dtype=dt))
                nb = sum(b.shape[0] for b in basis)
                inner = self.inner0[i] if l == 0 else np.empty((R, Cm), dtype=dt)
                if nb < R:
                    K1 = np.matmul(_padded(np.concatenate(basis + [d_in_.T], axis=0), 0), A_in)
                    np.matmul(np.concatenate(coefs, axis=1), K1[:nb], out=inner)
                else:
                    K1 = np.matmul(d_in_.T, A_in)
                    nb = 0
                    np.matmul(tgt.pre[f"layers.{l}.W_in"][i], A_in, out=inner)
                self.AtD[f"layers.{l}.W_in"][i] = K1[nb:nb + d_mlp].T
                # tangent of the pre-activation: own component + earlier components through W_in*
                dz = _stacked_matmul(np.swapaxes(inner.reshape(R, C, m), 0, 1), B_in.reshape(C, m, d_mlp))
                for coef, P, made in terms:
                    c0 = (l - made - 1) * d_mlp
                    dz += _stacked_matmul(coef, P[..., c0:c0 + d_mlp])
                dz *= act_grad(tgt.preact[f"layers.{l}"][i])[None]
                da = dz
                later = [target[f"layers.{j}.W_in"][i] for j in range(l + 1, L)] + [W_U]
                M = np.concatenate(later, axis=1)  # (D, n_later)
                k = M.shape[1]
                K2 = np.matmul(B_out, _padded(np.concatenate([M, d_out_.T], axis=1), 1))  # (C m, n_later + d_mlp (+ pad))
                if l == L - 1:
                    self.N.append(K2[:, k - F_out:k])
                self.DBt[f"layers.{l}.W_out"][i] = K2[:, k:k + d_mlp].T
                terms.append((da, np.matmul(W_out, M), l))
                h = tgt.pre[f"layers.{l}.W_out"][i]
                inner_out = np.swapaxes(np.matmul(h, A_out).reshape(R, C, m), 0, 1)  # (C, R, m)
                terms.append((inner_out, K2[:, :k].reshape(C, m, k), l))  # a view: per component (m, k) blocks
                if has_bias(arch, l, "out"):
                    b = target[f"layers.{l}.b_out"][i]
                    bias_sum = b if bias_sum is None else bias_sum + b
            dy = _tangent_sum(terms, F_out, C)
            if out_act:
                dy *= act_grad(tgt.preact["out"][i])[None]
            self.attr[i] = np.einsum("crf,crf->rc", dy, dy)

    def matches(self, names, factors) -> bool:
        return tuple(names) == self.factor_names and all(a is b for a, b in zip(factors, self._factors))


GEMM_PAD = 16  # OpenBLAS's float32 GEMM is ~7-9% faster with the narrow side a multiple of 16 (measured)


def _padded(a: np.ndarray, axis: int) -> np.ndarray:
    """a with zero rows (axis 0) or columns (axis 1) appended up to a multiple of GEMM_PAD."""
    n = a.shape[axis]
    extra = -n % GEMM_PAD
    if not extra:
        return a
    pad = [(0, 0), (0, 0)]
    pad[axis] = (0, extra)
    return np.pad(a, pad)


def _tangent_sum(terms, F_out: int, C: int) -> np.ndarray:
    """sum_j coef_j (C, R, k_j) @ P_j[..., -F_out:] (P_j shared (k_j, n) or per component (C, k_j, n))
    as one batched GEMM over the coefficients side by side: no (C, R, d_L) temporary per term
    (measured: 2-layer rank-1 model ~30% faster per step, the others the same)."""
    V = np.concatenate([coef for coef, _, _ in terms], axis=-1)  # (C, R, sum k_j)
    Q = np.concatenate([np.broadcast_to(P[..., -F_out:], (C,) + P.shape[-2:-1] + (F_out,))
                        for _, P, _ in terms], axis=-2)  # (C, sum k_j, d_L)
    return np.matmul(V, Q)


def _stacked_matmul(coef: np.ndarray, P: np.ndarray) -> np.ndarray:
    """coef (C, R, k) @ P: per component with a (C, k, n) P, as one (C R, k) GEMM with a shared
    2-D P, and as a broadcast product for k = 1 (NumPy's batched matmul makes one BLAS call per
    component: for rank-1 components, C outer products)."""
    if P.ndim == 2 and coef.flags.c_contiguous:
        C, R, k = coef.shape
        return np.matmul(coef.reshape(C * R, k), P).reshape(C, R, P.shape[1])
    if coef.shape[-1] == 1:
        return coef * (P[:, None, 0, :] if P.ndim == 3 else P[None, 0:1, :])
    return np.matmul(coef, P)


def _plain_gradient(arch, ref: Params, ref_trace: Trace, comps: Comps, C: int):
    """Reverse mode on plain arrays where the outputs are narrow; None (forward mode) otherwise."""
    if ref["W_U"].shape[-1] <= REVERSE_MAX_OUTPUTS:
        return residual_reverse_plain(arch, ref, ref_trace, comps, C)
    return None


def _plain_apd_gradient(arch, frozen: Params, comps: Comps, x, C: int):
    """Narrow outputs (gated): the APD pass on plain arrays keeps its bottlenecks for reverse mode."""
    if frozen["W_U"].shape[-1] > REVERSE_MAX_OUTPUTS:
        return None
    trace, u = apd_forward_residual_plain(arch, frozen, comps, x)
    return residual_reverse_plain(arch, dense_sum_params(arch, frozen, comps), trace, comps, C, u)


def _fused(arch, target, C, m, losses, x, tgt, mask, dtype, B_total=None, variant=None, pre=None):
    return ResidualLoss(arch, target, C, m, losses, x, tgt, mask, dtype, B_total, pre=pre)


def _w_in_relu(arch):
    """The reference's act-recon units: ReLU of every layer's pre-bias mlp_in output."""
    names = [l.name for l in layers_of(arch) if l.name.endswith("W_in")]
    return names, lambda h: anp.where(h > 0, h, 0.0)


def _shares_precompute(arch, attribution) -> bool:
    """ResidualPre computes gradient attributions from the target."""
    return attribution.kind == "gradient" and attribution.source == "target"


def _flops(exp, arch, rows: float, K: float | None) -> dict:
    """cost.step_flops's residual-network terms: the embedding and unembedding (2 B n_in D +
    2 B D d_L), the closed-form attributions and the masked passes' unembedding 3 x 2 B D d_L.

    Attributions, forward mode (`ResidualPre`), per layer l with n_b = n_in + l d_mlp rows spanning
    the residual stream and n_l = (L - l - 1) d_mlp + d_L later widths: 2 n_b D Cm + 2 B n_b Cm (the
    layer's bottleneck), 2 C B m d_mlp, 2 Cm D n_l (B_out's maps into later layers), 2 B d_mlp Cm,
    2 C B (d_mlp + m) n_l (tangents); the GEMMs it shares with the faithfulness gradient are counted
    there. With d_L <= REVERSE_MAX_OUTPUTS (gated), reverse mode: per layer 2 B (D + d_mlp) Cm, plus
    per output 2 B (D + d_mlp) Cm and the backward pass 4 B D d_mlp."""
    dc = exp.decompose
    B, C, m = rows, dc.components, dc.rank
    Cm = C * m
    D, d_mlp, n_layers = residual_dims(arch)
    d_L, n_in = n_outputs(arch), n_inputs(arch)
    attr = 0.0
    if d_L <= REVERSE_MAX_OUTPUTS:
        for _ in range(n_layers):
            attr += 2 * B * (D + d_mlp) * Cm + d_L * (2 * B * (D + d_mlp) * Cm + 4 * B * D * d_mlp)
    else:
        for l in range(n_layers):
            n_b = n_in + l * d_mlp
            n_l = (n_layers - l - 1) * d_mlp + d_L
            attr += 2 * n_b * D * Cm + 2 * B * n_b * Cm + 2 * C * B * m * d_mlp
            attr += 2 * Cm * D * n_l + 2 * B * d_mlp * Cm + 2 * C * B * (d_mlp + m) * n_l
    out = {"target_forward": 2 * rows * n_in * D + 2 * rows * D * d_L, "attributions": float(attr)}
    if K is not None:
        out["masked_forward"] = (sum(3 * 2 * K * m * (l.d_in + l.d_out) for l in layers_of(arch))
                                 + 3 * 2 * rows * D * d_L)
    return out


RESIDUAL = ApdKind(fused=_fused, path="fused-residual", tangents=residual_tangents, flops=_flops,
                   gradient_attributions=_plain_gradient, apd_gradient_attributions=_plain_apd_gradient)
APD_KINDS["resid_mlp"] = dataclasses.replace(RESIDUAL, act_recon=_w_in_relu, shares_precompute=_shares_precompute,
                                             precompute=ResidualPre)

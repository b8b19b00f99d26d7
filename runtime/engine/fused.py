"""Fused top-k APD losses: every loss term of a step as one autograd primitive with a hand-written VJP.

In top-k mode the mask is a constant, so the masked forward pass, the minimality and act-recon
terms, the faithfulness (param-match) term and the Schatten simplicity term are one function of the
component factors. Written out by hand (plain NumPy), the forward and backward passes can use what
autograd cannot see:

* **Mask sparsity.** Batch top-k switches on K ~ topk x B of the B x C (sample, component) pairs
  (1.28 per sample for the residual MLPs, 0.2-2 for TMS). The masked bottleneck
  ((a @ A) * s) @ B is evaluated on the active pairs only, grouped by component: one GEMM of the
  component's active rows per factor, instead of dense (B, d_in) @ (d_in, C m) products (notes
  §10.3.1 taken one step further). For the residual MLP this removes every B x D x C m product
  from the differentiated pass (3.3e9 FLOPs each for the 1-layer model).
* **Gradient accumulation in place.** The faithfulness gradient G @ B^T / A^T @ G is the one
  dense contribution to each factor's gradient; the sparse per-component contributions and the
  Schatten term are added into it in place (autograd would allocate and add a full-size array
  per contribution, and sum the singleton replicate axis of every matmul gradient).

* **Rows with an all-zero input dropped** (`compact_rows`, `zero_rows_inert`): in TMS and in
  residual MLPs without input biases such rows have exactly zero attributions and contribute
  nothing to any term, so with batch top-k the whole step runs on the other rows (23% of them for
  TMS 5-2, 63% for the residual MLPs at p = 0.01); `compact_batch_topk` falls back to the full
  batch when the choice would involve ties at zero.
* **Shared GEMMs** (`ResidualPre`): the residual MLP's gradient attributions (from the target)
  and the faithfulness gradient read the same big factors; their products are fused into one
  GEMM per factor.

Residual networks (residual MLP, gated) use `ResidualLoss`; TMS uses `TmsLoss` (dense, vectorised
over replicates: a few large array operations instead of ~100 small autograd primitives) or
`TmsSparseLoss` (pair-sparse, for many components: TMS 40-10), chosen by `tms_variant`.
`fused_terms(loss, *factors)` is the autograd primitive: it returns the per-replicate loss terms
(T, I) in the order `loss.terms`; its VJP returns the gradients of every factor. The training loop
(`decompose.LossProblem.step_grads`) calls `forward` / `backward` directly.

Exactness: the same arithmetic as the plain path (`LossProblem.loss`), up to float rounding
(summation order differs); tests/test_fused.py checks both against each other, against
`autograd.test_util.check_grads` and against finite differences in float64.
"""
from __future__ import annotations

import numpy as np
from autograd.extend import defvjp_argnums, primitive

from .apd import SCHATTEN_EPS, n_decomposed_weights
from .grouped import Grouped, GroupedRows, Pairs  # noqa: F401  (Pairs: also used by TmsSparseLoss)
from .kernels import GradParts, RowsProduct, add_scaled, col_sq_norms, row_sq_norms
from .models import activation, has_bias, layers_of, residual_dims
from ..spec import GatedTarget, ResidMlpTarget, TmsTarget

TERM_ORDER = ("faithfulness", "minimality", "act_recon", "simplicity")
LAZY_MIN_SIZE = 1 << 16  # factors smaller than this keep plain-array gradients (kernels.CHUNK)


# ------------------------------------------------------------------------------------------
# The primitive


@primitive
def fused_terms(loss, *factors):
    """Per-replicate loss terms (len(loss.terms), I) of `loss` (a ResidualLoss / TmsLoss) at the
    given factors (in `loss.factor_names` order)."""
    return loss.forward(factors)


def _fused_vjp(argnums, ans, args, kwargs):
    loss = args[0]
    factors = args[1:]

    def vjp(g):
        grads = loss.backward(factors, np.asarray(g))
        return tuple(grads[a - 1] for a in argnums)

    return vjp


defvjp_argnums(fused_terms, _fused_vjp)


# ------------------------------------------------------------------------------------------
# Shared pieces: faithfulness and Schatten


def _schatten_setup(p: float):
    half = p / 2.0
    return half, SCHATTEN_EPS ** half


class _Common:
    """Faithfulness and Schatten terms over the decomposed parameters, per replicate."""

    def _init_common(self, arch, target, C: int, m: int, losses, dtype, mask, B_total):
        self.arch, self.C, self.m = arch, C, m
        self.I = mask.shape[0]
        # Normalising batch size: the rows given may be a compaction of a larger batch whose
        # other rows are all-zero inputs (which contribute nothing, see `zero_rows_inert`).
        self.B = int(mask.shape[1] if B_total is None else B_total)
        self.n_active = mask.sum(axis=1).astype(np.dtype(dtype))  # (I, C) samples per component
        self.L = losses
        self.N = n_decomposed_weights(arch)
        self.dtype = np.dtype(dtype)
        self.terms = tuple(t for t in TERM_ORDER if getattr(losses, t) is not None)
        uses: dict[str, int] = {}
        for layer in layers_of(arch):
            uses[layer.param] = uses.get(layer.param, 0) + 1
        self.uses = uses
        self.params = tuple(uses)
        self.factor_names = tuple(f"{n}.{ab}" for n in self.params for ab in ("A", "B"))
        self.W_target = {n: np.asarray(target[n], dtype=self.dtype) for n in self.params}

    pre = None  # a ResidualPre whose products belong to these factors (see _pre_for)
    _save: dict = {}

    def _saved_for(self, factors) -> dict:
        """The forward pass's saved intermediates for exactly these factor arrays (re-running the
        forward pass if the last one was at other factors, or its intermediates were consumed)."""
        saved = self._save.get("factors")
        if saved is None or len(saved) != len(factors) or any(a is not b for a, b in zip(saved, factors)):
            self.forward(factors)
        return self._save

    def _pre_for(self, factors):
        """The precomputed products if they were computed from exactly these factor arrays."""
        pre = self.pre
        if pre is not None and pre.matches(self.factor_names, factors):
            return pre
        return None

    def _faith_forward(self, F, save):
        """F: name -> factor. Returns (I,) and stores the residuals A @ B - W*."""
        total = 0.0
        pre = save.get("pre")
        for n in self.params:
            if pre is not None:
                diff = pre.diff[n].copy()
            else:
                diff = np.matmul(F[f"{n}.A"], F[f"{n}.B"])
                diff -= self.W_target[n]
            save[f"diff:{n}"] = diff
            total = total + self.uses[n] * np.sum(diff * diff, axis=(-2, -1))
        return total / self.N

    def _grads_with_faithfulness(self, F, save, g, defer=()) -> dict:
        """Fresh gradient arrays of every factor, holding the faithfulness term's (zeros without it).
        For the A factors named in `defer`, the GEMM G B^T is left to the caller: save["faith_G"]
        holds the scaled residual G (absent without the term) and grads has no entry."""
        grads: dict = {}
        if "faithfulness" in self.terms:
            self._faith_backward(F, save, g["faithfulness"], grads, defer)
        else:
            for n in self.factor_names:
                if n not in defer:
                    grads[n] = np.zeros_like(F[n])
        return grads

    def _faith_backward(self, F, save, g_pm, grads, defer=()):
        """g_pm (I,): upstream gradient of the faithfulness term. Initialises grads[*]."""
        pre = save.get("pre")
        for n in self.params:
            G = save.pop(f"diff:{n}")
            scale = (2.0 * self.uses[n] / self.N) * g_pm[:, None, None].astype(G.dtype)
            G *= scale
            A, B = F[f"{n}.A"], F[f"{n}.B"]
            for ab in ("A", "B"):
                if f"{n}.{ab}" in defer:
                    save.setdefault("faith_G", {})[f"{n}.{ab}"] = G
            # A^T G and G B^T; the residual MLP precompute already has one of them, unscaled
            # (shared GEMMs with the attribution's W_E A_in and B_out W_U)
            if pre is not None and n in pre.AtD:
                if f"{n}.A" not in defer:
                    grads[f"{n}.A"] = np.matmul(G, np.swapaxes(B, -1, -2))
                grads[f"{n}.B"] = np.ascontiguousarray(pre.AtD[n] * scale)
            elif pre is not None and n in pre.DBt:
                grads[f"{n}.A"] = np.ascontiguousarray(pre.DBt[n] * scale)
                if f"{n}.B" not in defer:
                    grads[f"{n}.B"] = np.matmul(np.swapaxes(A, -1, -2), G)
            else:
                if f"{n}.A" not in defer:
                    grads[f"{n}.A"] = np.matmul(G, np.swapaxes(B, -1, -2))
                if f"{n}.B" not in defer:
                    grads[f"{n}.B"] = np.matmul(np.swapaxes(A, -1, -2), G)

    sq_hints: dict = {}  # {factor name: (array, squared norms)} known for these factors (LossProblem)

    def _sq(self, F, name, compute):
        """Squared column (A) / row (B) norms of factor `name`: the hint if it is for this very array."""
        hint = self.sq_hints.get(name)
        if hint is not None and hint[0] is F[name]:
            return hint[1]
        return compute(F[name])

    def _schatten_forward(self, F, n_active, B, save):
        """Closed form of apd.schatten_loss for a 0/1 mask: n_active (I, C) = #samples per component."""
        half, eps_term = _schatten_setup(self.L.simplicity_p)
        I = n_active.shape[0]
        C, m = self.C, self.m
        per_c = 0.0
        n_uses = 0
        for n in self.params:
            a2 = self._sq(F, f"{n}.A", col_sq_norms)  # (I, Cm)
            b2 = self._sq(F, f"{n}.B", row_sq_norms)  # (I, Cm)
            S = a2 * b2
            save[f"a2:{n}"], save[f"b2:{n}"], save[f"S:{n}"] = a2, b2, S
            per_c = per_c + self.uses[n] * np.sum(((S + SCHATTEN_EPS) ** half).reshape(I, C, m), axis=2)
            n_uses += self.uses[n]
        off = (B - n_active) * (n_uses * m * eps_term)
        return np.sum(n_active * per_c + off, axis=1) / (self.N * B)

    def _schatten_backward(self, F, n_active, B, save, g_s, grads, defer=()):
        """Adds the Schatten gradient 2 w b2 A (per column) / 2 w a2 B (per row); for factor
        names in `defer` the scale vectors are left in save["schatten_u"] for the caller to apply
        in a pass it makes over that gradient anyway."""
        half, _ = _schatten_setup(self.L.simplicity_p)
        deferred = save.setdefault("schatten_u", {})
        m = self.m
        coef = (g_s[:, None] * n_active / (self.N * B)).astype(self.dtype)  # (I, C)
        coef = np.repeat(coef, m, axis=1)  # (I, Cm)
        for n in self.params:
            a2, b2, S = save.pop(f"a2:{n}"), save.pop(f"b2:{n}"), save.pop(f"S:{n}")
            w = coef * (self.uses[n] * half) * (S + SCHATTEN_EPS) ** (half - 1.0)  # dL/dS
            A, Bf = F[f"{n}.A"], F[f"{n}.B"]
            if f"{n}.A" in defer:
                save.setdefault("schatten_a2", {})[n] = a2  # ||A column||^2, for the unit-norm projection
            for ab, X, u, axis in (("A", A, 2.0 * w * b2, 1), ("B", Bf, 2.0 * w * a2, 2)):
                if f"{n}.{ab}" in defer:
                    deferred[f"{n}.{ab}"] = u
                else:
                    add_scaled(grads[f"{n}.{ab}"], X, u, axis=axis)


# ------------------------------------------------------------------------------------------
# Residual networks (residual MLP, gated)


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
        self.out_act = isinstance(arch, ResidMlpTarget) and arch.output_activation
        self.resid_act_recon = isinstance(arch, ResidMlpTarget)
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
                         if size >= LAZY_MIN_SIZE)
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
        out_act = isinstance(arch, ResidMlpTarget) and arch.output_activation
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


def residual_pre_applies(arch, attribution) -> bool:
    """ResidualPre computes gradient attributions from the target of a residual MLP."""
    return isinstance(arch, ResidMlpTarget) and attribution.kind == "gradient" and attribution.source == "target"


# ------------------------------------------------------------------------------------------
# Dispatch


def applies(arch, losses, topk) -> bool:
    """The fused kernels cover top-k runs (constant 0/1 mask) whose loss has no Lp sparsity term
    (attributions inside the differentiated loss) and no unmasked output-reconstruction term."""
    return (isinstance(arch, (TmsTarget, ResidMlpTarget, GatedTarget)) and topk is not None
            and losses.output_recon is None and losses.sparsity is None)


def path_name(arch) -> str:
    return "fused-tms" if isinstance(arch, TmsTarget) else "fused-residual"


def build(arch, target, C, m, losses, x, tgt, mask, dtype, B_total=None, variant=None, pre=None):
    """The fused loss of one batch (x, target trace tgt, boolean mask (I, R, C)). `B_total`: the
    batch size to normalise by when x holds only the nonzero rows of a larger batch. `variant`:
    force "dense" / "sparse" for TMS (default: `tms_variant`'s choice)."""
    if isinstance(arch, TmsTarget):
        cls = {"dense": TmsLoss, "sparse": TmsSparseLoss}.get(variant) or tms_variant(*mask.shape, m, arch)
        return cls(arch, target, C, m, losses, x, tgt, mask, dtype, B_total)
    return ResidualLoss(arch, target, C, m, losses, x, tgt, mask, dtype, B_total, pre=pre)


# ------------------------------------------------------------------------------------------
# Compaction to the rows with a nonzero input


def zero_rows_inert(arch) -> bool:
    """True if an all-zero input row has zero attributions (every kind) and contributes exactly
    zero to every fused loss term whatever the mask: TMS (no biases before the output), and
    residual MLPs without input biases (and without output biases when there are later layers)."""
    if isinstance(arch, TmsTarget):
        return True
    if isinstance(arch, ResidMlpTarget):
        return not arch.in_bias and (not arch.out_bias or arch.layers == 1)
    return False


def nonzero_rows(x: np.ndarray) -> np.ndarray:
    """(I, B, n) -> (I, B) bool: rows with a nonzero entry (sum of |x| against ones: one GEMV
    instead of a reduction over a short trailing axis; a sum of non-negative numbers is zero only
    if they all are)."""
    return np.matmul(np.abs(x), np.ones(x.shape[-1], dtype=x.dtype)) > 0


def compact_rows(x: np.ndarray):
    """x (I, B, n) -> (x_c (I, R, n), R): per replicate its rows with a nonzero entry first (in
    order), padded with all-zero rows to the largest count R (>= 1)."""
    I, B, n = x.shape
    nz = nonzero_rows(x)
    flat = np.flatnonzero(nz)  # replicate-major, rows ascending
    if flat.size == 0:
        return np.zeros_like(x[:, :1]), 1
    ii = flat // B
    counts = np.bincount(ii, minlength=I)
    R = int(counts.max())
    if R == B:
        return x, B
    rows = x.reshape(I * B, n)
    # every slot gathers a source row: the replicate's nonzero rows, then an all-zero row
    zero_row = int(np.flatnonzero(~nz.reshape(-1))[0])
    src = np.full(I * R, zero_row, dtype=np.intp)
    src[ii * R + (np.arange(flat.size) - (np.cumsum(counts) - counts)[ii])] = flat
    return np.take(rows, src, axis=0).reshape(I, R, n), R


def compact_batch_topk(attr: np.ndarray, k: int) -> np.ndarray | None:
    """Batch top-k on the attributions of compacted rows, or None when the choice would involve
    ties at zero (fewer than k positive entries in some replicate): then the rows left out could be
    chosen too, and the caller uses the full batch. With k positive winners the mask equals the
    full batch's (the rows left out have exactly zero attributions)."""
    I, R, C = attr.shape
    if k > R * C:
        return None
    mask = np.zeros((I, R * C), dtype=bool)
    if k <= 0:
        return mask.reshape(I, R, C)
    flat = attr.reshape(I, R * C)
    # the k-th largest value per replicate (np.partition on values is ~2x faster than argpartition)
    kth = np.partition(flat, R * C - k, axis=1)[:, R * C - k]
    if not np.all(kth > 0):
        return None
    np.greater_equal(flat, kth[:, None], out=mask)
    if np.any(np.count_nonzero(mask, axis=1) != k):  # ties at the threshold: pick exactly k
        mask[:] = False
        idx = np.argpartition(-flat, k - 1, axis=1)[:, :k]
        np.put_along_axis(mask, idx, True, axis=1)
    return mask.reshape(I, R, C)
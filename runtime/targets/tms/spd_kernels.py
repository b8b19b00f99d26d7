"""The SPD loss of a TMS target with its gradient written by hand (what `SpdProblem` runs for TMS).

TMS is a chain of linear maps, x -> W -> hidden_1 .. hidden_K -> W^T -> + b -> ReLU, so every pass
of the SPD loss (spd.py) is a handful of small GEMMs per sample and the cost is in the (B, C)
elementwise work around them: sigmoids, masks, the importance term and their derivatives. Through
autograd each of those is a full pass over (I, B, C) arrays (14 MB per matrix on TMS 40-10) plus
its VJP; here they run on row blocks that stay in cache, forward and backward together, because
the loss coefficients are known when the forward pass runs. The causal-importance MLPs stay the
`ci.CIKernel` primitive (their forward runs first on every row, their backward last, on the
accumulated dL/dgamma).

Same values and gradients as differentiating `spd.SpdLoss.terms` with autograd, up to rounding
(tests/test_spd.py compares them in float64).
"""
from __future__ import annotations

import numpy as np

from ...engine.models import n_decomposed_weights
from ...methods.spd import ci as ci_mod
from ...methods.spd.kinds import SPD_KINDS, SpdKind
from ...methods.spd.model import CI_NAMES, SpdLoss, SpdParams, spd_layers

ROW_BLOCK = 1 << 15  # elements of a (rows, C) block


class SpdTmsFused:
    """Loss terms and gradients of one TMS batch (see the module docstring)."""

    def __init__(self, loss: SpdLoss):
        self.loss = loss
        self.arch = loss.arch
        self.layers = spd_layers(loss.arch)

    def _weights(self, target: dict) -> list[np.ndarray]:
        """The target's matrix of every layer, (I, d_in, d_out)."""
        out = []
        for layer in self.layers:
            W = np.asarray(target[layer.param])
            out.append(np.swapaxes(W, -1, -2) if layer.transposed else W)
        return out

    def value_and_grad(self, params: SpdParams, x: np.ndarray, tgt, uniforms: dict, rows: int, row_weights,
                       coef: dict, need_grad: bool = True) -> tuple[dict, dict | None]:
        """(terms name -> (I,), gradients name -> array) of sum_terms coef * term, summed over
        replicates; arguments as `SpdLoss.terms`."""
        loss, L_cfg = self.loss, self.loss.L
        names = [layer.name for layer in self.layers]
        nL = len(names)
        I, R, _ = x.shape
        dtype = x.dtype
        Ws = self._weights(loss.target)
        V = [np.asarray(params[f"{n}.V"]) for n in names]
        U = [np.asarray(params[f"{n}.U"]) for n in names]
        a = [np.asarray(tgt.pre[n]) for n in names]  # the target's inputs to every matrix (I, R, d_in)
        y_ref = np.asarray(tgt.y)
        d_out = y_ref.shape[-1]
        bias = np.asarray(loss.target["b"]) if self.arch.bias else None
        S = loss.S
        h = [np.matmul(a[l], V[l]) for l in range(nL)]
        gam = [np.asarray(ci_mod.CIKernel.forward(loss.kernels[n], h[l], *(np.asarray(params[f"{n}.ci.{k}"])
                                                                           for k in CI_NAMES)))
               for l, n in enumerate(names)]
        self.last_gamma = dict(zip(names, gam))
        terms: dict = {}
        c_f, c_r, c_lw, c_imp = (coef.get(k) for k in ("faithfulness", "stochastic_recon", "stochastic_recon_layerwise",
                                                       "importance_minimality"))
        use_r, use_lw = L_cfg.stochastic_recon is not None, L_cfg.stochastic_recon_layerwise is not None
        use_imp = L_cfg.importance_minimality is not None
        p, eps = L_cfg.importance_minimality_p, ci_mod.IMPORTANCE_EPS
        lo, up = loss.ci.lower_leak, loss.ci.upper_leak
        imp = np.zeros(I)
        recon = np.zeros(I)
        layerwise = np.zeros(I)
        grads = None
        if need_grad:
            grads = {f"{n}.{k}": np.zeros_like(np.asarray(params[f"{n}.{k}"])) for n in names for k in ("V", "U")}
        dgam = [np.zeros_like(g) for g in gam]  # dL/dgamma (I, R, C)
        dh = [np.zeros_like(v) for v in h]  # dL/dh at the target's inputs, from the masked passes
        C = gam[0].shape[-1]
        n_rows = max(1, ROW_BLOCK // max(C, 1))
        k_r = (c_r or 0.0) * 2.0 / (rows * d_out * S)
        k_lw = (c_lw or 0.0) * 2.0 / (rows * d_out * S * nL)
        for i in range(I):
            for r0 in range(0, R, n_rows):
                r1 = min(R, r0 + n_rows)
                gr = [gam[l][i, r0:r1] for l in range(nL)]
                hb = [h[l][i, r0:r1] for l in range(nL)]
                w_rows = None if row_weights is None else np.asarray(row_weights)[i, r0:r1, None]
                # importance minimality (and its gradient)
                if use_imp:
                    for l in range(nL):
                        su = np.asarray(ci_mod.sigma_upper(gr[l], up))
                        su += eps
                        powp = su ** p
                        imp[i] += float(np.sum(powp if w_rows is None else powp * w_rows))
                        if need_grad:
                            dv = powp / su  # (s + eps)^(p - 1)
                            dv *= (c_imp or 0.0) * p / rows
                            dv *= ci_mod.sigma_upper_grad(gr[l], up)
                            if w_rows is not None:
                                dv *= w_rows
                            dgam[l][i, r0:r1] += dv
                if not (use_r or use_lw):
                    continue
                g = [np.asarray(ci_mod.sigma_lower(gr[l], lo)) for l in range(nL)]
                dm = [np.zeros_like(v) for v in g] if need_grad else None
                yb = y_ref[i, r0:r1]
                for s in range(S):
                    u = [np.asarray(uniforms[n][s, i, r0:r1]) for n in names]
                    m = [g[l] + (1.0 - g[l]) * u[l] for l in range(nL)]
                    if use_r:
                        recon[i] += self._full(i, hb, m, V, U, bias, yb, k_r, dm, grads, dh, r0, r1, need_grad)
                    if use_lw:
                        for lp in range(nL):
                            layerwise[i] += self._layerwise(i, lp, hb, m, Ws, U, bias, yb, k_lw, dm, grads, dh, r0, r1,
                                                            need_grad)
                    if need_grad:
                        for l in range(nL):  # dm -> dg for this draw, then through sigma_lower
                            dgam[l][i, r0:r1] += dm[l] * (1.0 - u[l]) * ci_mod.sigma_lower_grad(gr[l], lo)
                            dm[l][...] = 0.0
        if use_imp:
            terms["importance_minimality"] = imp / rows
        if use_r:
            terms["stochastic_recon"] = recon / (rows * d_out * S)
        if use_lw:
            terms["stochastic_recon_layerwise"] = layerwise / (rows * d_out * S * nL)
        if L_cfg.faithfulness is not None:
            N = n_decomposed_weights(self.arch)
            faith = np.zeros(I)
            for l, n in enumerate(names):
                D = np.matmul(V[l], U[l]) - Ws[l]
                faith += np.sum(D * D, axis=(1, 2))
                if need_grad:
                    k = 2.0 * (c_f or 0.0) / N
                    grads[f"{n}.V"] += k * np.matmul(D, np.swapaxes(U[l], 1, 2))
                    grads[f"{n}.U"] += k * np.matmul(np.swapaxes(V[l], 1, 2), D)
            terms["faithfulness"] = faith / N
        terms = {k: terms[k].astype(dtype) for k in ("faithfulness", "importance_minimality", "stochastic_recon",
                                                      "stochastic_recon_layerwise") if k in terms}
        if not need_grad:
            return terms, None
        for l, n in enumerate(names):
            ci_args = [np.asarray(params[f"{n}.ci.{k}"]) for k in CI_NAMES]
            d_h, *d_ci = ci_mod.CIKernel.backward(loss.kernels[n], dgam[l], gam[l], h[l], *ci_args)
            for k, v in zip(CI_NAMES, d_ci):
                grads[f"{n}.ci.{k}"] = np.asarray(v, dtype=dtype)
            grads[f"{n}.V"] += np.matmul(np.swapaxes(a[l], 1, 2), dh[l] + d_h)
        return terms, grads

    def _full(self, i, hb, m, V, U, bias, yb, k, dm, grads, dh, r0, r1, need_grad) -> float:
        """One draw of the all-matrices-masked pass on a row block: its sum of squared errors, and
        (need_grad) its gradient, scaled by k, accumulated into dm, grads, dh."""
        nL = len(hb)
        s, hp, acts = [], [hb[0]], []
        act = None
        for l in range(nL):
            if l > 0:
                acts.append(act)
                hp.append(act @ V[l][i])
            s.append(hp[l] * m[l])
            act = s[l] @ U[l][i]
        z = act if bias is None else act + bias[i]
        e = np.maximum(z, 0.0) - yb
        sse = float(np.sum(e * e))
        if need_grad:
            da = k * e * (z > 0)
            for l in range(nL - 1, -1, -1):
                n = self.layers[l].name
                grads[f"{n}.U"][i] += s[l].T @ da
                ds = da @ U[l][i].T
                dm[l] += ds * hp[l]
                dhp = ds * m[l]
                if l > 0:
                    grads[f"{n}.V"][i] += acts[l - 1].T @ dhp
                    da = dhp @ V[l][i].T
                else:
                    dh[0][i, r0:r1] += dhp
        return sse

    def _layerwise(self, i, lp, hb, m, Ws, U, bias, yb, k, dm, grads, dh, r0, r1, need_grad) -> float:
        """One draw of the pass with only matrix lp masked (the others the target's)."""
        nL = len(hb)
        s = hb[lp] * m[lp]
        outs = [s @ U[lp][i]]
        for l in range(lp + 1, nL):
            outs.append(outs[-1] @ Ws[l][i])
        z = outs[-1] if bias is None else outs[-1] + bias[i]
        e = np.maximum(z, 0.0) - yb
        sse = float(np.sum(e * e))
        if need_grad:
            d = k * e * (z > 0)
            for l in range(nL - 1, lp, -1):
                d = d @ Ws[l][i].T
            n = self.layers[lp].name
            grads[f"{n}.U"][i] += s.T @ d
            ds = d @ U[lp][i].T
            dm[lp] += ds * hb[lp]
            dh[lp][i, r0:r1] += ds * m[lp]
        return sse


SPD_KINDS["tms"] = SpdKind(fused=SpdTmsFused, path="spd-fused-tms")

"""One site's masked product (notes §1) as a single autograd primitive with a hand-written VJP: what
every training pass of VPD runs per site, per row.

    mask  = ci + (1 - ci) * src[..., :C]          delta_mask = src[..., C]        (with the delta channel)
    y     = ((a @ V) * mask) @ U + (a @ (W - V U)) * delta_mask     on a routed row
    y     = a @ W                                                    on a row the site is not routed on

`site_plain` is the definition in autograd.numpy (the reference, ~16 primitives and as many VJPs
on (I, B, C) arrays); `site_output` computes the same values and gradients with ~8 GEMMs and a few
elementwise passes each way, and no autograd bookkeeping inside (tests/methods/vpd: float64 to
1e-12 against the reference, and finite differences through the training loss). W is the frozen
target's (no gradient); `route` is a constant (I, B) bool or None (every row routed).
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp_argnums, primitive

from ...engine.masks import make_masks


def site_plain(a, V, U, W, ci, src, route, delta: bool):
    """The definition (autograd.numpy): the reference of `site_output`."""
    mask, dmask = make_masks(ci, src, delta)
    out = anp.matmul(anp.matmul(a, V) * mask, U)
    if delta:
        out = out + anp.matmul(a, W - anp.matmul(V, U)) * anp.expand_dims(dmask, -1)
    if route is not None:
        out = anp.where(route[..., None], out, anp.matmul(a, W))
    return out


def _t(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


@primitive
def site_output(a, V, U, W, ci, src, route, delta: bool):
    """`site_plain`'s value: a (I, B, d_in), V (I, d_in, C), U (I, C, d_out), W (I, d_in, d_out),
    ci (I, B, C), src (I, B or 1, C + delta), route (I, B) bool or None -> (I, B, d_out)."""
    C = V.shape[-1]
    s = src[..., :C]
    inner = np.matmul(a, V)
    inner *= ci + (1.0 - ci) * s
    out = np.matmul(inner, U)
    if delta:
        out += np.matmul(a, W - np.matmul(V, U)) * src[..., C:C + 1]
    if route is not None:
        out = np.where(route[..., None], out, np.matmul(a, W))
    return out


def _site_vjp(argnums, ans, args, kwargs):
    a, V, U, W, ci, src, route, delta = args
    C = V.shape[-1]

    def vjp(g):
        gm = g if route is None else g * route[..., None]  # the masked path's share of the gradient
        s = src[..., :C]
        mask = ci + (1.0 - ci) * s
        inner = np.matmul(a, V)
        g_mi = np.matmul(gm, _t(U))  # d/d(inner * mask)
        g_mask = g_mi * inner
        g_inner = g_mi * mask
        g_U = np.matmul(_t(inner * mask), gm)
        g_V = np.matmul(_t(a), g_inner)
        g_a = np.matmul(g_inner, _t(V))
        g_src = None
        if delta:
            D = W - np.matmul(V, U)
            dm = src[..., C:C + 1]
            gd = gm * dm
            g_D = np.matmul(_t(a), gd)  # d/dD of the delta channel; D = W - V U
            g_V -= np.matmul(g_D, _t(U))
            g_U -= np.matmul(_t(V), g_D)
            g_a += np.matmul(gd, _t(D))
            g_dm = np.sum(gm * np.matmul(a, D), axis=-1, keepdims=True)
        if route is not None:
            g_a += np.matmul(g * ~route[..., None], _t(W))
        out = []
        for i in argnums:
            if i == 0:
                out.append(g_a)
            elif i == 1:
                out.append(g_V)
            elif i == 2:
                out.append(g_U)
            elif i == 4:
                out.append(g_mask * (1.0 - s))
            elif i == 5:
                if g_src is None:
                    g_s = g_mask * (1.0 - ci)
                    g_src = np.concatenate([g_s, np.broadcast_to(g_dm, g_s.shape[:-1] + (1,))], axis=-1) if delta \
                        else g_s
                    if src.shape[1] != g_src.shape[1]:  # a source row shared by every row: sum them
                        g_src = np.sum(g_src, axis=1, keepdims=True)
                out.append(g_src)
            else:
                raise ValueError(f"site_output has no gradient with respect to argument {i}")
        return tuple(out)

    return vjp


defvjp_argnums(site_output, _site_vjp)

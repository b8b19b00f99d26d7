"""Stochastic Parameter Decomposition (Bushnaq, Braun & Sharkey 2025): subcomponents, stochastic
masks and the four losses, written from the paper's equations (§2 and App. "SPD Pseudocode").

Decomposed matrices: every use of a weight matrix in the forward pass (`models.layers_of`), each with
its own C subcomponents. TMS: W (F x H) and, separately, the output layer's W^T (H x F) although the
target ties them (the paper decomposes linear1 and linear2 of the TMS model as two matrices, "the
embedding matrix W" being linear1), plus every hidden H x H layer (the +ID variant). Residual MLP and
gated networks: W_in and W_out of every layer. Biases, W_E and W_U stay the target's (frozen).

Storage (row-vector convention h = a @ W, W of shape (d_in, d_out)), leading replicate axis I:

    "<layer>.V"  (I, d_in, C)    column c is V_c: the inner activation of subcomponent c is h_c = a . V_c
    "<layer>.U"  (I, C, d_out)   row c is U_c
    "<layer>.ci.w_in", ".ci.b_in", ".ci.w_out" (I, C, K), "<layer>.ci.b_out" (I, C)   (ci.py)

so subcomponent c is the rank-one matrix outer(V_c, U_c), the summed weight is V @ U (the paper's
W^l = U^l V^l, transposed), and a layer with masks m (I, B, C) computes ((a @ V) * m) @ U.

One step (pseudocode), per replicate:

    a_l = the target's input to matrix l;  h_l = a_l @ V_l;  G_raw_l = gamma_l(h_l)
    L_faithfulness       = sum_l ||W_l - V_l U_l||_F^2 / N              (N: every decomposed weight)
    L_importance-minimality = (1/B) sum_b sum_l sum_c (sigma_H,upper(G_raw_l) + eps)^p
    G_l = sigma_H,lower(G_raw_l);  M_l = G_l + (1 - G_l) * R_l,  R_l ~ U(0, 1)^(B x C), S draws
    L_stochastic-recon   = (1/S) sum_s D(f(x | every matrix masked with M^s), f(x | W))
    L_stochastic-recon-layerwise = (1/(L S)) sum_s sum_l D(f(x | only matrix l masked with M_l^s), f(x | W))

D = mse: the mean over batch and outputs of the squared difference. In the layerwise term the other
matrices are the target's own W (the paper's equation, §2.2; its pseudocode writes the unmasked sum
of subcomponents U V instead, which differs by the faithfulness error only). A pass never recomputes
what the target pass already has: a matrix whose input is still the target's reads the cached
h_l = a_l @ V_l, and the unmodified matrices before the first masked one return the target's cached
layer outputs.
"""
from __future__ import annotations

import math

import autograd.numpy as anp
import numpy as np

from ...engine import draws
from ...engine.models import Layer, Params, forward, layers_of, n_decomposed_weights
from ...engine.registry import model_of
from ...spec import Target
from . import ci as ci_mod
from .kinds import hooks

SpdParams = dict  # "<layer>.V" / ".U" / ".ci.*" -> array with a leading replicate axis
CI_NAMES = ("w_in", "b_in", "w_out", "b_out")


def spd_layers(arch: Target) -> tuple[Layer, ...]:
    """The decomposed matrices, in forward order: every use of a weight (a tied use counts again)."""
    return layers_of(arch)


def target_weight(target: Params, layer: Layer):
    """The target's (I, d_in, d_out) matrix of a layer (the transpose for a tied use)."""
    W = target[layer.param]
    return anp.swapaxes(W, -1, -2) if layer.transposed else W


def init_spd(arch: Target, C: int, K: int, replicates: int, init_scale: float, rng: np.random.Generator,
             dtype=np.float32) -> SpdParams:
    """Fresh subcomponents and causal-importance MLPs.

    The paper gives no init. V_c ~ N(0, init_scale^2 / d_out) and U_c ~ N(0, 1 / C) entrywise (as
    the authors' code at the time), so the summed weight V U starts with entries of variance
    init_scale^2 / d_out whatever C is (surplus subcomponents do not inflate it), and each inner
    activation h_c = a . V_c has the variance of a layer output. The fans never involve the number
    of replicates I."""
    params: SpdParams = {}
    for layer in spd_layers(arch):  # float64 draws cast piece by piece (engine/draws.py)
        params[f"{layer.name}.V"] = draws.normal(rng, 0.0, init_scale / math.sqrt(layer.d_out),
                                                 (replicates, layer.d_in, C), dtype)
        params[f"{layer.name}.U"] = draws.normal(rng, 0.0, 1.0 / math.sqrt(C), (replicates, C, layer.d_out), dtype)
        for k, v in ci_mod.init_ci(C, K, replicates, rng, dtype).items():
            params[f"{layer.name}.ci.{k}"] = v
    return params


def ci_params(params: SpdParams, name: str) -> tuple:
    return tuple(params[f"{name}.ci.{k}"] for k in CI_NAMES)


def summed_weight(params: SpdParams, name: str):
    """V @ U: the sum of a matrix's subcomponents, (I, d_in, d_out)."""
    return anp.matmul(params[f"{name}.V"], params[f"{name}.U"])


def subcomponent_weights(params: SpdParams, name: str) -> np.ndarray:
    """(I, C, d_in, d_out) dense rank-one subcomponent weights (analysis only)."""
    V, U = np.asarray(params[f"{name}.V"]), np.asarray(params[f"{name}.U"])
    return np.swapaxes(V, 1, 2)[..., :, None] * U[..., None, :]


def faithfulness_loss(arch: Target, params: SpdParams, target: Params):
    """sum_l ||W_l - V_l U_l||_F^2 / N per replicate (I,); N = every decomposed weight (TMS: 2FH)."""
    total = 0.0
    for layer in spd_layers(arch):
        d = summed_weight(params, layer.name) - target_weight(target, layer)
        total = total + anp.sum(d * d, axis=(-2, -1))
    return total / n_decomposed_weights(arch)


def faithfulness_value_and_grad(arch: Target, params: SpdParams, target: Params) -> tuple[np.ndarray, dict]:
    """(faithfulness (I,), gradients of its sum over replicates w.r.t. every V and U) on plain arrays:
    D = V U - W, d/dV = 2 D U^T / N, d/dU = 2 V^T D / N."""
    N = n_decomposed_weights(arch)
    value, grads = 0.0, {}
    for layer in spd_layers(arch):
        V, U = np.asarray(params[f"{layer.name}.V"]), np.asarray(params[f"{layer.name}.U"])
        D = np.matmul(V, U) - np.asarray(target_weight(target, layer))
        value = value + np.sum(D * D, axis=(1, 2)) / N
        grads[f"{layer.name}.V"] = (2.0 / N) * np.matmul(D, np.swapaxes(U, 1, 2))
        grads[f"{layer.name}.U"] = (2.0 / N) * np.matmul(np.swapaxes(V, 1, 2), D)
    return np.asarray(value), grads


def mse(y, y_ref, rows: int):
    """D = mse: sum over rows and outputs of (y - y_ref)^2 / (rows x outputs), per replicate. `rows`
    is the full batch when y holds only some of its rows (the others contribute exactly zero)."""
    d = y - y_ref
    return anp.sum(d * d, axis=(1, 2)) / (rows * y_ref.shape[-1])


def embedded_first_layer(arch: Target) -> bool:
    """True when the first matrix reads x @ W_E (a fixed embedding, models.Model.embedding): its
    inner activations are then x @ (W_E @ V), cheaper than (x @ W_E) @ V when the embedding is wide."""
    return model_of(arch).embedding(arch) is not None


def inner_acts(arch: Target, target: Params, params: SpdParams, layer: Layer, a, x):
    """h = a @ V for the target's input a of `layer` (x: the model input, for the first-layer
    shortcut through the embedding)."""
    V = params[f"{layer.name}.V"]
    first = layer.name == spd_layers(arch)[0].name
    if first and embedded_first_layer(arch):
        W_E = target[model_of(arch).embedding(arch)]
        n_in, D = W_E.shape[-2], W_E.shape[-1]
        B, C = x.shape[1], V.shape[-1]
        if n_in * D * C + B * n_in * C < B * D * C:
            return anp.matmul(x, anp.matmul(W_E, V))
    return anp.matmul(a, V)


class ChainView:
    """How the loss runs the model: the target trace (`prepare`), the inner activations h at the
    target's inputs (`inner`) and the output with some matrices masked (`output`). This one is the
    architecture's own forward pass (models.forward) with a masked `linear`: any target."""

    def __init__(self, arch: Target, target: Params):
        self.arch, self.target = arch, target

    def prepare(self, x):
        from ...engine.models import target_forward

        return target_forward(self.arch, self.target, x)

    def inner(self, params: SpdParams, x, ctx) -> dict:
        return {layer.name: inner_acts(self.arch, self.target, params, layer, ctx.pre[layer.name], x)
                for layer in spd_layers(self.arch)}

    def output(self, params: SpdParams, x, ctx, h: dict, masks: dict):
        return masked_forward(self.arch, self.target, params, x, ctx, h, masks)


def model_view(arch: Target, target: Params) -> ChainView:
    """The cheapest exact way to run the passes of `arch`: the kind's own view where it has one
    (the 1-layer residual MLP's folded Resid1View), else its forward pass (ChainView)."""
    own = hooks(arch).view
    view = own(arch, target) if own is not None else None
    return view if view is not None else ChainView(arch, target)


class SpdLoss:
    """The SPD loss of one batch, as a function autograd can differentiate.

    `fused` selects the causal-importance implementation: ci.ci_mlp (CIKernel, one per matrix) or
    ci.ci_mlp_plain (the definition). Everything else is plain autograd.numpy. The passes run
    through `view` (model_view: the architecture's forward, or an exact folded form)."""

    def __init__(self, arch: Target, target: Params, dc, fused: bool = True, view: ChainView | None = None):
        self.arch, self.target = arch, target
        self.layers = spd_layers(arch)
        self.ci = dc.causal_importance
        self.L = dc.loss
        self.S = dc.mask_samples
        self.fused = fused
        self.view = view if view is not None else (model_view(arch, target) if fused else ChainView(arch, target))
        self.kernels = {layer.name: ci_mod.CIKernel(self.ci.activation) for layer in self.layers}

    # -- causal importances
    def gamma(self, params: SpdParams, name: str, h):
        if self.fused:
            return ci_mod.ci_mlp(self.kernels[name], h, *ci_params(params, name))
        return ci_mod.ci_mlp_plain(h, *ci_params(params, name), activation=self.ci.activation)

    def importance(self, g_raw: dict, rows: int, row_weights=None):
        """L_importance-minimality per replicate: (1/rows) sum over the given rows (each weighted by
        `row_weights` (I, R), default 1), matrices and subcomponents of (sigma_H,upper(g_raw) + eps)^p.
        A weight above 1 stands for the all-zero input rows a step leaves out (each contributes what
        the zero row it is put on does: gamma(0) everywhere)."""
        p, leak, eps = self.L.importance_minimality_p, self.ci.upper_leak, ci_mod.IMPORTANCE_EPS
        per_row = 0.0
        for g in g_raw.values():
            per_row = per_row + anp.sum((ci_mod.sigma_upper(g, leak) + eps) ** p, axis=2)
        if row_weights is not None:
            per_row = per_row * row_weights
        return anp.sum(per_row, axis=1) / rows

    # -- passes
    def masked_output(self, params: SpdParams, x, tgt, h: dict, masks: dict):
        return self.view.output(params, x, tgt, h, masks)

    def terms(self, params: SpdParams, x, tgt, uniforms: dict, rows: int | None = None, row_weights=None) -> dict:
        """Per-replicate loss terms (name -> (I,)) on inputs x (I, B, n_in) with target trace tgt
        (`view.prepare(x)`) and uniform draws `uniforms` (name -> (S, I, B, C)). `rows`: the batch
        size to normalise by when x holds some of its rows; `row_weights` (I, B): each row's weight
        in the importance term (the all-zero input rows left out are counted on a zero row that x
        keeps; `importance`)."""
        L = self.L
        rows = x.shape[1] if rows is None else rows
        y_ref = tgt.y
        h = self.view.inner(params, x, tgt)
        g_raw = {name: self.gamma(params, name, v) for name, v in h.items()}
        out = {}
        if L.faithfulness is not None:
            out["faithfulness"] = faithfulness_loss(self.arch, params, self.target)
        if L.importance_minimality is not None:
            out["importance_minimality"] = self.importance(g_raw, rows, row_weights)
        g = {name: ci_mod.sigma_lower(v, self.ci.lower_leak) for name, v in g_raw.items()}
        self.last_ci = g  # lower-leaky causal importances of this batch (for logging)
        recon, layerwise = 0.0, 0.0
        for s in range(self.S):
            masks = {name: g[name] + (1.0 - g[name]) * uniforms[name][s] for name in g}
            if L.stochastic_recon is not None:
                recon = recon + mse(self.masked_output(params, x, tgt, h, masks), y_ref, rows)
            if L.stochastic_recon_layerwise is not None:
                for name in masks:
                    y = self.masked_output(params, x, tgt, h, {name: masks[name]})
                    layerwise = layerwise + mse(y, y_ref, rows)
        if L.stochastic_recon is not None:
            out["stochastic_recon"] = recon / self.S
        if L.stochastic_recon_layerwise is not None:
            out["stochastic_recon_layerwise"] = layerwise / (self.S * len(self.layers))
        return out

    def coefficients(self, step: int, steps: int) -> dict:
        """Loss coefficients at `step`: beta_3 rises linearly from 0 over `importance_warmup` of the steps."""
        L = self.L
        c = {"faithfulness": L.faithfulness, "stochastic_recon": L.stochastic_recon,
             "stochastic_recon_layerwise": L.stochastic_recon_layerwise,
             "importance_minimality": L.importance_minimality}
        warm = int(steps * L.importance_warmup)
        if c["importance_minimality"] is not None and step < warm:
            c["importance_minimality"] = c["importance_minimality"] * step / warm
        return {k: v for k, v in c.items() if v is not None}


def masked_forward(arch: Target, target: Params, params: SpdParams, x, tgt, h: dict, masks: dict):
    """The model output with the matrices in `masks` (name -> (I, B, C)) replaced by their masked
    subcomponents, ((a @ V) * m) @ U, and every other matrix the target's own. `h` holds the inner
    activations a_l @ V_l at the target's inputs (`inner_acts`): a masked matrix whose input is still
    the target's reads them, and the matrices before the first masked one return the target's cached
    outputs (`tgt.post`)."""
    by_name = {layer.name: layer for layer in spd_layers(arch)}
    state = {"modified": False}

    def linear(name, a):
        layer = by_name[name]
        if name in masks:
            inner = anp.matmul(a, params[f"{name}.V"]) if state["modified"] else h[name]
            state["modified"] = True
            return anp.matmul(inner * masks[name], params[f"{name}.U"])
        if not state["modified"]:
            return tgt.post[name]  # the target's own output of this matrix: nothing changed yet
        return anp.matmul(a, target_weight(target, layer))

    return forward(arch, target, x, linear).y


def draw_uniforms(arch: Target, C: int, S: int, replicates: int, batch: int, rng: np.random.Generator,
                  dtype) -> dict:
    """The mask noise R of one step: (S, I, B, C) per matrix, in forward order, from `rng`."""
    return {layer.name: rng.random((S, replicates, batch, C), dtype=np.dtype(dtype))
            for layer in spd_layers(arch)}


def zero_rows_inert(arch: Target) -> bool:
    """True if an all-zero input row gives every matrix a zero input in the target (so h = 0 and
    gamma(0) everywhere) and the same output under any masks (so it adds nothing to the
    reconstruction terms): the kind's model says (models.Model.zero_input_inert)."""
    return model_of(arch).zero_input_inert(arch)


CI_FLOPS_PER_UNIT = 30  # the MLP's two affine maps, GELU and derivative (~24 ufuncs), the backward contractions


def expected_rows(exp, arch: Target) -> float:
    """Rows a step works on: all-zero input rows are dropped where exact (`zero_rows_inert`), so with
    at_least_zero_active data B (1 - (1 - p)^F) rows are expected to remain."""
    from ...engine.data import nonzero_fraction
    from ...engine.models import n_inputs

    B = exp.decompose.batch
    data = exp.data
    if zero_rows_inert(arch) and data.mode == "at_least_zero_active" and not data.synced and data.file is None:
        return B * nonzero_fraction(data, n_inputs(arch))
    return float(B)


def step_cost(exp, arch: Target) -> dict:
    """Analytic cost of one SPD step per replicate (multiply-add = 2 FLOPs), by term, with R the
    expected rows: causal_importance R C K units x CI_FLOPS_PER_UNIT per matrix (elementwise work);
    inner_acts 2 R d_in C (and its gradient, x2); masked_passes S (1 + L) passes of 3 x 2 R C
    (d_in + d_out) per masked matrix; faithfulness 3 x 2 C d_in d_out. Also "params" (trainable
    parameters) and "ci_units" (R C K summed over matrices)."""
    dc = exp.decompose
    C, K, S = dc.components, dc.causal_importance.hidden, dc.mask_samples
    layers = spd_layers(arch)
    R = expected_rows(exp, arch)
    L = len(layers)
    mm = sum(3 * 2 * R * C * (la.d_in + la.d_out) for la in layers)
    out = {"causal_importance": sum(CI_FLOPS_PER_UNIT * R * C * K for la in layers),
           "inner_acts": sum(3 * 2 * R * la.d_in * C for la in layers),
           "masked_passes": S * (mm + L * (mm / L)) if L else 0.0,
           "faithfulness": sum(3 * 2 * C * la.d_in * la.d_out for la in layers)}
    total = sum(out.values())
    out.update(total=total, params=sum(C * (la.d_in + la.d_out) + C * (3 * K + 1) for la in layers),
               ci_units=R * C * K * L, rows=R)
    return out

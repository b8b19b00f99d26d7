"""Target architectures: parameters, initialisation and the forward pass.

Every array carries a leading replicate axis I (independent copies trained as one vectorised
model); activations are (I, B, d). Row-vector convention: a layer maps a -> a @ W.

The forward pass is written once per architecture against a `linear(layer, a)` callable that
returns the *pre-bias* layer output; the target model passes plain matmuls and the APD model passes
its component bottleneck (see `apd.py`). Layers (hook names) and the matrices they use:

    TMS        "W" (x @ W), "hidden.k" (h @ V_k), "W.T" (h @ W^T, tied: no parameter of its own)
    resid/gated "layers.l.W_in", "layers.l.W_out"

Parameter names (the stable names of `target.npz`): TMS "W" (I,F,H), "hidden.k" (I,H,H), "b" (I,F);
residual "W_E" (I,n_in,D), "W_U" (I,D,n_out), "layers.l.W_in" (I,D,d_mlp), "layers.l.W_out"
(I,d_mlp,D), and "layers.l.b_in" (I,d_mlp) / "layers.l.b_out" (I,D) when the model has them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import autograd.numpy as anp
import numpy as np

from ..spec import GatedTarget, ResidMlpTarget, Target, TmsTarget

Params = dict  # name -> array with leading replicate axis


@dataclass(frozen=True)
class Layer:
    """One decomposed use of a weight matrix."""

    name: str  # hook name
    param: str  # parameter it reads
    transposed: bool  # uses param^T (TMS tied output layer)
    d_in: int
    d_out: int


def layers_of(arch: Target) -> tuple[Layer, ...]:
    """Decomposed layers in forward order (tied uses included)."""
    if isinstance(arch, TmsTarget):
        F, H = arch.features, arch.hidden
        ls = [Layer("W", "W", False, F, H)]
        ls += [Layer(f"hidden.{k}", f"hidden.{k}", False, H, H) for k in range(arch.hidden_layers)]
        ls.append(Layer("W.T", "W", True, H, F))
        return tuple(ls)
    D, d_mlp, n_layers = residual_dims(arch)
    out = []
    for l in range(n_layers):
        out.append(Layer(f"layers.{l}.W_in", f"layers.{l}.W_in", False, D, d_mlp))
        out.append(Layer(f"layers.{l}.W_out", f"layers.{l}.W_out", False, d_mlp, D))
    return tuple(out)


def decomposed_params(arch: Target) -> tuple[str, ...]:
    """Names of the parameters APD decomposes (each once, tied uses folded in)."""
    seen: list[str] = []
    for layer in layers_of(arch):
        if layer.param not in seen:
            seen.append(layer.param)
    return tuple(seen)


def residual_dims(arch: ResidMlpTarget | GatedTarget) -> tuple[int, int, int]:
    """(D, d_mlp, n_layers) of a residual network (the gated network is one, notes §1.3)."""
    if isinstance(arch, GatedTarget):
        return arch.functions + 2, arch.functions * arch.neurons // arch.layers, arch.layers
    return arch.d_embed, arch.d_mlp, arch.layers


def n_inputs(arch: Target) -> int:
    """Width of the model input x."""
    if isinstance(arch, GatedTarget):
        return arch.functions + 1  # [x, control bits]
    return arch.features


def n_outputs(arch: Target) -> int:
    """d_L, the width of the model output."""
    return 1 if isinstance(arch, GatedTarget) else arch.features


def has_bias(arch: Target, l: int, which: str) -> bool:
    if isinstance(arch, GatedTarget):
        return which == "in"
    return arch.in_bias if which == "in" else arch.out_bias


# ------------------------------------------------------------------------------------------
# Activations (where-based ReLU: gradient 0 at 0, as PyTorch's relu)

_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def relu(z):
    if type(z) is np.ndarray:  # plain arrays (no gradient needed): one pass instead of compare + where
        return np.maximum(z, 0.0)
    return anp.where(z > 0, z, 0.0)


def relu_grad(z):
    return (z > 0).astype(z.dtype)


def gelu(z):
    # tanh approximation is not what torch's default gelu computes: use the exact erf form.
    from autograd.scipy.special import erf

    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


def gelu_grad(z):
    from scipy.special import erf

    z = np.asarray(z)
    cdf = 0.5 * (1.0 + erf(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return (cdf + z * pdf).astype(z.dtype)


def activation(arch: Target) -> tuple[Callable, Callable]:
    """(act, act') of the hidden nonlinearity."""
    if isinstance(arch, ResidMlpTarget) and arch.activation == "gelu":
        return gelu, gelu_grad
    return relu, relu_grad


# ------------------------------------------------------------------------------------------
# Forward pass


@dataclass
class Trace:
    """What one forward pass exposes: output, layer inputs (hook_pre), pre-bias layer outputs
    (hook_post) and the hidden pre-activations (for derivative masks)."""

    y: object
    pre: dict
    post: dict
    preact: dict  # resid/gated: "layers.l" -> z_l (with bias); tms: "out" -> z (with bias)


def forward(arch: Target, params: Params, x, linear: Callable) -> Trace:
    """Run the architecture on x (I, B, n_in) with `linear(layer_name, a) -> a @ W (pre-bias)`.

    `params` supplies the frozen parameters (biases, embeddings)."""
    pre, post, preact = {}, {}, {}

    def lin(name, a):
        pre[name] = a
        h = linear(name, a)
        post[name] = h
        return h

    if isinstance(arch, TmsTarget):
        h = lin("W", x)
        for k in range(arch.hidden_layers):
            h = lin(f"hidden.{k}", h)
        z = lin("W.T", h)
        if arch.bias:
            z = z + params["b"][:, None, :]
        preact["out"] = z
        return Trace(relu(z), pre, post, preact)

    act, _ = activation(arch)
    _, _, n_layers = residual_dims(arch)
    r = anp.matmul(x, params["W_E"])
    for l in range(n_layers):
        z = lin(f"layers.{l}.W_in", r)
        if has_bias(arch, l, "in"):
            z = z + params[f"layers.{l}.b_in"][:, None, :]
        preact[f"layers.{l}"] = z
        o = lin(f"layers.{l}.W_out", act(z))
        if has_bias(arch, l, "out"):
            o = o + params[f"layers.{l}.b_out"][:, None, :]
        r = r + o
    y = anp.matmul(r, params["W_U"])
    if isinstance(arch, ResidMlpTarget) and arch.output_activation:
        preact["out"] = y
        y = act(y)
    return Trace(y, pre, post, preact)


def dense_linear(params: Params, arch: Target) -> Callable:
    """`linear` for the target itself: plain matmuls with its own weights."""
    by_name = {layer.name: layer for layer in layers_of(arch)}

    def linear(name, a):
        layer = by_name[name]
        W = params[layer.param]
        if layer.transposed:
            W = anp.swapaxes(W, -1, -2)
        return anp.matmul(a, W)

    return linear


def target_forward(arch: Target, params: Params, x) -> Trace:
    return forward(arch, params, x, dense_linear(params, arch))


# ------------------------------------------------------------------------------------------
# Initialisation (PyTorch fan rules, per replicate: fans never depend on the replicate count)


def init_target(arch: Target, replicates: int, rng: np.random.Generator, dtype=np.float32) -> Params:
    """Fresh target parameters. TMS: xavier-normal W (fan rule on (1, F, H)), zero bias;
    residual MLP: fixed random unit-norm W_E, W_U = W_E^T, kaiming-uniform MLP weights x init_scale,
    zero biases (notes §1.1-1.2). Gated targets are built by `gated.build_gated`."""
    I = replicates
    p: Params = {}
    if isinstance(arch, TmsTarget):
        F, H = arch.features, arch.hidden
        std = math.sqrt(2.0 / (F * H + H))  # xavier_normal_ on (1, F, H): fan_in F*H, fan_out 1*H
        p["W"] = rng.normal(0.0, std, (I, F, H))
        for k in range(arch.hidden_layers):
            std_h = math.sqrt(2.0 / (H * H + H))
            p[f"hidden.{k}"] = rng.normal(0.0, std_h, (I, H, H))
        p["b"] = np.zeros((I, F))
    elif isinstance(arch, ResidMlpTarget):
        F, D, d_mlp = arch.features, arch.d_embed, arch.d_mlp
        if arch.embedding == "identity":
            W_E = np.broadcast_to(np.eye(F, D), (I, F, D)).copy()
        else:
            W_E = rng.standard_normal((I, F, D))
            W_E /= np.linalg.norm(W_E, axis=-1, keepdims=True)
        p["W_E"] = W_E
        p["W_U"] = np.swapaxes(W_E, -1, -2).copy()
        bound = math.sqrt(6.0 / (D * d_mlp)) * arch.init_scale  # kaiming_uniform_ on (1, d_in, d_out)
        for l in range(arch.layers):
            p[f"layers.{l}.W_in"] = rng.uniform(-bound, bound, (I, D, d_mlp))
            p[f"layers.{l}.W_out"] = rng.uniform(-bound, bound, (I, d_mlp, D))
            if arch.in_bias:
                p[f"layers.{l}.b_in"] = np.zeros((I, d_mlp))
            if arch.out_bias:
                p[f"layers.{l}.b_out"] = np.zeros((I, D))
    else:
        raise TypeError(f"init_target does not build {type(arch).__name__}; gated targets are hand-coded")
    return {k: v.astype(dtype) for k, v in p.items()}


def trainable_target_params(arch: Target) -> tuple[str, ...]:
    """Parameters trained during target training (W_E / W_U stay fixed)."""
    if isinstance(arch, TmsTarget):
        names = ["W"] + [f"hidden.{k}" for k in range(arch.hidden_layers)]
        return tuple(names + (["b"] if arch.bias else []))
    D, d_mlp, n_layers = residual_dims(arch)
    names = []
    for l in range(n_layers):
        names += [f"layers.{l}.W_in", f"layers.{l}.W_out"]
        if has_bias(arch, l, "in"):
            names.append(f"layers.{l}.b_in")
        if has_bias(arch, l, "out"):
            names.append(f"layers.{l}.b_out")
    return tuple(names)


def random_params(arch: Target, replicates: int, rng: np.random.Generator, dtype=np.float64,
                  scale: float = 0.5) -> Params:
    """Random parameters of the right shapes for any architecture (tests and benchmarks)."""
    I = replicates
    if isinstance(arch, TmsTarget):
        F, H = arch.features, arch.hidden
        p = {"W": rng.normal(0, scale, (I, F, H)), "b": rng.normal(0, 0.1, (I, F))}
        for k in range(arch.hidden_layers):
            p[f"hidden.{k}"] = rng.normal(0, scale, (I, H, H))
    else:
        D, d_mlp, n_layers = residual_dims(arch)
        p = {"W_E": rng.normal(0, scale, (I, n_inputs(arch), D)), "W_U": rng.normal(0, scale, (I, D, n_outputs(arch)))}
        for l in range(n_layers):
            p[f"layers.{l}.W_in"] = rng.normal(0, scale, (I, D, d_mlp))
            p[f"layers.{l}.W_out"] = rng.normal(0, scale, (I, d_mlp, D))
            if has_bias(arch, l, "in"):
                p[f"layers.{l}.b_in"] = rng.normal(0, 0.1, (I, d_mlp))
            if has_bias(arch, l, "out"):
                p[f"layers.{l}.b_out"] = rng.normal(0, 0.1, (I, D))
    return {k: v.astype(dtype) for k, v in p.items()}

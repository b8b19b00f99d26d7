"""Residual-network numerics (the residual MLP here; the gated network builds on `ResidualModel`).

    r_0 = x W_E,  z_l = r_{l-1} W_in,l (+ b_in,l),  r_l = r_{l-1} + act(z_l) W_out,l (+ b_out,l),
    y = r_L W_U  (act(y) with an output activation)

Parameter names (the stable names of `target.npz`): "W_E" (I,n_in,D), "W_U" (I,D,n_out),
"layers.l.W_in" (I,D,d_mlp), "layers.l.W_out" (I,d_mlp,D), and "layers.l.b_in" (I,d_mlp) /
"layers.l.b_out" (I,D) when the model has them.
"""
from __future__ import annotations

import math

import numpy as np

from ...engine import draws
from ...engine.data import gelu_plain
from ...engine.models import ACTIVATIONS, Model, Params
from ...engine.registry import MODELS, model_of
from .spec import ResidMlpTarget


class ResidualModel(Model):
    """A residual network; subclasses say its widths (`dims`), biases and activation."""

    def dims(self, arch) -> tuple[int, int, int]:
        """(D, d_mlp, n_layers)."""
        raise NotImplementedError

    def has_bias(self, arch, l: int, which: str) -> bool:
        raise NotImplementedError

    def output_activation(self, arch) -> bool:
        return False

    def forward(self, arch, params: Params, x, linear, pre, post, preact):
        import autograd.numpy as anp

        act, _ = self.activation(arch)
        _, _, n_layers = self.dims(arch)
        r = anp.matmul(x, params["W_E"])
        for l in range(n_layers):
            z = linear(f"layers.{l}.W_in", r)
            if self.has_bias(arch, l, "in"):
                z = z + params[f"layers.{l}.b_in"][:, None, :]
            preact[f"layers.{l}"] = z
            o = linear(f"layers.{l}.W_out", act(z))
            if self.has_bias(arch, l, "out"):
                o = o + params[f"layers.{l}.b_out"][:, None, :]
            r = r + o
        y = anp.matmul(r, params["W_U"])
        if self.output_activation(arch):
            preact["out"] = y
            y = act(y)
        return y

    def trainable(self, arch) -> tuple[str, ...]:
        """The MLP weights and biases; W_E / W_U stay fixed."""
        names = []
        for l in range(self.dims(arch)[2]):
            names += [f"layers.{l}.W_in", f"layers.{l}.W_out"]
            if self.has_bias(arch, l, "in"):
                names.append(f"layers.{l}.b_in")
            if self.has_bias(arch, l, "out"):
                names.append(f"layers.{l}.b_out")
        return tuple(names)

    def embedding(self, arch) -> str | None:
        return "W_E"


def residual_dims(arch) -> tuple[int, int, int]:
    """(D, d_mlp, n_layers) of a residual network (residual MLP or gated)."""
    return model_of(arch).dims(arch)


def has_bias(arch, l: int, which: str) -> bool:
    return model_of(arch).has_bias(arch, l, which)


def output_activation(arch) -> bool:
    return model_of(arch).output_activation(arch)


class ResidMlpModel(ResidualModel):
    kind = "resid_mlp"

    def dims(self, arch: ResidMlpTarget):
        return arch.d_embed, arch.d_mlp, arch.layers

    def has_bias(self, arch: ResidMlpTarget, l: int, which: str) -> bool:
        return arch.in_bias if which == "in" else arch.out_bias

    def output_activation(self, arch: ResidMlpTarget) -> bool:
        return arch.output_activation

    def activation(self, arch: ResidMlpTarget):
        return ACTIVATIONS[arch.activation]

    def init(self, arch: ResidMlpTarget, replicates: int, rng: np.random.Generator, dtype=np.float32) -> Params:
        """Fixed random unit-norm W_E (or identity), W_U = W_E^T, kaiming-uniform MLP weights x
        init_scale, zero biases (notes §1.2)."""
        I, F, D, d_mlp = replicates, arch.features, arch.d_embed, arch.d_mlp
        p: Params = {}
        if arch.embedding == "identity":
            W_E = np.broadcast_to(np.eye(F, D, dtype=dtype), (I, F, D)).copy()
        else:  # unit rows of a float64 draw, block by block (engine/draws.py)
            def unit_rows(k: int) -> np.ndarray:
                w = rng.standard_normal((k, D))
                w /= np.linalg.norm(w, axis=-1, keepdims=True)
                return w

            W_E = draws.rows((I, F, D), dtype, unit_rows)
        p["W_E"] = W_E
        p["W_U"] = np.swapaxes(W_E, -1, -2).copy()
        bound = math.sqrt(6.0 / (D * d_mlp)) * arch.init_scale  # kaiming_uniform_ on (1, d_in, d_out)
        for l in range(arch.layers):
            p[f"layers.{l}.W_in"] = draws.uniform(rng, -bound, bound, (I, D, d_mlp), dtype)
            p[f"layers.{l}.W_out"] = draws.uniform(rng, -bound, bound, (I, d_mlp, D), dtype)
            if arch.in_bias:
                p[f"layers.{l}.b_in"] = np.zeros((I, d_mlp), dtype=dtype)
            if arch.out_bias:
                p[f"layers.{l}.b_out"] = np.zeros((I, D), dtype=dtype)
        return p

    def labels(self, arch: ResidMlpTarget, train, x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        """`act_plus_resid` act(c x) + x; `abs` |c x|; act as the target's activation (notes §1.2)."""
        cx = x * np.asarray(coeffs, dtype=x.dtype)[:, None, :]
        kind = train.labels or "act_plus_resid"
        if kind == "act_plus_resid":
            act = gelu_plain(cx) if arch.activation == "gelu" else np.where(cx > 0, cx, 0)
            return (act + x).astype(x.dtype)
        if kind == "abs":
            return np.abs(cx)
        raise ValueError(f"labels {kind!r} do not apply to a residual MLP")

    def zero_input_inert(self, arch: ResidMlpTarget) -> bool:
        return not arch.in_bias and (not arch.out_bias or arch.layers == 1)


MODELS["resid_mlp"] = ResidMlpModel()

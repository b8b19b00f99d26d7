"""Numerics of a network target: its forward pass from the layer list, init, trainable parameters
and labels (shapes and checks: spec.py).

A decomposed linear layer runs through `linear(name, a)` (the target's plain matmul, or a method's
masked product); every other one is a plain matmul with its own weight. Biases follow the product.
"""
from __future__ import annotations

import math

import autograd.numpy as anp
import numpy as np

from ...engine.data import gelu_plain
from ...engine.models import ACTIVATIONS, Model, Params
from ...engine.registry import MODELS
from ...spec.layers import Activation, Linear, Residual
from .spec import MlpTarget, uses

_IDENTITY = (lambda z: z, lambda z: np.ones_like(z))


def _act(fn: str):
    return _IDENTITY[0] if fn == "identity" else ACTIVATIONS[fn][0]


class MlpModel(Model):
    kind = "mlp"

    def forward(self, arch: MlpTarget, params: Params, x, linear, pre, post, preact):
        w, dec = uses(arch)  # (cached: a walk over the item list, no arrays)
        decomposed = {u.name for u in dec}
        order = iter(w.linears)  # the walk visits the linear layers in the order they run

        def run(items, h):
            for item in items:
                if isinstance(item, Linear):
                    u = next(order)
                    if u.name in decomposed:
                        h = linear(u.name, h)
                    else:
                        W = params[u.param]
                        h = anp.matmul(h, anp.swapaxes(W, -1, -2) if u.source is not None else W)
                    if item.bias:
                        h = h + params[f"{u.name}.bias"][:, None, :]
                elif isinstance(item, Activation):
                    h = _act(item.fn)(h)
                elif isinstance(item, Residual):
                    h = h + run(item.body, h)
            return h

        return run(arch.network, x)

    def init(self, arch: MlpTarget, replicates: int, rng: np.random.Generator, dtype=np.float32) -> Params:
        """Per untied layer, in order: its weight then its bias, drawn by its `init` (linear.init)."""
        from ...spec.layers import walk

        I = replicates
        p: Params = {}
        for u in walk(arch.features, arch.network).linears:
            d_in, d_out = u.d_in, u.d_out
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear: kaiming_uniform(a = sqrt 5) weight, U(+-1/sqrt fan_in) bias
            init = u.layer.init if u.source is None else "tied"
            if init == "default":
                p[u.name] = rng.uniform(-bound, bound, (I, d_in, d_out))
            elif init == "identity":
                p[u.name] = np.broadcast_to(np.eye(d_in, d_out), (I, d_in, d_out)).copy()
            elif init == "zeros":
                p[u.name] = np.zeros((I, d_in, d_out))
            elif init == "unit_rows":
                W = rng.standard_normal((I, d_in, d_out))
                p[u.name] = W / np.linalg.norm(W, axis=-1, keepdims=True)
            if u.layer.bias:
                p[f"{u.name}.bias"] = (rng.uniform(-bound, bound, (I, d_out)) if init == "default"
                                       else np.zeros((I, d_out)))
        return {k: np.asarray(v).astype(dtype) for k, v in p.items()}

    def trainable(self, arch: MlpTarget) -> tuple[str, ...]:
        from ...spec.layers import walk

        names = []
        for u in walk(arch.features, arch.network).linears:
            frozen = (u.source.layer if u.source is not None else u.layer).frozen
            if u.source is None and not frozen:
                names.append(u.name)
            if u.layer.bias and not u.layer.frozen:
                names.append(f"{u.name}.bias")
        return tuple(names)

    def n_outputs(self, arch: MlpTarget) -> int:
        from ...spec.layers import walk

        return walk(arch.features, arch.network).n_out

    def activation(self, arch: MlpTarget):
        """The network's first nonlinearity (act_plus_resid labels use it; relu if it has none)."""
        fn = _first_activation(arch.network)
        return _IDENTITY if fn == "identity" else ACTIVATIONS[fn]

    def labels(self, arch: MlpTarget, train, x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        """identity y = x; abs y = |c x|; act_plus_resid y = x + act(c x), act the first activation."""
        kind = train.labels or "identity"
        n_out = self.n_outputs(arch)
        if n_out != arch.features:
            raise ValueError(f"the network writes {n_out} outputs for {arch.features} inputs: {kind} labels (one per "
                             "input) do not apply, and a state dict does not say what it was trained on")
        if kind == "identity":
            return x.copy()
        cx = x * np.asarray(coeffs, dtype=x.dtype)[:, None, :]
        if kind == "abs":
            return np.abs(cx)
        if kind == "act_plus_resid":
            fn = _first_activation(arch.network)
            act = gelu_plain(cx) if fn == "gelu" else cx if fn == "identity" else np.where(cx > 0, cx, 0)
            return (act + x).astype(x.dtype)
        raise ValueError(f"labels {kind!r} do not apply to an mlp target")

    def zero_input_inert(self, arch: MlpTarget) -> bool:
        """No bias reaches a decomposed layer's input: a zero input reaches every decomposed layer
        as zero, whatever the mask (a bias after the last decomposed layer shifts target and
        decomposed outputs alike)."""
        w, dec = uses(arch)
        if not dec:
            return True
        last = max(w.linears.index(u) for u in dec)
        return not any(u.layer.bias for u in w.linears[:last])


def _first_activation(network: tuple) -> str:
    for item in network:
        for x in (item.body if isinstance(item, Residual) else (item,)):
            if isinstance(x, Activation) and x.fn != "identity":
                return x.fn
    return "relu"


MODELS["mlp"] = MlpModel()

"""TMS numerics: forward pass, initialisation, labels and training loss (shapes: spec.py).

    h_0 = x W,  h_k = h_{k-1} V_k,  y = ReLU(h_K W^T + b)
"""
from __future__ import annotations

import math

import autograd.numpy as anp
import numpy as np

from ...engine import draws
from ...engine.models import Model, Params, relu, target_forward
from ...engine.registry import MODELS
from .spec import TmsTarget


class TmsModel(Model):
    kind = "tms"

    def forward(self, arch: TmsTarget, params: Params, x, linear, pre, post, preact):
        h = linear("W", x)
        for k in range(arch.hidden_layers):
            h = linear(f"hidden.{k}", h)
        z = linear("W.T", h)
        if arch.bias:
            z = z + params["b"][:, None, :]
        preact["out"] = z
        return relu(z)

    def init(self, arch: TmsTarget, replicates: int, rng: np.random.Generator, dtype=np.float32) -> Params:
        """xavier-normal W (fan rule on (1, F, H)), zero bias (notes §1.1); hidden layers the
        identity (hidden_weights = identity) or xavier-normal like W (trained)."""
        I, F, H = replicates, arch.features, arch.hidden
        std = math.sqrt(2.0 / (F * H + H))  # xavier_normal_ on (1, F, H): fan_in F*H, fan_out 1*H
        p: Params = {"W": draws.normal(rng, 0.0, std, (I, F, H), dtype)}
        for k in range(arch.hidden_layers):
            if arch.hidden_weights == "identity":
                p[f"hidden.{k}"] = np.broadcast_to(np.eye(H, dtype=dtype), (I, H, H)).copy()
            else:
                std_h = math.sqrt(2.0 / (H * H + H))
                p[f"hidden.{k}"] = draws.normal(rng, 0.0, std_h, (I, H, H), dtype)
        p["b"] = np.zeros((I, F), dtype=dtype)
        return p

    def trainable(self, arch: TmsTarget) -> tuple[str, ...]:
        names = ["W"]
        if arch.hidden_weights != "identity":
            names += [f"hidden.{k}" for k in range(arch.hidden_layers)]
        return tuple(names + (["b"] if arch.bias else []))

    def labels(self, arch: TmsTarget, train, x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        return x.copy()  # TMS reconstructs its input

    def train_loss(self, arch: TmsTarget, params: Params, x, labels, importance):
        """importance * (|labels| - y)^2, mean over batch and features (notes §1.1)."""
        y = target_forward(arch, params, x).y
        return anp.mean(importance * (anp.abs(labels) - y) ** 2, axis=(1, 2))

    def zero_input_inert(self, arch: TmsTarget) -> bool:
        return True  # no bias before the output


MODELS["tms"] = TmsModel()

"""Deep linear numerics: forward pass, identity initialisation, labels (shapes: spec.py)."""
from __future__ import annotations

import numpy as np

from ...engine.models import Model, Params
from ...engine.registry import MODELS
from .spec import DeepLinearTarget


class DeepLinearModel(Model):
    kind = "deep_linear"

    def forward(self, arch: DeepLinearTarget, params: Params, x, linear, pre, post, preact):
        h = x
        for l in range(arch.layers):
            h = linear(f"layers.{l}.W", h)
        return h

    def init(self, arch: DeepLinearTarget, replicates: int, rng: np.random.Generator, dtype=np.float32) -> Params:
        """The identity in every layer, plus N(0, init_noise^2) entries when init_noise > 0."""
        d, I = arch.features, replicates
        p: Params = {}
        for l in range(arch.layers):
            W = np.broadcast_to(np.eye(d), (I, d, d)).copy()
            if arch.init_noise > 0:
                W += rng.normal(0.0, arch.init_noise, (I, d, d))
            p[f"layers.{l}.W"] = W
        return {k: v.astype(dtype) for k, v in p.items()}

    def trainable(self, arch: DeepLinearTarget) -> tuple[str, ...]:
        return tuple(f"layers.{l}.W" for l in range(arch.layers))

    def labels(self, arch: DeepLinearTarget, train, x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        return x.copy()

    def zero_input_inert(self, arch: DeepLinearTarget) -> bool:
        return True  # no bias anywhere: a zero input stays zero


MODELS["deep_linear"] = DeepLinearModel()

"""Deep linear numerics: forward pass, identity initialisation, labels (shapes: spec.py)."""
from __future__ import annotations

import numpy as np

from ...engine import draws
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
            if arch.init_noise > 0:  # 1 + noise in float64, cast piece by piece (engine/draws.py)
                def eye_plus_noise(s: int, n: int) -> np.ndarray:
                    k = np.arange(s, s + n) % (d * d)
                    return (k // d == k % d) + rng.normal(0.0, arch.init_noise, n)

                p[f"layers.{l}.W"] = draws.filled((I, d, d), dtype, eye_plus_noise)
            else:
                p[f"layers.{l}.W"] = np.broadcast_to(np.eye(d, dtype=dtype), (I, d, d)).copy()
        return p

    def trainable(self, arch: DeepLinearTarget) -> tuple[str, ...]:
        return tuple(f"layers.{l}.W" for l in range(arch.layers))

    def labels(self, arch: DeepLinearTarget, train, x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        return x.copy()

    def zero_input_inert(self, arch: DeepLinearTarget) -> bool:
        return True  # no bias anywhere: a zero input stays zero


MODELS["deep_linear"] = DeepLinearModel()

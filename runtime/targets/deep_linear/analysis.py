"""Deep linear ground truth: per layer, the rows of W_l are the input dimensions' directions, and a
correct decomposition has, in every layer, one component whose row f matches row f of W_l (its
other rows zero). Measured with the TMS match (MMCS / ML2R) layer by layer."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...analysis.core import KIND_ANALYSES, KindAnalysis, _cached
from ...analysis.metrics import COMPUTED
from ..tms.analysis import MATCHED_COS, feature_match


class DeepLinearAnalysis(KindAnalysis):
    @_cached
    def match(self) -> dict:
        """(I, L, F) best component, cosine and norm ratio of every input dimension in every layer."""
        an = self.an
        L = an.arch.layers
        best, cos, ratio = (np.zeros((an.I, L, an.arch.features), dtype=dt) for dt in (int, float, float))
        for l in range(L):
            P = an.matrix_weights(f"layers.{l}.W")
            for i in range(an.I):
                best[i, l], cos[i, l], ratio[i, l] = feature_match(P[i], an.target[f"layers.{l}.W"][i])
        return {"best": best, "cos": cos, "ratio": ratio}

    def feature_components(self, name: str | None = None) -> np.ndarray | None:
        """The layer match: the first layer's for components spanning the layers, else the named layer's."""
        best = self.match()["best"]
        if self.an.importance != "causal":
            return best[:, 0]
        for l in range(self.an.arch.layers):
            if name == f"layers.{l}.W":
                return best[:, l]
        return None

    def recovered(self) -> np.ndarray:
        """(I,) dimensions matched in every layer; where components span layers (attribution
        methods), by the same component in every layer."""
        m = self.match()
        ok = np.all(m["cos"] >= MATCHED_COS, axis=1)  # (I, F)
        if self.an.importance != "causal":
            ok &= np.all(m["best"] == m["best"][:, :1], axis=1)
        return ok.sum(axis=1).astype(np.float64)


KIND_ANALYSES["deep_linear"] = DeepLinearAnalysis


def _part(an: Any) -> DeepLinearAnalysis:
    return an.part


COMPUTED.update(
    layer_mmcs=lambda an: _part(an).match()["cos"].mean(axis=(1, 2)),
    layer_ml2r=lambda an: _part(an).match()["ratio"].mean(axis=(1, 2)),
    recovered_features=lambda an: _part(an).recovered(),
)

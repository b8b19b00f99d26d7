"""Ground truth of a network target, as its spec states it (spec.py, `truth`): per feature matrix
(input_features: row f is feature f; output_features: column f), the best-matching component of
every feature and its cosine and norm ratio, as the TMS MMCS / ML2R (paper eqs. 3-4). The dense
matrices are measured by the generic dense_share / dense_error (runtime/analysis/dense.py)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...analysis.core import KIND_ANALYSES, KindAnalysis, _cached
from ...analysis.dense import layer_weights
from ...analysis.metrics import COMPUTED
from ..tms.analysis import MATCHED_COS, feature_match


class MlpAnalysis(KindAnalysis):
    @_cached
    def match(self) -> dict:
        """(I, M, F) best component, cosine and norm ratio of every feature in each of the M feature
        matrices (rows of input_features, then columns of output_features)."""
        an = self.an
        t = an.arch.truth
        mats = [(n, False) for n in t.input_features] + [(n, True) for n in t.output_features]
        F = an.arch.features
        best, cos, ratio = (np.zeros((an.I, len(mats), F), dtype=dt) for dt in (int, float, float))
        for j, (name, columns) in enumerate(mats):
            P, W = layer_weights(an, name)
            if columns:
                P, W = np.swapaxes(P, -1, -2), np.swapaxes(W, -1, -2)
            for i in range(an.I):
                best[i, j], cos[i, j], ratio[i, j] = feature_match(P[i], W[i])
        return {"best": best, "cos": cos, "ratio": ratio}

    def matched(self) -> np.ndarray:
        """(I,) features matched (cosine >= 0.99) in every feature matrix; where components span
        matrices (attribution methods), by the same component in each."""
        m = self.match()
        ok = np.all(m["cos"] >= MATCHED_COS, axis=1)
        if self.an.importance != "causal":
            ok &= np.all(m["best"] == m["best"][:, :1], axis=1)
        return ok.sum(axis=1).astype(np.float64)


KIND_ANALYSES["mlp"] = MlpAnalysis


def _part(an: Any) -> MlpAnalysis:
    return an.part


COMPUTED.update(
    feature_mmcs=lambda an: _part(an).match()["cos"].mean(axis=(1, 2)),
    feature_ml2r=lambda an: _part(an).match()["ratio"].mean(axis=(1, 2)),
    feature_matched=lambda an: _part(an).matched(),
)

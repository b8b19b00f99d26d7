"""Residual-MLP analyses on plain arrays (notes §7.3-7.7): neuron contributions, component
categories, causal-scrubbing masks, per-feature reductions and the monosemantic baseline.

Neurons of all layers are concatenated, layer 0 first (cross-layer interactions are ignored, as in
the reference). Row-vector convention: in_conns = W_E W_in (F x N), out_conns = W_out W_U (N x F).
"""
from __future__ import annotations

import numpy as np

CATEGORY_CUTOFF = 0.04  # notes §7.4: feature f belongs to component c if max_n contrib_c[f, n] > cutoff


def contributions(W_E: np.ndarray, W_U: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(F, N) neuron contributions contrib[f, n] = (W_E W_in)[f, n] * (W_out W_U)[n, f] of dense
    weights; `layers` holds (W_in (D, d), W_out (d, D)) per layer (paper §3.2)."""
    parts = []
    for W_in, W_out in layers:
        read = W_E @ W_in  # (F, d)
        write = W_out @ W_U  # (d, F)
        parts.append(read * write.T)
    return np.concatenate(parts, axis=-1)


def component_reads_writes(W_E: np.ndarray, W_U: np.ndarray,
                           factors: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Per-component virtual weights (read (C, F, N) = W_E W_in,c; write (C, N, F) = W_out,c W_U),
    computed from the factors without forming dense (C, D, d) weights. `factors` holds per layer
    (A_in (C, D, m), B_in (C, m, d), A_out (C, d, m), B_out (C, m, D))."""
    reads, writes = [], []
    for A_in, B_in, A_out, B_out in factors:
        C, D, m = A_in.shape
        E = W_E @ A_in.transpose(1, 0, 2).reshape(D, C * m)  # (F, C*m): W_E A_in,c for all c
        reads.append(np.matmul(E.reshape(-1, C, m).transpose(1, 0, 2), B_in))  # (C, F, d)
        U = B_out.reshape(C * m, -1) @ W_U  # (C*m, F): B_out,c W_U
        writes.append(np.matmul(A_out, U.reshape(C, m, -1)))  # (C, d, F)
    return np.concatenate(reads, axis=-1), np.concatenate(writes, axis=1)


def component_contributions(W_E: np.ndarray, W_U: np.ndarray,
                            factors: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """(C, F, N) contributions of every component from its own W_in,c and W_out,c (notes §7.3)."""
    read, write = component_reads_writes(W_E, W_U, factors)
    return read * write.transpose(0, 2, 1)


def dominant_components(contrib_c: np.ndarray) -> np.ndarray:
    """(F,) c*(f) = argmax_c max_n contrib_c[f, n]: the component shown for f in Figs. 6 / 10."""
    return np.argmax(contrib_c.max(axis=-1), axis=0)


def categories(contrib_c: np.ndarray, cutoff: float = CATEGORY_CUTOFF) -> dict:
    """Which features each component represents (max_n contrib_c[f, n] > cutoff, notes §7.4).

    Returns represents (C, F) bool, features_per_component (C,), the counts dead / mono / duo / poly
    (0, 1, 2, >2 features), dedicated_features (features f with a component that represents f and
    only f) and features_represented (features with at least one component)."""
    represents = contrib_c.max(axis=-1) > cutoff
    n = represents.sum(axis=1)
    mono = n == 1
    return {
        "represents": represents,
        "features_per_component": n,
        "dead": int(np.sum(n == 0)),
        "mono": int(np.sum(mono)),
        "duo": int(np.sum(n == 2)),
        "poly": int(np.sum(n > 2)),
        "dedicated_features": int(np.any(represents[mono], axis=0).sum()),
        "features_represented": int(np.any(represents, axis=0).sum()),
    }


def forced_components(active: np.ndarray, feature_map: np.ndarray, C: int) -> np.ndarray:
    """(I, B, C) bool: the components mapped from the active features of every sample.
    active (I, B, F) bool, feature_map (I, F) component index per feature."""
    onehot = (feature_map[..., None] == np.arange(C)).astype(np.float64)  # (I, F, C)
    return np.matmul(active.astype(np.float64), onehot) > 0


def scrub_masks(active: np.ndarray, feature_map: np.ndarray, C: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scrubbed, anti_scrubbed, random) masks (I, B, C) of notes §7.7, with the reference's index
    bug fixed: every one of the C components is kept with probability 1/2; scrubbed then forces the
    active features' components on, anti-scrubbed forces them off."""
    random = rng.random(active.shape[:-1] + (C,)) < 0.5
    forced = forced_components(active, feature_map, C)
    return random | forced, random & ~forced, random


def canonical_factors(W_E: np.ndarray, W_U: np.ndarray, W_in: np.ndarray, W_out: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The canonical one-feature-per-component decomposition of a 1-layer residual MLP: component f
    reads only feature f's embedding direction and writes only to feature f's readout, rank 1 in
    each matrix (the yardstick for the scrubbing test; not something APD trains):

        W_in,f  = d_f (W_E W_in)[f, :]      d_f  = column f of pinv(W_E), so W_E d_f = e_f
        W_out,f = (W_out W_U)[:, f] u_f     u_f  = row f of pinv(W_U), so u_f W_U = e_f^T

    The sums are W_in and W_out projected onto the embedding and readout spans, so with every
    component on the output is the target's; with a subset S on, pre-activations see only the
    features in S and readout g is written only when g is in S. Arguments carry a leading replicate
    axis: W_E (I, F, D), W_U (I, D, F), W_in (I, D, d), W_out (I, d, D). Returns the factors
    A_in (I, F, D, 1), B_in (I, F, 1, d), A_out (I, F, d, 1), B_out (I, F, 1, D)."""
    dual_in = np.linalg.pinv(W_E)  # (I, D, F)
    dual_out = np.linalg.pinv(W_U)  # (I, F, D)
    reads = W_E @ W_in  # (I, F, d)
    writes = np.swapaxes(W_out @ W_U, 1, 2)  # (I, F, d): row f = (W_out W_U)[:, f]
    return (np.swapaxes(dual_in, 1, 2)[..., None], reads[:, :, None, :], writes[..., None], dual_out[:, :, None, :])


def canonical_scrub_masks(active: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(scrubbed, anti_scrubbed) masks (I, B, F) over the canonical decomposition's components (one
    per feature): every one kept with probability 1/2, the active features' forced on / off."""
    random = rng.random(active.shape) < 0.5
    return random | active, random & ~active


def single_feature(x: np.ndarray) -> np.ndarray:
    """(I, B) index of the active feature of samples with exactly one nonzero feature, else -1."""
    nz = x != 0
    idx = np.argmax(nz, axis=-1)
    return np.where(nz.sum(axis=-1) == 1, idx, -1)


def per_feature_mean(feature: np.ndarray, values: np.ndarray, F: int) -> tuple[np.ndarray, np.ndarray]:
    """Average `values` (I, N) per feature over samples with feature[i, n] = f (-1 = skip).
    Returns (means (I, F), NaN where a feature has no sample; counts (I, F))."""
    I = values.shape[0]
    sums, counts = np.zeros((I, F)), np.zeros((I, F))
    for i in range(I):
        ok = feature[i] >= 0
        sums[i] = np.bincount(feature[i][ok], weights=values[i][ok], minlength=F)[:F]
        counts[i] = np.bincount(feature[i][ok], minlength=F)[:F]
    means = np.divide(sums, counts, out=np.full((I, F), np.nan), where=counts > 0)
    return means, counts


def monosemantic_resid(x: np.ndarray, labels: np.ndarray, n_mono: int) -> np.ndarray:
    """The monosemantic baseline (notes §7.2): one neuron per feature for the first n_mono = d_mlp x
    layers features (true label), the others pass through the residual stream (output = input)."""
    out = np.array(x, copy=True)
    out[..., :n_mono] = labels[..., :n_mono]
    return out


def log_bins(high: float, n: int = 50, low: float = 1e-7) -> np.ndarray:
    """n log-spaced histogram bins from `low` to `high` (Figs. 8, 25)."""
    high = float(high) if np.isfinite(high) and high > low * 10 else low * 10
    return np.geomspace(low, high, n + 1)


def nanmean_features(means: np.ndarray) -> np.ndarray:
    """(I,) mean over the features that had samples (NaN if none did)."""
    out = np.full(means.shape[0], np.nan)
    for i, row in enumerate(means):
        ok = np.isfinite(row)
        if ok.any():
            out[i] = float(row[ok].mean())
    return out

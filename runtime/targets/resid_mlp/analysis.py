"""Residual-MLP analyses (notes §7.3-7.7): neuron contributions, component categories, the
canonical decomposition and its scrubbing test, per-feature reductions and the monosemantic
baseline; plain-array functions first, then the run-level part (`ResidAnalysis`), which computes
each measure for attribution methods (APD: components of rank m, top-k) and causal-importance
methods (SPD: rank-one subcomponents per matrix) as their papers define it.

Neurons of all layers are concatenated, layer 0 first (cross-layer interactions are ignored, as in
the reference). Row-vector convention: in_conns = W_E W_in (F x N), out_conns = W_out W_U (N x F).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from ...analysis.core import KIND_ANALYSES, KindAnalysis, _cached, masked_mean, mse_per_sample
from ...analysis.metrics import COMPUTED
from ...analysis.scrub import scrub_masks
from ...engine.data import value_range
from ...engine.models import layers_of
from ...methods.apd import components as apd
from ...methods.apd.attributions import sample_topk_mask
from .model import residual_dims

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


def categories_from_ci(g_onehot: np.ndarray, cutoff: float) -> dict:
    """`categories` from one-hot causal importances (F, C) of the W_in subcomponents."""
    represents = g_onehot.T > cutoff  # (C, F)
    n = represents.sum(axis=1)
    mono = n == 1
    return {"represents": represents, "features_per_component": n, "dead": int(np.sum(n == 0)),
            "mono": int(np.sum(mono)), "duo": int(np.sum(n == 2)), "poly": int(np.sum(n > 2)),
            "dedicated_features": int(np.any(represents[mono], axis=0).sum()),
            "features_represented": int(np.any(represents, axis=0).sum())}


def reduced_residual(arch: Any, target: dict, comps: dict, max_fraction: float = 0.5):
    """An exactly equivalent, narrower copy of a 1-layer residual MLP and its APD model, or None.

    The residual stream of a 1-layer network is written by x W_E (rows of W_E) and by the MLP,
    and read only by W_in (on x W_E) and W_U. Projecting it onto Q = an orthonormal basis of
    span(W_E rows, W_U columns) (k <= 2F, k = F when W_U = W_E^T) changes no output, attribution
    or top-k choice, and makes every D-wide product k-wide: W_E Q, Q^T W_U, Q^T W_in, W_out Q and
    the component factors Q^T A_in, B_out Q (notes §10.3: 10x cheaper at D 1000, F 100). Returns
    (arch, target, comps) or None when it would not save much (k > max_fraction D, or 2+ layers,
    whose later layers read arbitrary directions)."""
    if arch.layers != 1:
        return None
    W_E = np.asarray(target["W_E"], dtype=np.float64)
    W_U = np.asarray(target["W_U"], dtype=np.float64)
    I, D = W_E.shape[0], W_E.shape[2]
    bases, ranks = [], []
    for i in range(I):
        U, sv, _ = np.linalg.svd(np.concatenate([W_E[i].T, W_U[i]], axis=1), full_matrices=False)
        ranks.append(int(np.sum(sv > sv[0] * 1e-10)) if sv.size and sv[0] > 0 else 0)
        bases.append(U)
    k = max(max(ranks), 1)
    if k > max_fraction * D:
        return None
    Q = np.stack([U[:, :k] for U in bases])  # (I, D, k); extra columns (rank < k) are harmless
    QT = np.swapaxes(Q, 1, 2)
    dt = np.asarray(target["W_E"]).dtype
    t = dict(target)
    t["W_E"], t["W_U"] = (W_E @ Q).astype(dt), (QT @ W_U).astype(dt)
    t["layers.0.W_in"] = (QT @ target["layers.0.W_in"]).astype(dt)
    t["layers.0.W_out"] = (target["layers.0.W_out"] @ Q).astype(dt)
    if "layers.0.b_out" in t:
        t["layers.0.b_out"] = np.einsum("id,idk->ik", target["layers.0.b_out"], Q).astype(dt)
    c = dict(comps)
    cdt = np.asarray(comps["layers.0.W_in.A"]).dtype
    c["layers.0.W_in.A"] = (QT @ comps["layers.0.W_in.A"]).astype(cdt)
    c["layers.0.W_out.B"] = (comps["layers.0.W_out.B"] @ Q).astype(cdt)
    return dataclasses.replace(arch, d_embed=k), t, c



def residual_panel(name: str, P: np.ndarray) -> tuple[str, np.ndarray]:
    """The components plot's view of a residual network's matrix: neurons along the columns."""
    if "W_out" in name:
        return f"{name}^T: rows = residual stream ({P.shape[2]}), columns = neurons ({P.shape[1]})", np.swapaxes(P, -1, -2)
    return f"{name}: rows = residual stream ({P.shape[1]}), columns = neurons ({P.shape[2]})", P


WIDE = 20_000  # weights of the decomposed matrices above which components are shown as virtual weights
FEATURE_RESPONSE_COPIES = 200  # Fig. 7 copies (the reference uses 1000; the mean/std settle well before)
RESPONSE_POINTS = 41  # points of the one-hot input sweeps (Figs. 14-15)

# Which requested outputs need the residual-MLP part of the sampled pass.
RESID_SAMPLED = frozenset({
    "scrubbed_loss", "anti_scrubbed_loss", "random_loss", "scrub_ratio", "canonical_scrubbed_loss",
    "canonical_anti_scrubbed_loss", "canonical_scrub_ratio", "per_feature_loss_top1", "per_feature_loss_topk",
    "active_per_feature", "scrub_histogram", "per_feature_loss", "active_components"})


class ResidAnalysis(KindAnalysis):
    """Residual-MLP measures of a run (`an`: the method's analysis)."""

    sampled_outputs = RESID_SAMPLED

    def reduced_model(self, target: dict, comps: dict):
        """An exactly equivalent, narrower copy of the target and an attribution method's components
        (`reduced_residual`), or None."""
        return reduced_residual(self.an.arch, target, comps)

    # -- the sampled pass: per-feature losses and the scrubbing test ---------------------------

    def sampled_setup(self):
        D, d_mlp, n_layers = residual_dims(self.an.arch)
        return self.canonical(), d_mlp * n_layers

    def sampled_batch(self, setup, x, lab, y_t, scrubbed, put, rng_mask, rng_canon) -> None:
        """"feature" (single active feature or -1) and the MSEs "target_vs_labels", "scrubbed",
        "anti_scrubbed", "random", "monosemantic" (the last four vs the target output); a 1-layer
        model also "canonical_scrubbed" and "canonical_anti_scrubbed" (the same test on the
        target's canonical decomposition, `canonical`)."""
        canon, n_mono = setup
        put("feature", single_feature(x))
        put("target_vs_labels", mse_per_sample(y_t, lab))
        for name, y in zip(("scrubbed", "anti_scrubbed", "random"), scrubbed(rng_mask)):
            put(name, mse_per_sample(y, y_t))
        put("monosemantic", mse_per_sample(monosemantic_resid(x, lab, n_mono), y_t))
        if canon is not None:
            self._canonical_scrub(put, canon, x, y_t, rng_canon)

    @staticmethod
    def _canonical_scrub(put: Callable, canon: tuple, x: np.ndarray, y_t: np.ndarray, rng) -> None:
        """The scrubbing test on the target's canonical decomposition (`canonical`): the same for
        every method, so its numbers are the yardstick of scrub_ratio."""
        for name, mask in zip(("canonical_scrubbed", "canonical_anti_scrubbed"), canonical_scrub_masks(x != 0, rng)):
            y_c = apd.apd_forward(canon[0], canon[1], canon[2], x, mask=mask.astype(np.float64), m=1).y
            put(name, mse_per_sample(np.asarray(y_c), y_t))

    @_cached
    def canonical(self) -> tuple | None:
        """(arch, target, components) of the target's canonical one-feature-per-component
        decomposition (`canonical_factors`, C = F, rank 1, float64) on the analysis
        model; None unless the target is a 1-layer residual MLP (with 2+ layers the projected
        weights no longer reproduce the target: later layers read MLP outputs off the embedding span)."""
        arch, target, _ = self.an.model
        if arch.layers != 1:
            return None
        f64 = lambda k: np.asarray(target[k], dtype=np.float64)  # noqa: E731
        A_in, B_in, A_out, B_out = canonical_factors(f64("W_E"), f64("W_U"), f64("layers.0.W_in"),
                                                        f64("layers.0.W_out"))
        comps = {**apd.from_components("layers.0.W_in", A_in, B_in), **apd.from_components("layers.0.W_out", A_out, B_out)}
        return arch, target, comps

    def panel(self, name: str, P: np.ndarray) -> tuple[str, np.ndarray]:
        return residual_panel(name, P)

    def wide_panels(self, replicate: int) -> list[tuple[str, np.ndarray]] | None:
        """Virtual weights (features x neurons) instead of d_embed-wide matrices: components
        spanning every matrix (attribution methods) read W_E W_in,c and write (W_out,c W_U)^T;
        per-matrix subcomponents (causal-importance methods) W_E V_c U_c and (V_c U_c W_U)^T."""
        an = self.an
        if an.importance == "causal":
            if an.arch.d_embed <= 200:
                return None
            out = []
            for name in an.matrix_names():
                P = an.matrix_weights(name)[replicate]
                if name.endswith("W_in"):
                    out.append((f"W_E {name},c: features (rows) x neurons", np.matmul(np.asarray(an.target["W_E"][replicate]), P)))
                else:
                    out.append((f"({name},c W_U)^T: features (rows) x neurons",
                                np.swapaxes(np.matmul(P, np.asarray(an.target["W_U"][replicate])), -1, -2)))
            return out
        if sum(l.d_in * l.d_out for l in layers_of(an.arch) if not l.transposed) <= WIDE:
            return None
        c = self.contributions()
        return [("W_E W_in,c: how strongly each neuron (columns) reads each feature (rows)", c["read"][replicate]),
                ("(W_out,c W_U)^T: how strongly each neuron (columns) writes each feature (rows)",
                 np.swapaxes(c["write"][replicate], -1, -2))]

    def monosemantic(self, x: np.ndarray, lab: np.ndarray) -> np.ndarray:
        D, d_mlp, n_layers = residual_dims(self.an.arch)
        return monosemantic_resid(x, lab, d_mlp * n_layers)

    def extra_models(self, x: np.ndarray) -> dict:
        return {"input": x}

    # -- contributions and categories ------------------------------------------------------------

    @_cached
    def contributions(self) -> dict:
        """target (I, F, N) and components (I, C, F, N) neuron contributions (notes §7.3), the
        virtual weights read (I, C, F, N) / write (I, C, N, F), and dominant (I, F) = c*(f).
        Causal-importance methods (SPD paper §3.3): for every W_in subcomponent m,
        (W_U[f] sum_c W_out,c) * (W_in,m W_E[f]) (I, C_in, F, N)."""
        an = self.an
        _, d_mlp, n_layers = residual_dims(an.arch)
        tg, rd, wr = [], [], []
        for i in range(an.I):
            W_E, W_U = (np.asarray(an.target[k][i], dtype=np.float64) for k in ("W_E", "W_U"))
            layers = [(an.target[f"layers.{l}.W_in"][i], an.target[f"layers.{l}.W_out"][i]) for l in range(n_layers)]
            tg.append(contributions(W_E, W_U, layers))
            r, w = (self._causal_reads_writes if an.importance == "causal" else self._reads_writes)(i, W_E, W_U)
            rd.append(r)
            wr.append(w)
        comp = np.stack(rd) * np.swapaxes(np.stack(wr), -1, -2)
        return {"target": np.stack(tg), "components": comp, "read": np.stack(rd), "write": np.stack(wr),
                "dominant": np.stack([dominant_components(c) for c in comp])}

    def _reads_writes(self, i: int, W_E: np.ndarray, W_U: np.ndarray):
        """An attribution method's components (rank m, spanning every layer)."""
        an = self.an
        _, _, n_layers = residual_dims(an.arch)
        factors = []
        for l in range(n_layers):
            A_in, B_in = apd.to_components(an.comps, f"layers.{l}.W_in", an.C)
            A_out, B_out = apd.to_components(an.comps, f"layers.{l}.W_out", an.C)
            factors.append((A_in[i], B_in[i], A_out[i], B_out[i]))
        return component_reads_writes(W_E, W_U, factors)

    def _causal_reads_writes(self, i: int, W_E: np.ndarray, W_U: np.ndarray):
        """A causal-importance method's W_in subcomponents (one matrix each), written through the
        summed W_out of their layer."""
        an = self.an
        _, d_mlp, n_layers = residual_dims(an.arch)
        reads, writes = [], []
        N = d_mlp * n_layers
        for l in range(n_layers):
            V_in, U_in = (np.asarray(an.params[f"layers.{l}.W_in.{k}"][i], dtype=np.float64) for k in ("V", "U"))
            E = W_E @ V_in  # (F, C)
            r = np.zeros((an.C, W_E.shape[0], N))
            r[:, :, l * d_mlp:(l + 1) * d_mlp] = E.T[:, :, None] * U_in[:, None, :]
            reads.append(r)
            W_out = np.asarray(an.summed_weight(f"layers.{l}.W_out")[i], dtype=np.float64)
            writes.append(W_out @ W_U)  # (d_mlp, F)
        read = np.concatenate(reads, axis=0)  # (C_in, F, N)
        write = np.concatenate(writes, axis=0)  # (N, F)
        return read, np.broadcast_to(write, (read.shape[0],) + write.shape)

    def _w_in_names(self) -> list[str]:
        return [n for n in self.an.names if n.endswith("W_in")]

    @_cached
    def categories(self) -> list[dict]:
        """Per replicate: `categories` of the component contributions; for causal-importance
        methods, of the W_in subcomponents (all layers) by one-hot causal importance."""
        an = self.an
        if an.importance == "causal":
            g = an.onehot_ci()
            names = self._w_in_names()
            return [categories_from_ci(np.concatenate([g[n][i] for n in names], axis=1), an.ci_active)
                    for i in range(an.I)]
        return [categories(c) for c in self.contributions()["components"]]

    def feature_components(self, name: str | None = None) -> np.ndarray | None:
        """The scrubbing test's feature map (`feature_map`); for causal-importance methods, of the
        first layer's W_in subcomponents only."""
        if self.an.importance == "causal" and name != self._w_in_names()[0]:
            return None
        return self.feature_map()

    def feature_map(self) -> np.ndarray:
        """(I, F) the component of each feature: the method's (`an.feature_map`), or for
        causal-importance methods the first-layer W_in subcomponent with the highest one-hot causal
        importance."""
        an = self.an
        if an.importance == "causal":
            return np.argmax(an.onehot_ci()[self._w_in_names()[0]], axis=-1)
        return an.feature_map()

    # -- responses ---------------------------------------------------------------------------------

    @_cached
    def target_response(self) -> dict:
        """Figs. 14-15: target outputs on one-hot inputs (value 1) and on one-hot sweeps over the
        data value range, with the true labels."""
        labels, _ = self.an.labels_fn()
        an = self.an
        F = an.arch.features
        x1 = an.onehot_inputs()
        lo, hi = value_range(an.arch, an.exp.data)
        vals = np.linspace(lo, hi, RESPONSE_POINTS)
        xs = np.zeros((F, RESPONSE_POINTS, F))
        xs[np.arange(F), :, np.arange(F)] = vals
        xs = np.ascontiguousarray(np.broadcast_to(xs.reshape(F * RESPONSE_POINTS, F), (an.I, F * RESPONSE_POINTS, F)),
                                  dtype=an.dtype)
        ys = np.asarray(an.forward(xs).y).reshape(an.I, F, RESPONSE_POINTS, F)
        ls = np.asarray(labels(xs)).reshape(an.I, F, RESPONSE_POINTS, F)
        f = np.arange(F)
        return {"onehot_out": np.asarray(an.forward(x1).y), "onehot_labels": labels(x1),
                "sweep_x": vals, "sweep_out": ys[:, f, :, f].transpose(1, 0, 2), "sweep_labels": ls[:, f, :, f].transpose(1, 0, 2)}

    @_cached
    def feature_response(self) -> dict:
        """Fig. 7: MLP output (output minus the all-ablated output x W_E W_U) on copies of the one-hot
        input x_f = 1 with Bernoulli(1/2) masks over all C components, the mapped component forced
        on (scrubbed) or off (anti-scrubbed); plus the target's and the method's own selection's
        (APD: top-1; causal importances: the CI-masked model)."""
        if self.an.importance == "causal":
            return self._causal_feature_response()
        an = self.an
        f, F, n = an.response_feature(), an.arch.features, FEATURE_RESPONSE_COPIES
        x = np.zeros((an.I, n, F), dtype=an.dtype)
        x[:, :, f] = 1.0
        base = an.masked(x[:, :1], np.zeros((an.I, 1, an.C)))  # x W_E W_U (+ frozen biases)
        s, anti, _ = scrub_masks(x != 0, an.feature_map(), an.C, an.rng("feature_response"))
        tgt = an.forward(x[:, :1])
        top1 = sample_topk_mask(an.attr(x[:, :1], tgt), 1)
        return {"feature": f, "component": an.feature_map()[:, f],
                "target": np.asarray(tgt.y)[:, 0] - base[:, 0], "top1": an.masked(x[:, :1], top1)[:, 0] - base[:, 0],
                "scrubbed": an.masked(x, s) - base, "anti_scrubbed": an.masked(x, anti) - base}

    def _causal_feature_response(self) -> dict:
        """Fig. 7 with subcomponents: MLP output (output minus x W_E W_U) on copies of x_f = 1 with
        every subcomponent kept with probability 1/2 and the feature's own forced on / off; plus the
        target's and the CI-masked model's."""
        feature_map = self.feature_map()
        an = self.an
        f, F, n = an.response_feature(), an.arch.features, 200
        x = np.zeros((an.I, n, F), dtype=an.dtype)
        x[:, :, f] = 1.0
        x1 = x[:, :1]
        tgt1, h1, g1 = an.causal_importances(x1)
        base = an.masked(x1, {k: np.zeros_like(v) for k, v in g1.items()}, tgt1, h1)
        tgt, h, _ = an.causal_importances(x)
        rng = an.rng("feature_response")
        rep = an.represents()
        scrub, anti = {}, {}
        for name in an.names:
            random = rng.random(h[name].shape) < 0.5
            forced = np.broadcast_to(rep[name][:, f][:, None, :], random.shape)
            scrub[name], anti[name] = random | forced, random & ~forced
        return {"feature": f, "component": feature_map[:, f],
                "target": np.asarray(tgt1.y)[:, 0] - base[:, 0],
                "top1": an.masked(x1, g1, tgt1, h1)[:, 0] - base[:, 0],
                "scrubbed": an.masked(x, scrub, tgt, h) - base, "anti_scrubbed": an.masked(x, anti, tgt, h) - base}

    @_cached
    def per_feature(self) -> dict:
        """Per-feature means (I, F) over single-feature samples of the sampled pass (§7.5-7.6):
        target / top1 / topk MSE vs labels, top-1 MSE vs target, active components, counts."""
        s, F = self.an.sampled(scrub=True), self.an.arch.features
        out = {}
        for key in ("target_vs_labels", "top1_vs_labels", "topk_vs_labels", "top1_vs_target", "n_components"):
            if key in s:
                out[key], out["counts"] = per_feature_mean(s["feature"], np.asarray(s[key], dtype=np.float64), F)
        return out



KIND_ANALYSES["resid_mlp"] = ResidAnalysis


def _sampled_mean(key: str) -> Callable[[Any], Any]:
    """Mean over samples with an active input (zero inputs give zero loss in every variant)."""
    def f(an):
        s = an.sampled(scrub=True)
        return masked_mean(s[key], s["active_input"]) if key in s else None
    return f


def _scrub_ratio(prefix: str = "") -> Callable[[Any], Any]:
    def f(an):
        s, a = _sampled_mean(prefix + "scrubbed")(an), _sampled_mean(prefix + "anti_scrubbed")(an)
        if s is None or a is None:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s > 0, a / np.where(s > 0, s, 1.0), np.where(a > 0, np.inf, np.nan))
    return f


def _per_feature(key: str) -> Callable[[Any], Any]:
    def f(an):
        pf = an.part.per_feature()
        return nanmean_features(pf[key]) if key in pf else None
    return f


def _category(key: str) -> Callable[[Any], Any]:
    return lambda an: [c[key] for c in an.part.categories()]


COMPUTED.update({
    "dedicated_features": _category("dedicated_features"),
    "mono_components": _category("mono"),
    "duo_components": _category("duo"),
    "poly_components": _category("poly"),
    "scrubbed_loss": _sampled_mean("scrubbed"),
    "anti_scrubbed_loss": _sampled_mean("anti_scrubbed"),
    "random_loss": _sampled_mean("random"),
    "scrub_ratio": _scrub_ratio(),
    "canonical_scrubbed_loss": _sampled_mean("canonical_scrubbed"),
    "canonical_anti_scrubbed_loss": _sampled_mean("canonical_anti_scrubbed"),
    "canonical_scrub_ratio": _scrub_ratio("canonical_"),
    "per_feature_loss_top1": _per_feature("top1_vs_labels"),
    "per_feature_loss_topk": _per_feature("topk_vs_labels"),
    "active_per_feature": _per_feature("n_components"),
})

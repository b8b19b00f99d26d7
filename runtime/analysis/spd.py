"""Analyses of an SPD run: the same metrics and plots as APD where they carry over, computed with
causal importances in place of top-k, plus SPD's own (docs/method.md, "SPD: metrics").

Definitions (all on the trained decomposition; g = sigma_H,lower(gamma(h)), the causal importance
that sets the masks):

* one-hot causal importances: g of every subcomponent on x = ONEHOT_VALUE e_f (0.75, the input of
  the SPD paper's Figs. 8, 12, 13), per matrix (I, F, C).
* a subcomponent is *causally important* on an input when g > CI_ACTIVE (0.1).
* MMCS / ML2R (TMS): the SPD paper's definitions on the first matrix W: for feature f, the
  subcomponent c whose column-f slice V[f, c] U_c is most aligned with W[f] (cosine), and the ratio
  of their norms (analysis/tms.feature_match on the dense rank-one subcomponents).
* ci_error (TMS): for each feature-indexed matrix (W and W^T, not hidden layers), the ground-truth
  causal importance on x_f's one-hot input is 1 for the subcomponent that best matches feature f
  (as in MMCS: for W^T, column f of W^T against V_c U_c[f]) and 0 for every other; ci_error is the
  mean over matrices and features of sum_c |clip(g[f, c], 0, 1) - truth[f, c]|: 0 is perfect, 1 is
  e.g. the right subcomponent at 0 or one extra subcomponent at 1.
* dedicated features (residual MLP): W_in subcomponent c represents feature f when its one-hot
  causal importance g[f, c] > CI_ACTIVE; a feature is dedicated when a W_in subcomponent (of any
  layer) represents it and no other feature (the diagonal of the SPD paper's Fig. 8). mono / duo /
  poly count W_in subcomponents representing 1 / 2 / more features.
* scrubbing: as APD's with subcomponents: in every matrix each subcomponent is kept with
  probability 1/2, then the subcomponents that represent an active feature (one-hot g > CI_ACTIVE,
  per matrix; for W_out nearly all of them) are forced on (scrubbed) or off (anti-scrubbed).
* the CI-masked model: every matrix masked with m = g (the noise r = 0: each subcomponent ablated as
  far as its causal importance allows). It stands in for APD's top-k model in ci_masked_mse,
  mse_by_sparsity, the gated functions and the feature response.
* gated functions: subcomponent c serves function i when g > CI_ACTIVE on at least half of i's grid;
  function i is separated when some subcomponent serves i alone and none serves i together with
  another function.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import gated as ag
from . import resid as ar
from . import tms as at
from .core import ANALYSES, RunAnalysis, _cached, mse_per_sample
from ..engine import ci as ci_mod
from ..engine.data import value_range
from ..engine.models import residual_dims, target_forward
from ..engine.spd import CI_NAMES, inner_acts, masked_forward, spd_layers, subcomponent_weights, summed_weight
from ..engine.spd_train import CI_ACTIVE

ONEHOT_VALUE = 0.75


def permutation_order(g: np.ndarray) -> np.ndarray:
    """(C,) column order of a one-hot causal-importance table g (F, C), as the SPD paper orders its
    figures: for each feature in turn the subcomponent (not chosen yet) with the highest causal
    importance; then the rest by decreasing largest causal importance."""
    F, C = g.shape
    chosen: list[int] = []
    free = np.ones(C, dtype=bool)
    for f in range(min(F, C)):
        c = int(np.argmax(np.where(free, g[f], -np.inf)))
        chosen.append(c)
        free[c] = False
    rest = np.flatnonzero(free)
    rest = rest[np.argsort(-g[:, rest].max(axis=0), kind="stable")] if rest.size else rest
    return np.concatenate([np.asarray(chosen, dtype=int), rest]).astype(int)


def ci_error(g: np.ndarray, best: np.ndarray) -> float:
    """Mean over features f of sum_c |clip(g[f, c], 0, 1) - truth[f, c]|, truth[f, best[f]] = 1."""
    truth = np.zeros_like(g, dtype=np.float64)
    truth[np.arange(g.shape[0]), best] = 1.0
    return float(np.mean(np.sum(np.abs(np.clip(g, 0.0, 1.0) - truth), axis=1)))


def column_match(V: np.ndarray, U: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(F,) for a matrix W (d_in, F) that writes feature f in column f (TMS's W^T): the subcomponent
    c whose column-f slice V_c U_c[f] is most aligned with W[:, f]."""
    P = np.einsum("dc,cf->cfd", V, U)  # (C, F, d_in): subcomponent c's column f
    return at.feature_match(P, W.T)[0]


def categories_from_ci(g_onehot: np.ndarray, cutoff: float = CI_ACTIVE) -> dict:
    """`analysis.resid.categories` from one-hot causal importances (F, C) of the W_in subcomponents."""
    represents = g_onehot.T > cutoff  # (C, F)
    n = represents.sum(axis=1)
    mono = n == 1
    return {"represents": represents, "features_per_component": n, "dead": int(np.sum(n == 0)),
            "mono": int(np.sum(mono)), "duo": int(np.sum(n == 2)), "poly": int(np.sum(n > 2)),
            "dedicated_features": int(np.any(represents[mono], axis=0).sum()),
            "features_represented": int(np.any(represents, axis=0).sum())}


def gated_separation(serves: np.ndarray) -> tuple[int, np.ndarray]:
    """(count, separated (functions,)) from serves (functions, subcomponents) bool."""
    n_serving = serves.sum(axis=0)
    sep = np.array([bool(np.any(serves[i] & (n_serving == 1))) and not np.any(serves[i] & (n_serving > 1))
                    for i in range(serves.shape[0])])
    return int(sep.sum()), sep


class SpdAnalysis(RunAnalysis):
    """RunAnalysis of an SPD run: the target-only analyses are inherited, the decomposition-dependent
    ones (the names metrics.py and the plots call) work on subcomponents and causal importances."""

    method = "spd"

    def _bind(self, dec: Any) -> None:
        """Subcomponents (V, U per matrix, rank one each) and causal-importance MLPs; no top-k."""
        self.params = self.comps = dec.comps
        self.C, self.m = dec.C, 1
        self.model = (self.arch, self.target, None)
        self.topk = None
        self.ci_cfg = self.exp.decompose.causal_importance
        self.layers = spd_layers(self.arch)
        self.names = [layer.name for layer in self.layers]

    # -- building blocks ---------------------------------------------------------------------

    def causal_importances(self, x: np.ndarray, tgt=None) -> tuple[Any, dict, dict]:
        """(target trace, inner activations h, causal importances g) on x; h, g: name -> (I, B, C)."""
        tgt = tgt if tgt is not None else target_forward(self.arch, self.target, x)
        h, g = {}, {}
        for layer in self.layers:
            h[layer.name] = np.asarray(inner_acts(self.arch, self.target, self.params, layer, tgt.pre[layer.name], x))
            raw = ci_mod.gamma_values(h[layer.name], *(np.asarray(self.params[f"{layer.name}.ci.{k}"]) for k in CI_NAMES),
                                      activation=self.ci_cfg.activation)
            g[layer.name] = np.asarray(ci_mod.sigma_lower(raw, self.ci_cfg.lower_leak))
        return tgt, h, g

    def masked(self, x: np.ndarray, masks: dict | None, tgt=None, h=None) -> np.ndarray:
        """SPD model output with every matrix masked (name -> (I, B, C); None: all subcomponents on)."""
        if tgt is None or h is None:
            tgt, h, _ = self.causal_importances(x, tgt)
        if masks is None:
            masks = {n: np.ones(h[n].shape, dtype=self.dtype) for n in self.names}
        return np.asarray(masked_forward(self.arch, self.target, self.params, x, tgt, h,
                                         {n: np.asarray(m, dtype=self.dtype) for n, m in masks.items()}))

    def ci_masked(self, x: np.ndarray) -> np.ndarray:
        """The CI-masked model's output: every mask at its causal importance (m = g)."""
        tgt, h, g = self.causal_importances(x)
        return self.masked(x, g, tgt, h)

    @_cached
    def onehot_ci(self) -> dict:
        """name -> (I, F, C) causal importances on the one-hot inputs x_f = ONEHOT_VALUE."""
        return self.causal_importances(self.onehot_inputs(ONEHOT_VALUE))[2]

    @_cached
    def represents(self) -> dict:
        """name -> (I, F, C) bool: subcomponent c is causally important on feature f's one-hot input."""
        return {n: g > CI_ACTIVE for n, g in self.onehot_ci().items()}

    # -- TMS -----------------------------------------------------------------------------

    @_cached
    def tms_match(self) -> dict:
        """MMCS / ML2R on the first matrix W (SPD paper Table 1)."""
        P = subcomponent_weights(self.params, "W")
        rows = [at.feature_match(P[i], self.target["W"][i]) for i in range(self.I)]
        return {"best": np.stack([r[0] for r in rows]), "cos": np.stack([r[1] for r in rows]),
                "ratio": np.stack([r[2] for r in rows])}

    @_cached
    def ci_error(self) -> np.ndarray:
        """(I,) ci_error over the feature-indexed matrices W and W^T (module docstring)."""
        g = self.onehot_ci()
        best_w = self.tms_match()["best"]
        out = np.zeros(self.I)
        for i in range(self.I):
            W = np.asarray(self.target["W"][i], dtype=np.float64)
            V, U = (np.asarray(self.params[f"W.T.{k}"][i], dtype=np.float64) for k in ("V", "U"))
            best_wt = column_match(V, U, W.T)
            out[i] = 0.5 * (ci_error(g["W"][i], best_w[i]) + ci_error(g["W.T"][i], best_wt))
        return out

    # -- the sampled pass -----------------------------------------------------------------

    def _sampled_batch(self, x: np.ndarray, lab: np.ndarray | None, put: Callable,
                       acc: dict) -> tuple[np.ndarray, Callable]:
        """SPD's entries of one batch (RunAnalysis._sampled runs the loop): the CI-masked output's
        loss, the count of important subcomponents, the largest g seen into `acc`. The scrubbing
        test keeps each subcomponent with probability 1/2, forcing those that represent an active
        feature on (scrubbed) or off (anti-scrubbed)."""
        tgt, h, g = self.causal_importances(x)
        y_t = np.asarray(tgt.y, dtype=np.float64)
        put("ci_masked_vs_target", mse_per_sample(self.masked(x, g, tgt, h), y_t))
        put("n_components", sum(np.count_nonzero(v > CI_ACTIVE, axis=-1) for v in g.values()))
        alive = acc.setdefault("alive", {n: np.zeros((self.I, self.C)) for n in self.names})
        for n in self.names:
            alive[n] = np.maximum(alive[n], g[n].max(axis=1))

        def scrubbed(rng: np.random.Generator) -> list[np.ndarray]:
            rep, active = self.represents(), (x != 0).astype(np.float64)
            masks: tuple[dict, dict, dict] = ({}, {}, {})
            for n in self.names:
                random = rng.random(g[n].shape) < 0.5
                forced = np.matmul(active, rep[n].astype(np.float64)) > 0
                masks[0][n], masks[1][n], masks[2][n] = random | forced, random & ~forced, random
            return [self.masked(x, m, tgt, h) for m in masks]
        return y_t, scrubbed

    def _sampled_totals(self, acc: dict) -> dict:
        """(I, L C) the largest g each subcomponent reached on the sample ("alive")."""
        return {"alive": np.concatenate([acc["alive"][n] for n in self.names], axis=1)}

    # -- residual MLP ---------------------------------------------------------------------

    def _w_in_names(self) -> list[str]:
        return [n for n in self.names if n.endswith("W_in")]

    @_cached
    def categories(self) -> list[dict]:
        """Per replicate: categories of the W_in subcomponents (all layers) by one-hot causal importance."""
        g = self.onehot_ci()
        names = self._w_in_names()
        return [categories_from_ci(np.concatenate([g[n][i] for n in names], axis=1)) for i in range(self.I)]

    @_cached
    def contributions(self) -> dict:
        """Neuron contributions (SPD paper §3.3): target (I, F, N); for every W_in subcomponent m,
        (W_U[f] sum_c W_out,c) * (W_in,m W_E[f]) (I, C_in, F, N), its read / write, and the dominant
        subcomponent of each feature."""
        _, d_mlp, n_layers = residual_dims(self.arch)
        tg, rd, wr = [], [], []
        for i in range(self.I):
            W_E, W_U = (np.asarray(self.target[k][i], dtype=np.float64) for k in ("W_E", "W_U"))
            layers = [(self.target[f"layers.{l}.W_in"][i], self.target[f"layers.{l}.W_out"][i]) for l in range(n_layers)]
            tg.append(ar.contributions(W_E, W_U, layers))
            reads, writes = [], []
            N = d_mlp * n_layers
            for l in range(n_layers):
                V_in, U_in = (np.asarray(self.params[f"layers.{l}.W_in.{k}"][i], dtype=np.float64) for k in ("V", "U"))
                E = W_E @ V_in  # (F, C)
                r = np.zeros((self.C, W_E.shape[0], N))
                r[:, :, l * d_mlp:(l + 1) * d_mlp] = E.T[:, :, None] * U_in[:, None, :]
                reads.append(r)
                W_out = np.asarray(summed_weight(self.params, f"layers.{l}.W_out")[i], dtype=np.float64)
                writes.append(W_out @ W_U)  # (d_mlp, F)
            read = np.concatenate(reads, axis=0)  # (C_in, F, N)
            write = np.concatenate(writes, axis=0)  # (N, F)
            rd.append(read)
            wr.append(np.broadcast_to(write, (read.shape[0],) + write.shape))
        comp = np.stack(rd) * np.swapaxes(np.stack(wr), -1, -2)
        return {"target": np.stack(tg), "components": comp, "read": np.stack(rd), "write": np.stack(wr),
                "dominant": np.stack([ar.dominant_components(c) for c in comp])}

    def feature_map(self) -> np.ndarray:
        """(I, F) the first-layer W_in subcomponent with the highest one-hot causal importance."""
        return np.argmax(self.onehot_ci()[self._w_in_names()[0]], axis=-1)

    @_cached
    def feature_response(self) -> dict:
        """Fig. 7 with subcomponents: MLP output (output minus x W_E W_U) on copies of x_f = 1 with
        every subcomponent kept with probability 1/2 and the feature's own forced on / off; plus the
        target's and the CI-masked model's."""
        f, F, n = self.response_feature(), self.arch.features, 200
        x = np.zeros((self.I, n, F), dtype=self.dtype)
        x[:, :, f] = 1.0
        x1 = x[:, :1]
        tgt1, h1, g1 = self.causal_importances(x1)
        base = self.masked(x1, {k: np.zeros_like(v) for k, v in g1.items()}, tgt1, h1)
        tgt, h, _ = self.causal_importances(x)
        rng = self.rng("feature_response")
        rep = self.represents()
        scrub, anti = {}, {}
        for name in self.names:
            random = rng.random(h[name].shape) < 0.5
            forced = np.broadcast_to(rep[name][:, f][:, None, :], random.shape)
            scrub[name], anti[name] = random | forced, random & ~forced
        return {"feature": f, "component": self.feature_map()[:, f],
                "target": np.asarray(tgt1.y)[:, 0] - base[:, 0],
                "top1": self.masked(x1, g1, tgt1, h1)[:, 0] - base[:, 0],
                "scrubbed": self.masked(x, scrub, tgt, h) - base, "anti_scrubbed": self.masked(x, anti, tgt, h) - base}

    # -- both sparse-feature targets -------------------------------------------------------

    def _decomposed_outputs(self, x: np.ndarray, n: int | None) -> tuple[Any, dict]:
        """mse_by_sparsity's decomposed model for SPD: every subcomponent masked by its causal importance."""
        tgt, h, g = self.causal_importances(x)
        return tgt, {"spd": self.masked(x, g, tgt, h)}

    # -- gated ----------------------------------------------------------------------------

    @_cached
    def gated(self) -> dict:
        """Fig. 12 / separation with causal importances: one-hot control bits over an x grid."""
        from .core import GATED_POINTS

        arch = self.arch
        n_f, P, I = arch.functions, GATED_POINTS, self.I
        lo, hi = value_range(arch, self.exp.data)
        grid, x = ag.function_grid(n_f, lo, hi, P, I, self.dtype)
        tgt, h, g = self.causal_importances(x)
        y_t = np.asarray(tgt.y, dtype=np.float64)[..., 0].reshape(I, n_f, P)
        y_ci = self.masked(x, g, tgt, h)[..., 0].reshape(I, n_f, P)
        y_full = self.masked(x, None, tgt, h)[..., 0].reshape(I, n_f, P)
        true = None
        if "coefficients" in self.extras:
            from ..engine.gated import true_functions

            tf = true_functions(self.extras, x).reshape(I, n_f, P, n_f)
            true = tf[:, np.arange(n_f), :, np.arange(n_f)].transpose(1, 0, 2)
        activity = np.concatenate([(g[n] > CI_ACTIVE).reshape(I, n_f, P, self.C).mean(axis=2) for n in self.names],
                                  axis=-1)  # (I, functions, L C)
        seps = [gated_separation(a >= ag.SEPARATION_THRESHOLD) for a in activity]
        return {"grid": grid, "target": y_t, "topk": y_ci, "full": y_full, "true": true, "activity": activity,
                "separated": np.array([s[0] for s in seps]), "separated_mask": np.stack([s[1] for s in seps]),
                "function_mse": np.mean((y_ci - y_t) ** 2, axis=(1, 2))}


ANALYSES["spd"] = SpdAnalysis

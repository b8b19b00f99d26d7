"""Run-level analyses: the data every metric and plot needs, computed once per RunResult.

`analysis_for(result)` returns a `RunAnalysis` cached on the result object, so `metrics.evaluate`
and `report.render` share the (sampled, possibly expensive) evaluation passes. Each analysis draws
from its own named stream `seeding.stream(exp.seed, "eval.<purpose>")`, so results do not depend
on which other analyses ran or in which order, and a report re-rendered from disk reproduces the
numbers of the original run. The array math lives in analysis_tms / analysis_resid /
analysis_gated; this module only feeds them batches and model outputs.

Cost: the sampled pass evaluates `report.eval_batches` batches of `decompose.batch` with one
attribution pass and up to five masked APD passes per batch (top-k, top-1, scrubbed,
anti-scrubbed, random), all through the rank-m bottleneck (no (B, C, D) tensor). A 1-layer
residual MLP is evaluated on an exact narrower copy (`reduced_residual`). Measured on one core at
paper scale with the defaults (20 batches of 256, float32): resid 1L (F 100, D 1000, C 130, m 50)
~3 s for every metric, ~10 s more for all plots; resid 2L (C 200, m 25) ~15-20 s for the metrics.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from . import gated as ag
from . import resid as ar
from . import tms as at
from ..engine import apd, seeding
from ..engine.attributions import attributions, sample_topk_mask, topk_mask
from ..engine.data import label_coefficients, labels_for, sample_inputs, value_range
from ..engine.models import residual_dims, target_forward
from ..spec import GatedTarget, ResidMlpTarget, TmsTarget, Training

FEATURE_RESPONSE_COPIES = 200  # Fig. 7 copies (the reference uses 1000; the mean/std settle well before)
RESPONSE_POINTS = 41  # points of the one-hot input sweeps (Figs. 14-15)
GATED_POINTS = 200  # x grid of the gated-function panels (Fig. 12)
SPARSITY_LEVELS = (1, 2, 3, 4)  # "exactly n active" rows of the MSE-by-sparsity table (notes §7.2)

# Which requested outputs need the residual-MLP parts of the sampled pass.
RESID_SAMPLED = {"scrubbed_loss", "anti_scrubbed_loss", "random_loss", "scrub_ratio", "canonical_scrubbed_loss",
                 "canonical_anti_scrubbed_loss", "canonical_scrub_ratio", "per_feature_loss_top1",
                 "per_feature_loss_topk", "active_per_feature", "scrub_histogram", "per_feature_loss",
                 "active_components"}


def _cached(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(self):
        if fn.__name__ not in self._cache:
            self._cache[fn.__name__] = fn(self)
        return self._cache[fn.__name__]
    return wrapper


def saved_training(exp: Any) -> Training | None:
    """The label settings saved with a file target (target.npz meta "train"), if any."""
    from ..spec import FileTarget

    if not isinstance(exp.target, FileTarget):
        return None
    try:
        from ..spec.target_file import read_target_meta

        d = read_target_meta(exp.target.path).get("train") or {}
    except (OSError, ValueError):
        return None
    if not d.get("labels"):
        return None
    return Training(labels=d["labels"], label_coeffs=d.get("label_coeffs", "ones"),
                    label_seed=int(d.get("label_seed", 0)), importance=float(d.get("importance", 1.0)))


def reduced_residual(arch: Any, target: dict, comps: dict, max_fraction: float = 0.5):
    """An exactly equivalent, narrower copy of a 1-layer residual MLP and its APD model, or None.

    The residual stream of a 1-layer network is written by x W_E (rows of W_E) and by the MLP,
    and read only by W_in (on x W_E) and W_U. Projecting it onto Q = an orthonormal basis of
    span(W_E rows, W_U columns) (k <= 2F, k = F when W_U = W_E^T) changes no output, attribution
    or top-k choice, and makes every D-wide product k-wide: W_E Q, Q^T W_U, Q^T W_in, W_out Q and
    the component factors Q^T A_in, B_out Q (notes §10.3: 10x cheaper at D 1000, F 100). Returns
    (arch, target, comps) or None when it would not save much (k > max_fraction D, or 2+ layers,
    whose later layers read arbitrary directions)."""
    if not isinstance(arch, ResidMlpTarget) or arch.layers != 1:
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


def mse_per_sample(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(I, B) mean over outputs of (y - ref)^2, in float64."""
    d = np.asarray(y, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    return np.mean(d * d, axis=-1)


def active_inputs(arch: Any, x: np.ndarray) -> np.ndarray:
    """(I, B) samples with an active feature (gated: an active control bit)."""
    cols = x[..., 1:] if isinstance(arch, GatedTarget) else x
    return np.any(cols != 0, axis=-1)


def masked_mean(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """(I,) mean of values (I, N) over the entries where `where` holds (NaN if none)."""
    n = where.sum(axis=1)
    s = np.where(where, values, 0.0).sum(axis=1)
    return np.divide(s, n, out=np.full(values.shape[0], np.nan), where=n > 0)


class RunAnalysis:
    """Lazily computed analyses of one run (all replicates)."""

    def __init__(self, result: Any):
        self.result = result
        exp = result.experiment
        self.exp, self.arch = exp, result.arch
        self.kind = result.arch.kind
        self.target, self.extras = result.target, result.extras
        self.I = exp.replicates
        self.dtype = np.dtype(exp.dtype)
        rp = exp.report
        self.wanted = set(rp.metrics or ()) | set(rp.plots or ()) | {e.metric for e in rp.expect}
        self.errors: dict[str, str] = {}  # analysis / metric / plot name -> error message
        self._cache: dict[str, Any] = {}
        self._bind(result.decomposition)

    def _bind(self, dec: Any) -> None:
        """The method's view of the decomposition: APD components (C, rank m) and top-k."""
        self.comps, self.C, self.m = dec.comps, dec.C, dec.m
        # Model used for every forward / attribution pass: an exact narrower copy when possible.
        # Weight analyses (contributions, MMCS, plots) use the original arrays.
        self.model = reduced_residual(self.arch, self.target, self.comps) or (self.arch, self.target, self.comps)
        self.topk = self.exp.decompose.topk

    # -- building blocks ---------------------------------------------------------------------

    def rng(self, purpose: str) -> np.random.Generator:
        return seeding.stream(self.exp.seed, f"eval.{purpose}")

    def attr(self, x: np.ndarray, tgt=None) -> np.ndarray:
        """The run's attributions (its kind and source) on x: (I, B, C)."""
        arch, target, comps = self.model
        tgt = tgt if tgt is not None else target_forward(arch, target, x)
        at_ = self.exp.decompose.attribution
        return np.asarray(attributions(at_.kind, at_.source, arch, target, tgt, comps, x, self.C, self.m))

    def forward(self, x: np.ndarray):
        """Target trace on x."""
        return target_forward(self.model[0], self.model[1], x)

    def masked(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """APD output (I, B, d_L) with all components (mask None) or the given (I, B, C) mask."""
        arch, target, comps = self.model
        m = None if mask is None else np.asarray(mask, dtype=self.dtype)
        return np.asarray(apd.apd_forward(arch, target, comps, x, mask=m, m=self.m).y)

    def config_mask(self, attr: np.ndarray, x: np.ndarray) -> np.ndarray | None:
        return None if self.topk is None else topk_mask(self.topk.mode, self.topk.value, attr, x)

    def sample(self, rng: np.random.Generator, data=None, batch: int | None = None) -> np.ndarray:
        return sample_inputs(self.arch, data or self.exp.data, self.I, batch or self.exp.decompose.batch, rng, self.dtype)

    def labels_fn(self) -> tuple[Callable[[np.ndarray], np.ndarray] | None, bool]:
        """(x -> true labels, assumed). Residual MLP labels come from the spec's training section,
        or for a target loaded from a file from the training record saved with it; without
        either, the default labels x + ReLU(x) are assumed (`assumed` True)."""
        arch = self.arch
        if isinstance(arch, TmsTarget):
            return (lambda x: np.array(x, copy=True)), False
        if isinstance(arch, ResidMlpTarget):
            train = self.exp.train or saved_training(self.exp)
            assumed = train is None
            if assumed:
                train = Training(labels="act_plus_resid")
            coeffs = label_coefficients(arch, train, self.I)
            return (lambda x: labels_for(arch, train, x, coeffs)), assumed
        if "coefficients" in self.extras:
            from ..engine.gated import gated_labels

            return (lambda x: gated_labels(self.extras, x)), False
        return None, True

    def onehot_inputs(self, value: float = 1.0) -> np.ndarray:
        """(I, F, F) identity batch: sample f has only feature f on (at `value`)."""
        F = self.arch.features
        return np.ascontiguousarray(np.broadcast_to(np.eye(F) * value, (self.I, F, F)), dtype=self.dtype)

    # -- shared analyses ---------------------------------------------------------------------

    @_cached
    def identity_attributions(self) -> np.ndarray:
        """(I, F, C) attributions on one-hot inputs (TMS / residual MLP)."""
        return self.attr(self.onehot_inputs())

    @_cached
    def feature_map(self) -> np.ndarray:
        """(I, F) component selected by per-sample top-1 on the one-hot input of each feature
        (notes §7.7)."""
        return np.argmax(self.identity_attributions(), axis=-1)

    @_cached
    def target_loss(self) -> np.ndarray | None:
        """(I,) target MSE against the true labels; None when the labels are unknown."""
        from ..engine.train_target import evaluate_target

        _, assumed = self.labels_fn()
        if assumed:
            return None
        kw = {}
        if isinstance(self.arch, GatedTarget):
            kw = {"extras": self.extras, "batch": self.exp.decompose.batch}
        elif isinstance(self.arch, ResidMlpTarget) and self.exp.train is None:
            kw = {"train": saved_training(self.exp), "batch": self.exp.decompose.batch}
        return evaluate_target(self.exp, self.arch, self.target, self.rng("target_loss"),
                               batches=self.exp.report.eval_batches, **kw)

    def sampled(self, scrub: bool = False) -> dict:
        """The sampled evaluation: `report.eval_batches` batches of the training distribution at
        the decomposition batch size (so batch top-k selects as in training).

        Returns per-sample arrays (I, N): "active_input", "zero" (mean square of the target
        output = MSE of a zero output), and with top-k "topk_vs_target", "n_components", plus
        "selected" (I, C): how often each component was selected with a positive attribution
        (top-k breaks ties among zeros arbitrarily; such picks do not count).

        Residual MLP, when `scrub` is set or a scrubbing / per-feature output is requested, adds
        "feature" (single active feature or -1) and the MSEs "target_vs_labels",
        "top1_vs_labels", "topk_vs_labels", "top1_vs_target", "scrubbed", "anti_scrubbed",
        "random", "monosemantic" (the last four vs the target output); a 1-layer model also
        "canonical_scrubbed" and "canonical_anti_scrubbed" (the same test on the target's
        canonical decomposition, `canonical`). Both variants draw the same batches, so the shared
        entries agree."""
        resid = isinstance(self.arch, ResidMlpTarget) and (scrub or bool(self.wanted & RESID_SAMPLED))
        key = "sampled_full" if resid else "sampled"
        if "sampled_full" in self._cache:
            return self._cache["sampled_full"]
        if key not in self._cache:
            self._cache[key] = self._sampled(resid)
        return self._cache[key]

    def _sampled(self, resid: bool) -> dict:
        """The loop every method shares: batches, the label losses and the scrubbing test of a
        residual MLP; the method's own entries come from `_sampled_batch` / `_sampled_totals`.
        Each random stream (data, scrub masks, canonical scrub) is drawn in the same order as
        ever, so the reports' numbers do not depend on the refactoring of this loop."""
        rng_data, rng_mask, rng_canon = self.rng("sampled"), self.rng("scrub"), self.rng("canonical_scrub")
        canon = self.canonical() if resid else None
        labels = self.labels_fn()[0] if resid else None
        n_mono = residual_dims(self.arch)[1] * residual_dims(self.arch)[2] if resid else 0
        parts: dict[str, list] = {}
        acc: dict = {}

        def put(name: str, v: np.ndarray) -> None:
            parts.setdefault(name, []).append(np.asarray(v))

        for _ in range(max(1, self.exp.report.eval_batches)):
            x = self.sample(rng_data)
            lab = labels(x) if resid else None
            y_t, scrubbed = self._sampled_batch(x, lab, put, acc)
            put("active_input", active_inputs(self.arch, x))
            put("zero", np.mean(y_t * y_t, axis=-1))  # loss of a zero output: the output's mean square
            if not resid:
                continue
            put("feature", ar.single_feature(x))
            put("target_vs_labels", mse_per_sample(y_t, lab))
            for name, y in zip(("scrubbed", "anti_scrubbed", "random"), scrubbed(rng_mask)):
                put(name, mse_per_sample(y, y_t))
            put("monosemantic", mse_per_sample(ar.monosemantic_resid(x, lab, n_mono), y_t))
            if canon is not None:
                self._canonical_scrub(put, canon, x, y_t, rng_canon)
        out = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
        out.update(self._sampled_totals(acc))
        return out

    def _sampled_batch(self, x: np.ndarray, lab: np.ndarray | None, put: Callable,
                       acc: dict) -> tuple[np.ndarray, Callable]:
        """APD's entries of one batch: the top-k output's losses (and, given labels, the top-1
        output's), component selection counts into `acc`. Returns the target output and a function
        rng -> the (scrubbed, anti-scrubbed, random) outputs of the scrubbing test."""
        tgt = self.forward(x)
        y_t = np.asarray(tgt.y, dtype=np.float64)
        a = self.attr(x, tgt)
        mask = self.config_mask(a, x)
        y_k = None
        if mask is not None:
            y_k = self.masked(x, mask)
            put("topk_vs_target", mse_per_sample(y_k, y_t))
            put("n_components", mask.sum(axis=-1))
            picked = (mask & (a > 0)).sum(axis=1)  # a pick among zero-attribution ties is no use
            acc["selected"] = acc.get("selected", 0) + picked
        if lab is not None:
            y_1 = self.masked(x, sample_topk_mask(a, 1))
            put("top1_vs_labels", mse_per_sample(y_1, lab))
            put("top1_vs_target", mse_per_sample(y_1, y_t))
            if y_k is not None:
                put("topk_vs_labels", mse_per_sample(y_k, lab))

        def scrubbed(rng: np.random.Generator) -> list[np.ndarray]:
            return [self.masked(x, m) for m in ar.scrub_masks(x != 0, self.feature_map(), self.C, rng)]
        return y_t, scrubbed

    def _sampled_totals(self, acc: dict) -> dict:
        """APD's whole-sample entries: "selected" (I, C) with top-k."""
        return {"selected": np.asarray(acc["selected"], dtype=np.float64)} if "selected" in acc else {}

    @staticmethod
    def _canonical_scrub(put: Callable, canon: tuple, x: np.ndarray, y_t: np.ndarray, rng) -> None:
        """The scrubbing test on the target's canonical decomposition (`canonical`): the same for
        every method, so its numbers are the yardstick of scrub_ratio."""
        for name, mask in zip(("canonical_scrubbed", "canonical_anti_scrubbed"), ar.canonical_scrub_masks(x != 0, rng)):
            y_c = apd.apd_forward(canon[0], canon[1], canon[2], x, mask=mask.astype(np.float64), m=1).y
            put(name, mse_per_sample(np.asarray(y_c), y_t))

    @_cached
    def canonical(self) -> tuple | None:
        """(arch, target, components) of the target's canonical one-feature-per-component
        decomposition (`analysis_resid.canonical_factors`, C = F, rank 1, float64) on the analysis
        model; None unless the target is a 1-layer residual MLP (with 2+ layers the projected
        weights no longer reproduce the target: later layers read MLP outputs off the embedding span)."""
        arch, target, _ = self.model
        if not isinstance(arch, ResidMlpTarget) or arch.layers != 1:
            return None
        f64 = lambda k: np.asarray(target[k], dtype=np.float64)  # noqa: E731
        A_in, B_in, A_out, B_out = ar.canonical_factors(f64("W_E"), f64("W_U"), f64("layers.0.W_in"),
                                                        f64("layers.0.W_out"))
        comps = {**apd.from_components("layers.0.W_in", A_in, B_in), **apd.from_components("layers.0.W_out", A_out, B_out)}
        return arch, target, comps

    # -- TMS -----------------------------------------------------------------------------

    @_cached
    def tms_match(self) -> dict:
        """Per replicate: best component, cosine and L2 ratio of every feature (notes §7.1)."""
        P = apd.component_weights(self.comps, "W", self.C)
        rows = [at.feature_match(P[i], self.target["W"][i]) for i in range(self.I)]
        return {"best": np.stack([r[0] for r in rows]), "cos": np.stack([r[1] for r in rows]),
                "ratio": np.stack([r[2] for r in rows])}

    @_cached
    def mse_by_sparsity(self) -> dict:
        """{level: {model: (I,) MSE vs labels}} for the training distribution (all-zero samples
        dropped; batch top-k as configured) and exactly-n-active data (per-sample top-n), n = 1..4
        (notes §7.2). Models: target, apd, monosemantic (and input = output x for resid)."""
        labels, _ = self.labels_fn()
        n_batches = max(1, self.exp.report.eval_batches // 10)
        rng = self.rng("mse_by_sparsity")
        F = self.arch.features
        if isinstance(self.arch, TmsTarget):
            mono = lambda x, lab: at.monosemantic_tms(x, self.arch.hidden)  # noqa: E731
        else:
            D, d_mlp, n_layers = residual_dims(self.arch)
            mono = lambda x, lab: ar.monosemantic_resid(x, lab, d_mlp * n_layers)  # noqa: E731
        levels: list[tuple[str, Any]] = [("training", None)]
        levels += [(f"exactly {n}", n) for n in SPARSITY_LEVELS if n <= F]
        out: dict[str, dict] = {}
        for name, n in levels:
            data = self.exp.data if n is None else dataclasses.replace(self.exp.data, mode="exactly_n_active",
                                                                      n_active=n, synced=())
            acc: dict[str, list] = {}
            for _ in range(n_batches):
                x = self.sample(rng, data)
                keep = active_inputs(self.arch, x)
                lab = labels(x)
                tgt, decomposed = self._decomposed_outputs(x, n)
                models = {"target": np.asarray(tgt.y), "monosemantic": mono(x, lab), **decomposed}
                if isinstance(self.arch, ResidMlpTarget):
                    models["input"] = x
                for k, y in models.items():
                    acc.setdefault(k, []).append((mse_per_sample(y, lab), keep))
            out[name] = {k: masked_mean(np.concatenate([v for v, _ in vs], 1), np.concatenate([w for _, w in vs], 1))
                         for k, vs in acc.items()}
        return out

    def _decomposed_outputs(self, x: np.ndarray, n: int | None) -> tuple[Any, dict]:
        """(target forward, {method name: output of the decomposed model}) for mse_by_sparsity: APD
        masks by batch top-k as configured (n None: training data) or per-sample top-n."""
        tgt = self.forward(x)
        a = self.attr(x, tgt)
        mask = self.config_mask(a, x) if n is None else sample_topk_mask(a, min(n, self.C))
        return tgt, ({} if mask is None else {"apd": self.masked(x, mask)})

    # -- residual MLP ---------------------------------------------------------------------

    def _layer_factors(self, i: int) -> list[tuple]:
        _, _, n_layers = residual_dims(self.arch)
        out = []
        for l in range(n_layers):
            A_in, B_in = apd.to_components(self.comps, f"layers.{l}.W_in", self.C)
            A_out, B_out = apd.to_components(self.comps, f"layers.{l}.W_out", self.C)
            out.append((A_in[i], B_in[i], A_out[i], B_out[i]))
        return out

    @_cached
    def contributions(self) -> dict:
        """target (I, F, N) and components (I, C, F, N) neuron contributions (notes §7.3), the
        virtual weights read (I, C, F, N) / write (I, C, N, F), and dominant (I, F) = c*(f)."""
        _, _, n_layers = residual_dims(self.arch)
        tg, rd, wr = [], [], []
        for i in range(self.I):
            W_E, W_U = (np.asarray(self.target[k][i], dtype=np.float64) for k in ("W_E", "W_U"))
            layers = [(self.target[f"layers.{l}.W_in"][i], self.target[f"layers.{l}.W_out"][i]) for l in range(n_layers)]
            tg.append(ar.contributions(W_E, W_U, layers))
            r, w = ar.component_reads_writes(W_E, W_U, self._layer_factors(i))
            rd.append(r)
            wr.append(w)
        comp = np.stack(rd) * np.swapaxes(np.stack(wr), -1, -2)
        return {"target": np.stack(tg), "components": comp, "read": np.stack(rd), "write": np.stack(wr),
                "dominant": np.stack([ar.dominant_components(c) for c in comp])}

    @_cached
    def categories(self) -> list[dict]:
        """Per replicate: `analysis_resid.categories` of the component contributions."""
        return [ar.categories(c) for c in self.contributions()["components"]]

    @_cached
    def target_response(self) -> dict:
        """Figs. 14-15: target outputs on one-hot inputs (value 1) and on one-hot sweeps over the
        data value range, with the true labels."""
        labels, _ = self.labels_fn()
        F = self.arch.features
        x1 = self.onehot_inputs()
        lo, hi = value_range(self.arch, self.exp.data)
        vals = np.linspace(lo, hi, RESPONSE_POINTS)
        xs = np.zeros((F, RESPONSE_POINTS, F))
        xs[np.arange(F), :, np.arange(F)] = vals
        xs = np.ascontiguousarray(np.broadcast_to(xs.reshape(F * RESPONSE_POINTS, F), (self.I, F * RESPONSE_POINTS, F)),
                                  dtype=self.dtype)
        ys = np.asarray(self.forward(xs).y).reshape(self.I, F, RESPONSE_POINTS, F)
        ls = np.asarray(labels(xs)).reshape(self.I, F, RESPONSE_POINTS, F)
        f = np.arange(F)
        return {"onehot_out": np.asarray(self.forward(x1).y), "onehot_labels": labels(x1),
                "sweep_x": vals, "sweep_out": ys[:, f, :, f].transpose(1, 0, 2), "sweep_labels": ls[:, f, :, f].transpose(1, 0, 2)}

    def response_feature(self) -> int:
        """The feature of Figs. 7 / 14 (42 in the paper)."""
        return min(42, self.arch.features - 1)

    @_cached
    def feature_response(self) -> dict:
        """Fig. 7: MLP output (output minus the all-ablated output x W_E W_U) on copies of the one-hot
        input x_f = 1 with Bernoulli(1/2) masks over all C components, the mapped component forced
        on (scrubbed) or off (anti-scrubbed); plus the target's and the APD top-1 MLP output."""
        f, F, n = self.response_feature(), self.arch.features, FEATURE_RESPONSE_COPIES
        x = np.zeros((self.I, n, F), dtype=self.dtype)
        x[:, :, f] = 1.0
        base = self.masked(x[:, :1], np.zeros((self.I, 1, self.C)))  # x W_E W_U (+ frozen biases)
        s, anti, _ = ar.scrub_masks(x != 0, self.feature_map(), self.C, self.rng("feature_response"))
        tgt = self.forward(x[:, :1])
        top1 = sample_topk_mask(self.attr(x[:, :1], tgt), 1)
        return {"feature": f, "component": self.feature_map()[:, f],
                "target": np.asarray(tgt.y)[:, 0] - base[:, 0], "top1": self.masked(x[:, :1], top1)[:, 0] - base[:, 0],
                "scrubbed": self.masked(x, s) - base, "anti_scrubbed": self.masked(x, anti) - base}

    @_cached
    def per_feature(self) -> dict:
        """Per-feature means (I, F) over single-feature samples of the sampled pass (§7.5-7.6):
        target / top1 / topk MSE vs labels, top-1 MSE vs target, active components, counts."""
        s, F = self.sampled(scrub=True), self.arch.features
        out = {}
        for key in ("target_vs_labels", "top1_vs_labels", "topk_vs_labels", "top1_vs_target", "n_components"):
            if key in s:
                out[key], out["counts"] = ar.per_feature_mean(s["feature"], np.asarray(s[key], dtype=np.float64), F)
        return out

    # -- gated ----------------------------------------------------------------------------

    @_cached
    def gated(self) -> dict:
        """Fig. 12 / separation: one-hot control bits over an x grid. Per function and point the
        target output, the APD top-k output (per-sample top-1 - one function is active, so one
        component should carry it - or the spec's k in per-sample mode), the full APD output and the
        true function; the selection frequency (I, functions, C) and attribution share."""
        arch = self.arch
        n_f, P, I, C = arch.functions, GATED_POINTS, self.I, self.C
        lo, hi = value_range(arch, self.exp.data)
        grid, x = ag.function_grid(n_f, lo, hi, P, I, self.dtype)
        tgt = self.forward(x)
        a = self.attr(x, tgt)
        k = int(self.topk.value) if self.topk is not None and self.topk.mode == "sample" else 1
        mask = sample_topk_mask(a, min(k, C))
        y_t = np.asarray(tgt.y, dtype=np.float64)[..., 0].reshape(I, n_f, P)
        y_k = self.masked(x, mask)[..., 0].reshape(I, n_f, P)
        y_full = self.masked(x, None)[..., 0].reshape(I, n_f, P)
        true = None
        if "coefficients" in self.extras:
            from ..engine.gated import true_functions

            tf = true_functions(self.extras, x).reshape(I, n_f, P, n_f)
            true = tf[:, np.arange(n_f), :, np.arange(n_f)].transpose(1, 0, 2)
        freq = np.stack([ag.activity(mask[i].reshape(n_f, P, C)) for i in range(I)])
        share = np.stack([ag.attribution_share(a[i].reshape(n_f, P, C)) for i in range(I)])
        sep = [ag.separated_functions(fr) for fr in freq]
        return {"grid": grid, "target": y_t, "topk": y_k, "full": y_full, "true": true, "k": k,
                "activity": freq, "share": share,
                "separated": np.array([s[0] for s in sep]), "assignment": np.stack([s[1] for s in sep]),
                "separated_mask": np.stack([s[2] for s in sep]),
                "function_mse": np.mean((y_k - y_t) ** 2, axis=(1, 2))}


# The analysis class of each decomposition method other than APD: analysis/spd.py registers
# SpdAnalysis here when the package is imported (the package __init__ imports it).
ANALYSES: dict[str, type] = {}


def analysis_for(result: Any) -> RunAnalysis:
    """The RunAnalysis of `result` (SpdAnalysis for an SPD run), created on first use and cached on
    the result object."""
    an = getattr(result, "analysis", None)
    if an is None or an.result is not result:
        an = ANALYSES.get(result.experiment.decompose.method, RunAnalysis)(result)
        result.analysis = an
    return an

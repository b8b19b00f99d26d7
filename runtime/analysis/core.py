"""Run-level analyses: the data every metric and plot needs, computed once per RunResult.

`analysis_for(result)` returns the method's `RunAnalysis` (ANALYSES[method]) cached on the result
object, so `metrics.evaluate` and `report.render` share the (sampled, possibly expensive)
evaluation passes. Each analysis draws from its own named stream `seeding.stream(exp.seed,
"eval.<purpose>")`, so results do not depend on which other analyses ran or in which order, and a
report re-rendered from disk reproduces the numbers of the original run.

Three parts meet here:
  * this module: what every run has (target forward passes, labels, the sampled evaluation loop,
    MSE by sparsity);
  * the method's subclass (runtime/methods/<method>/analysis.py): how its decomposition selects and
    masks components (`importance`: "attribution" for top-k over attributions, one mask for every
    matrix; "causal" for per-matrix causal importances);
  * the kind's part (runtime/targets/<kind>/analysis.py, KIND_ANALYSES, `an.part`): its ground-truth
    measures, written against the method's interface.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from ..engine import seeding
from ..engine.data import file_has_labels, label_coefficients, labels_for, sample_batch, sample_inputs
from ..engine.models import n_inputs, target_forward
from ..engine.registry import model_of
from ..spec import Training, kind_spec, method_spec, per_feature

SPARSITY_LEVELS = (1, 2, 3, 4)  # "exactly n active" rows of the MSE-by-sparsity table (notes §7.2)


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
                    label_seed=int(d.get("label_seed", 0)), importance=per_feature.from_json(d.get("importance", 1.0)))


def mse_per_sample(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(I, B) mean over outputs of (y - ref)^2, in float64."""
    d = np.asarray(y, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    return np.mean(d * d, axis=-1)


def active_inputs(arch: Any, x: np.ndarray) -> np.ndarray:
    """(I, B) samples with an active feature (the kind's model says what that means)."""
    return model_of(arch).active(arch, x)


def masked_mean(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """(I,) mean of values (I, N) over the entries where `where` holds (NaN if none)."""
    n = where.sum(axis=1)
    s = np.where(where, values, 0.0).sum(axis=1)
    return np.divide(s, n, out=np.full(values.shape[0], np.nan), where=n > 0)


class KindAnalysis:
    """A kind's measures of a run (subclassed in runtime/targets/<kind>/analysis.py, registered in
    KIND_ANALYSES); `an` is the run's method analysis, whose interface it uses. The defaults suit a
    kind with no ground-truth analyses of its own."""

    # requested metrics / plots that need this kind's part of the sampled pass (`sampled_batch`)
    sampled_outputs: frozenset = frozenset()

    def __init__(self, an: "RunAnalysis"):
        self.an = an
        self._cache: dict[str, Any] = {}

    def reduced_model(self, target: dict, comps: dict) -> tuple | None:
        """(arch, target, comps): an exactly equivalent, cheaper copy of the target and an
        attribution method's components for every forward pass of the analyses, or None."""
        return None

    def sampled_setup(self) -> Any:
        """What `sampled_batch` needs that is computed once, before the batches are drawn."""
        return None

    def sampled_batch(self, setup: Any, x: np.ndarray, lab: np.ndarray, y_t: np.ndarray, scrubbed: Callable,
                      put: Callable, rng_mask: np.random.Generator, rng_canon: np.random.Generator) -> None:
        """This kind's per-sample entries of one batch of the sampled pass (`put(name, (I, B))`)."""

    def panel(self, name: str, P: np.ndarray) -> tuple[str, np.ndarray]:
        """(label, stack) of one decomposed matrix's component weights P (C, d_in, d_out) for the
        components plot, as this kind reads its rows and columns."""
        return f"{name}: rows = inputs ({P.shape[1]}), columns = outputs ({P.shape[2]})", P

    def probes(self, value: float) -> tuple | None:
        """Inputs to show per-input importance tables on, when one-hot inputs (at `value`) are not
        the kind's: (x (I, N, n_in), reduce (N, C) -> (rows, C), row label, what the table shows)."""
        return None

    def feature_components(self, name: str | None = None) -> np.ndarray | None:
        """(I, F) the component that this kind's metrics match to each feature: of decomposed
        matrix `name` for per-matrix subcomponents (causal-importance methods), of the whole model
        for components that span every matrix (`name` is then ignored). None: no matching (for
        this matrix). Plots put components in this order (runtime/report/plots.py `feature_order`)."""
        return None

    def wide_panels(self, replicate: int) -> list[tuple[str, np.ndarray]] | None:
        """The components plot's stacks when the matrices are too wide to show (None: show them)."""
        return None

    def monosemantic(self, x: np.ndarray, lab: np.ndarray) -> np.ndarray | None:
        """The monosemantic baseline's output on x for mse_by_sparsity (None: no baseline)."""
        return None

    def extra_models(self, x: np.ndarray) -> dict:
        """More reference models for mse_by_sparsity, name -> output on x."""
        return {}


KIND_ANALYSES: dict[str, type] = {}  # kind -> KindAnalysis subclass


class RunAnalysis:
    """Lazily computed analyses of one run (all replicates); each method subclasses it."""

    def __init__(self, result: Any):
        self.result = result
        exp = result.experiment
        self.exp, self.arch = exp, result.arch
        self.importance = method_spec(exp.decompose.method).importance  # "attribution" or "causal" (module docstring)
        self.kind = result.arch.kind
        self.target, self.extras = result.target, result.extras
        self.I = exp.replicates
        self.dtype = np.dtype(exp.dtype)
        rp = exp.report
        self.wanted = set(rp.metrics or ()) | set(rp.plots or ()) | {e.metric for e in rp.expect}
        self.errors: dict[str, str] = {}  # analysis / metric / plot name -> error message
        self._cache: dict[str, Any] = {}
        self.part = KIND_ANALYSES.get(self.kind, KindAnalysis)(self)
        self._bind(result.decomposition)

    def _bind(self, dec: Any) -> None:
        """The method's view of the decomposition (components, masks); sets `comps`, `C`, `m` and
        `model` = (arch, target, comps) used for every forward pass."""
        raise NotImplementedError

    # -- building blocks ---------------------------------------------------------------------

    def rng(self, purpose: str) -> np.random.Generator:
        return seeding.stream(self.exp.seed, f"eval.{purpose}")

    def forward(self, x: np.ndarray):
        """Target trace on x."""
        return target_forward(self.model[0], self.model[1], x)

    def sample(self, rng: np.random.Generator, data=None, batch: int | None = None) -> np.ndarray:
        return sample_inputs(self.arch, data or self.exp.data, self.I, batch or self.exp.decompose.batch, rng, self.dtype)

    def sample_labelled(self, rng: np.random.Generator, data=None,
                        labels: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(x, true labels) of a fresh batch: a data file's rows with its labels when it has them,
        else `labels(x)` (default: `labels_fn`)."""
        data = data or self.exp.data
        if file_has_labels(data):
            return sample_batch(self.arch, data, Training(), np.ones((self.I, 0)), self.I, self.exp.decompose.batch,
                                rng, self.dtype)
        x = self.sample(rng, data)
        return x, (labels or self.labels_fn()[0])(x)

    def labels_fn(self) -> tuple[Callable[[np.ndarray], np.ndarray] | None, bool]:
        """(x -> true labels, assumed). A trained kind's labels come from the spec's training
        section, or for a target loaded from a file from the training record saved with it;
        without either, its default labels are assumed (`assumed` True) unless they need no
        settings (TMS: y = x). A hand-coded kind's come from its extras (None when they are lost)."""
        arch = self.arch
        kind, model = kind_spec(arch.kind), model_of(arch)
        if not kind.trained:
            known = model.true_labels(arch, self.extras, np.zeros((self.I, 0, n_inputs(arch)))) is not None
            return ((lambda x: model.true_labels(arch, self.extras, x)), False) if known else (None, True)
        train = self.exp.train or saved_training(self.exp)
        assumed = train is None and kind.labels != ("identity",)  # a kind with other labels: unknown
        if train is None:
            train = Training(labels=kind.labels[0])
        coeffs = label_coefficients(arch, train, self.I)
        return (lambda x: labels_for(arch, train, x, coeffs)), assumed

    def onehot_inputs(self, value: float = 1.0) -> np.ndarray:
        """(I, F, F) identity batch: sample f has only feature f on (at `value`)."""
        F = kind_spec(self.arch.kind).features(self.arch)
        x = np.zeros((self.I, F, F), dtype=self.dtype)  # in the run's dtype: no float64 (F, F) first
        x[:, np.arange(F), np.arange(F)] = value
        return x

    @_cached
    def target_loss(self) -> np.ndarray | None:
        """(I,) target MSE against the true labels; None when the labels are unknown."""
        from ..engine.train_target import evaluate_target

        _, assumed = self.labels_fn()
        if assumed and not file_has_labels(self.exp.data):
            return None
        kw = {}
        if not kind_spec(self.arch.kind).trained:
            kw = {"extras": self.extras, "batch": self.exp.decompose.batch}
        elif self.exp.train is None:
            kw = {"train": saved_training(self.exp), "batch": self.exp.decompose.batch}
        return evaluate_target(self.exp, self.arch, self.target, self.rng("target_loss"),
                               batches=self.exp.report.eval_batches, **kw)

    # -- the sampled pass ---------------------------------------------------------------------

    def sampled(self, scrub: bool = False) -> dict:
        """The sampled evaluation: `report.eval_batches` batches of the training distribution at
        the decomposition batch size (so batch top-k selects as in training).

        Returns per-sample arrays (I, N): "active_input", "zero" (mean square of the target
        output = MSE of a zero output), the method's own entries (`_sampled_batch`, e.g. APD's
        "topk_vs_target", "n_components"), its whole-sample totals (`_sampled_totals`), and, when
        `scrub` is set or a requested output needs it (the kind part's `sampled_outputs`), the
        kind part's entries (the residual MLP's scrubbing test and per-feature losses). Both
        variants draw the same batches, so the shared entries agree."""
        full = bool(self.part.sampled_outputs) and (scrub or bool(self.wanted & self.part.sampled_outputs))
        key = "sampled_full" if full else "sampled"
        if "sampled_full" in self._cache:
            return self._cache["sampled_full"]
        if key not in self._cache:
            self._cache[key] = self._sampled(full)
        return self._cache[key]

    def _sampled(self, full: bool) -> dict:
        """The loop every method and kind shares; each random stream (data, scrub masks, canonical
        scrub) is drawn in the same order as ever, so the reports' numbers do not depend on how
        the loop is split between method and kind."""
        rng_data, rng_mask, rng_canon = self.rng("sampled"), self.rng("scrub"), self.rng("canonical_scrub")
        setup = self.part.sampled_setup() if full else None
        labels = self.labels_fn()[0] if full else None
        parts: dict[str, list] = {}
        acc: dict = {}

        def put(name: str, v: np.ndarray) -> None:
            parts.setdefault(name, []).append(np.asarray(v))

        for _ in range(max(1, self.exp.report.eval_batches)):
            x, lab = self.sample_labelled(rng_data, labels=labels) if full else (self.sample(rng_data), None)
            y_t, scrubbed = self._sampled_batch(x, lab, put, acc)
            put("active_input", active_inputs(self.arch, x))
            put("zero", np.mean(y_t * y_t, axis=-1))  # loss of a zero output: the output's mean square
            if full:
                self.part.sampled_batch(setup, x, lab, y_t, scrubbed, put, rng_mask, rng_canon)
        out = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
        out.update(self._sampled_totals(acc))
        return out

    def _sampled_batch(self, x: np.ndarray, lab: np.ndarray | None, put: Callable,
                       acc: dict) -> tuple[np.ndarray, Callable]:
        """The method's entries of one batch; returns the target output and a function rng -> the
        (scrubbed, anti-scrubbed, random) outputs of the scrubbing test."""
        raise NotImplementedError

    def _sampled_totals(self, acc: dict) -> dict:
        """The method's whole-sample entries, from what `_sampled_batch` accumulated."""
        return {}

    # -- both sparse-feature analyses ---------------------------------------------------------

    @_cached
    def mse_by_sparsity(self) -> dict:
        """{level: {model: (I,) MSE vs labels}} for the training distribution (all-zero samples
        dropped; the method's selection as configured) and exactly-n-active data (n = 1..4, notes
        §7.2). Models: target, the kind's monosemantic baseline, the decomposed model(s) and the
        kind's extra references."""
        labels, _ = self.labels_fn()
        n_batches = max(1, self.exp.report.eval_batches // 10)
        rng = self.rng("mse_by_sparsity")
        F = kind_spec(self.arch.kind).features(self.arch)
        levels: list[tuple[str, Any]] = [("training", None)]
        if self.exp.data.file is None:  # generated exactly-n data says nothing of a data file's distribution
            levels += [(f"exactly {n}", n) for n in SPARSITY_LEVELS if n <= F]
        out: dict[str, dict] = {}
        for name, n in levels:
            data = self.exp.data if n is None else dataclasses.replace(self.exp.data, mode="exactly_n_active",
                                                                      n_active=n, synced=(), anticorrelated=())
            acc: dict[str, list] = {}
            for _ in range(n_batches):
                x, lab = self.sample_labelled(rng, data, labels)
                keep = active_inputs(self.arch, x)
                tgt, decomposed = self._decomposed_outputs(x, n)
                models = {"target": np.asarray(tgt.y)}
                mono = self.part.monosemantic(x, lab)
                if mono is not None:
                    models["monosemantic"] = mono
                models.update(decomposed)
                models.update(self.part.extra_models(x))
                for k, y in models.items():
                    acc.setdefault(k, []).append((mse_per_sample(y, lab), keep))
            out[name] = {k: masked_mean(np.concatenate([v for v, _ in vs], 1), np.concatenate([w for _, w in vs], 1))
                         for k, vs in acc.items()}
        return out

    def _decomposed_outputs(self, x: np.ndarray, n: int | None) -> tuple[Any, dict]:
        """(target forward, {method name: output of the decomposed model}) for mse_by_sparsity; n:
        None for training data, else the number of active features."""
        raise NotImplementedError

    # -- the interface kind analyses use ------------------------------------------------------

    def matrix_names(self) -> list[str]:
        """The decomposed matrices the method has components of, in forward order."""
        raise NotImplementedError

    def matrix_weights(self, name: str) -> np.ndarray:
        """(I, C, d_in, d_out) dense weights of every component of decomposed matrix `name`
        (analysis only; never in training)."""
        raise NotImplementedError

    def adversary_view(self, x: np.ndarray) -> Any:
        """What the evaluation adversary attacks on batch x (analysis/adversary.py, AdversaryView):
        the method's importances, masked model and delta channel."""
        raise NotImplementedError

    def probe_importance(self) -> dict:
        """Importances on one-hot probes for the ground-truth CI errors (analysis/ci_truth.py):
        name -> (I, F, C) per matrix, or {"*": table} for components that span every matrix."""
        raise NotImplementedError

    @staticmethod
    def criterion_of(exp: Any) -> str:
        """What `restart_scores` measures for `exp` (summary.json's restarts record names it)."""
        raise NotImplementedError

    def restart_scores(self, seed: int | None = None) -> np.ndarray:
        """(I,) held-out score of every instance (lower is better, no ground truth): what
        decompose.restarts and `apdspec pick` keep the best of. `seed`: the selection stream's
        (default decompose.seed), so runs scored with one seed see the same batches."""
        raise NotImplementedError

    def response_feature(self) -> int:
        """The feature of Figs. 7 / 14 (42 in the paper)."""
        return min(42, kind_spec(self.arch.kind).features(self.arch) - 1)


    # -- memory (engine/memory.py) ----------------------------------------------------------

    SAMPLE_BYTES = 128  # kept per sample and replicate by the sampled pass and mse_by_sparsity (measured <= 64)
    # an evaluation sample holds this share of what a training step holds per sample (the method
    # engine's `sample_floats`; no gradient pass), in float64 (measured, benchmarks/memory.py)
    EVAL_SHARE = 0.5
    # an evaluation batch (the sampled pass, a tenth more for mse_by_sparsity) takes this many
    # decomposition steps' time (`apdspec check`'s estimate; measured: APD 0.44-0.48)
    EVAL_STEPS = 0.5

    @classmethod
    def memory_parts(cls, exp: Any, arch: Any) -> list:
        """The analyses' parts of a run's memory, in evaluation and report (each analysis is computed
        once, by whichever asks first, and kept): the per-sample records of the sampled pass
        (report.eval_batches x decompose.batch samples), one evaluation batch through the method's
        passes in float64 (EVAL_SHARE of the method engine's `sample_floats`), the one-hot probes
        (features x features inputs, through the same passes), and the dense weights of every
        component (`matrix_weights`), and the evaluation adversary's gradient pass over one batch
        (twice an evaluation batch: the pass and its gradient)."""
        from ..engine.memory import Part, itemsize
        from ..engine.registry import engine_of

        I, B, F = exp.replicates, exp.decompose.batch, kind_spec(arch.kind).features(arch)
        phases = ("evaluation", "report")
        floats = cls.EVAL_SHARE * engine_of(exp.decompose.method).sample_floats(exp, arch)
        return [Part("per-sample records of the sampled evaluation (report.eval_batches x decompose.batch)",
                     cls.SAMPLE_BYTES * I * max(1, exp.report.eval_batches) * B, phases),
                Part("one evaluation batch, in float64", 8 * I * B * floats, phases),
                Part("the one-hot probes (features x features) through the method's passes",
                     I * F * (F * itemsize(exp) + 8 * floats), phases),
                Part("dense weights of every component, in float64", dense_weight_bytes(exp, arch), phases),
                # report.adversary's attack (adv_recon, ...) takes gradients through one batch's passes
                Part("the evaluation adversary's gradient pass over one batch, in float64",
                     2 * 8 * I * B * floats, phases)]


def dense_weight_bytes(exp: Any, arch: Any) -> float:
    """Bytes of every component's dense weights in float64, (I, C, d_in, d_out) per decomposed
    matrix (RunAnalysis.matrix_weights): what analyses and plots of the components hold."""
    from ..engine.models import layers_of

    return 8.0 * exp.replicates * exp.decompose.components * sum(l.d_in * l.d_out for l in layers_of(arch))


# The analysis class of each decomposition method: the method's analysis module registers it.
ANALYSES: dict[str, type] = {}


def analysis_for(result: Any) -> RunAnalysis:
    """The RunAnalysis of `result` (its method's), created on first use and cached on the result object."""
    an = getattr(result, "analysis", None)
    if an is None or an.result is not result:
        method = result.experiment.decompose.method
        try:
            cls = ANALYSES[method]
        except KeyError:
            raise ValueError(f"no analysis for decomposition method {method!r} (known: {', '.join(ANALYSES)})") from None
        an = cls(result)
        result.analysis = an
    return an

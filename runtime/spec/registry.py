"""The spec layer's plug-in registries: target kinds, decomposition methods, metrics and plots.

A target kind lives in `runtime/targets/<kind>/`, a method in `runtime/methods/<method>/`; each
registers itself here (and in the registries of the layers above, beside the code they register),
as autograd's primitives register their derivatives beside their definitions. The layers look
things up here and never name a kind or a method; `import runtime` imports every slice, so the
registries are full before any lookup.

    KINDS["tms"] = TmsKind()          # runtime/targets/tms/spec.py
    METHODS["spd"] = SpdMethod()      # runtime/methods/spd/spec.py
    declare_metric("mmcs", "...", kinds=("tms",))

A kind or method name nobody registered is a clear error (`UnknownKind`), never a fall-through.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .issues import Issue

DEFAULT_KIND = "tms"  # `target` when a spec or an embedding names none: the paper's first toy
DEFAULT_METHOD = "apd"  # `decompose.method` when none is named: the method apdspec started with


@dataclass(frozen=True)
class Layer:
    """One decomposed use of a weight matrix, in forward order (row-vector convention a -> a @ W)."""

    name: str  # hook name
    param: str  # parameter it reads
    transposed: bool  # uses param^T (TMS's tied output layer)
    d_in: int
    d_out: int


@dataclass(frozen=True)
class CiTruth:
    """Ground truth of the causal importances on one-hot probes (VPD notes §6), stated by a kind:
    "identity": every feature has its own subcomponent, over `matrices` together (their columns
    side by side: a feature may live in any of them); "dense": in each of `matrices`, `k`
    subcomponents carry every input together (one dense block)."""

    form: str  # "identity" | "dense"
    matrices: tuple[str, ...]  # decomposed matrix uses (Layer.name)
    k: int | None = None  # dense: the block's size


class KindSpec:
    """What the spec layer knows of a target kind: its dataclass and the facts that depend on its
    architecture. Subclasses (one per kind, in runtime/targets/<kind>/spec.py) override the hooks;
    the defaults suit a trained network on sparse features."""

    name: str = ""
    cls: type = object  # the frozen Target dataclass
    doc: str = ""  # one line for the language reference
    trained: bool = True  # built by training (`train` block); False: hand-coded or loaded
    labels: tuple[str, ...] = ()  # train.labels this kind accepts; the first is the default
    labels_hint: str = ""  # shown when train.labels is not one of `labels`
    label_coefficients: bool = False  # whether train.label_coeffs changes its labels
    importer: Any = None  # its import_rules.ImportRules (`apdspec import-target --kind NAME`), None: not importable
    excludes: tuple[str, ...] = ()  # metrics / plots declared for every kind that do not apply to this one
    feature_noun: str = "features"  # what its features are called in messages

    def features(self, arch: Any) -> int:
        """Number of input features: data rows index them, one-hot probes turn them on one at a time."""
        return arch.features

    def inputs(self, arch: Any) -> int:
        """Width of the network's input x (a data file's inputs have this many columns)."""
        return self.features(arch)

    def outputs(self, arch: Any) -> int:
        """Width of the network's output (a data file's labels have this many columns)."""
        return self.features(arch)

    def matrices(self, arch: Any) -> tuple[Layer, ...]:
        """The decomposed uses of weight matrices, in forward order (a tied use counts again)."""
        raise NotImplementedError

    def param_shapes(self, arch: Any) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """(required, optional): parameter name -> shape of one replicate. Stated once: init,
        training, target files and imports all use it."""
        raise NotImplementedError

    def layer_count(self, arch: Any) -> tuple[str, int]:
        """(field, value) that sets how many per-layer entries the architecture builds (bounded
        before anything iterates over it)."""
        return "", 0

    def default_values(self, arch: Any) -> tuple[float, float] | None:
        """data.values when the spec leaves it out."""
        return (0.0, 1.0)

    def decompose_defaults(self, arch: Any, method: str) -> dict[str, Any]:
        """Defaults of decompose fields that depend on this architecture (e.g. APD's rank), for
        method `method`; resolve() fills those the spec leaves at None."""
        return {}

    def issues(self, arch: Any) -> list["Issue"]:
        """Checks of the target's own fields (paths "target.<field>")."""
        return []

    def data_issues(self, exp: Any, arch: Any) -> list["Issue"]:
        """Checks of `data` that depend on this kind (beyond the generic ones)."""
        return []

    def bars(self, arch: Any) -> tuple[tuple[str, str, float], ...]:
        """The kind's bar for a successful decomposition by any method (`apdspec compare`), beside
        the method's own (MethodSpec.bars): (metric, op, value)."""
        return ()

    def ci_truth(self, arch: Any) -> tuple[CiTruth, ...]:
        """The ground truth of its causal importances (identity_ci_error, dense_ci_error), if any."""
        return ()

    def suggested_spec(self, arch: Any) -> str | None:
        """The shipped spec (specs/...) whose target has this architecture, if any (`apdspec import-target`)."""
        return None

    def label(self, arch: Any) -> str:
        """A short name for tables that compare runs (`apdspec compare`), e.g. "TMS 40-10"."""
        return self.name

    def finish_seconds(self, arch: Any) -> float:
        """Rough seconds for metrics, plots, report and process start (`apdspec check`'s estimate)."""
        return 3.0

    def equivalent(self, arch: Any) -> Any:
        """An equivalent target of another kind that runs this architecture faster (a network
        written in the layer vocabulary that is a TMS), or None; resolve() swaps it in."""
        return None

    def dense_matrices(self, arch: Any) -> tuple[str, ...]:
        """Decomposed matrices that are one mechanism by design (a frozen identity): the generic
        dense_share / dense_error metrics measure them."""
        return ()

    def truth_note(self, arch: Any) -> str | None:
        """What the report says of the target's ground truth (None: its metrics say it)."""
        return None

    def describe(self, arch: Any) -> str:
        """One line for `apdspec check`."""
        fields = ", ".join(f"{f.name} = {getattr(arch, f.name)}" for f in dataclasses.fields(arch) if f.init)
        return f"{self.name}: {fields}"


class MethodSpec:
    """What the spec layer knows of a decomposition method: its Decompose subclass (the method's
    own settings, so ownership is structural) and its checks. One subclass per method, in
    runtime/methods/<method>/spec.py."""

    name: str = ""
    cls: type = object  # its Decompose subclass
    title: str = ""  # "Attribution-based Parameter Decomposition (Braun et al. 2025)"
    doc: str = ""  # one line for the language reference
    foreign_key_note: str = ""  # appended to the hint when a spec of this method sets another method's key
    # what selects components per input: "attribution" (top-k over attributions, one selection for every
    # matrix) or "causal" (a learned causal importance per subcomponent and matrix); metrics and plots
    # declared for an importance apply to every method that has it
    importance: str = "attribution"
    # the method's own paper's bar for a successful decomposition (`apdspec compare`): (metric, op,
    # value), each applied where a run reports the metric
    bars: tuple[tuple[str, str, float], ...] = ()

    def terms(self) -> tuple[str, ...]:
        """The loss terms, in order: the fields of its loss class marked term=True."""
        loss_cls = loss_class(self.cls)
        return tuple(f.name for f in dataclasses.fields(loss_cls) if f.metadata.get("term"))

    def restart_criterion(self, dec: Any) -> str:
        """How decompose.restarts picks an init, e.g. "lowest held-out top-k MSE"."""
        return "lowest held-out loss"

    def matrix_note(self, layer: Layer) -> str:
        """What `apdspec check` says of a decomposed matrix use (e.g. a tied one)."""
        return f" (tied to {layer.param})" if layer.transposed else ""

    def summary_rows(self, exp: Any) -> list[tuple[str, str]]:
        """`apdspec check` rows describing the method's settings (before the training row)."""
        return [("components", f"C = {exp.decompose.components}")]

    def training_rows(self, exp: Any) -> list[tuple[str, str]]:
        """`apdspec check` rows after the training row."""
        return []

    def components_text(self, dec: Any) -> str:
        """How a report's header names the decomposition's components, e.g. "C = 5, m = 3"."""
        return f"C = {dec.components}"

    def resolve(self, dec: Any, arch: Any, kind: KindSpec) -> Any:
        """`dec` with the method's architecture-dependent defaults filled (idempotent)."""
        return dec

    def issues(self, exp: Any, arch: Any, kind: KindSpec) -> list["Issue"]:
        """Checks of the method's own settings (paths "decompose.<field>")."""
        return []


def loss_class(decompose_cls: type) -> type:
    """The dataclass of a Decompose subclass's `loss` field."""
    for f in dataclasses.fields(decompose_cls):
        if f.name == "loss":
            return type(f.default) if f.default is not dataclasses.MISSING else f.default_factory().__class__
    raise TypeError(f"{decompose_cls.__name__} has no loss field")


Bounds = Callable[[Any, Any], "tuple[float | None, float | None, str]"]


@dataclass(frozen=True)
class Metric:
    """A metric the runtime can report: where it applies (None: every kind / method);
    `bounds(exp, arch)` -> (lowest, highest, why): the values it can take in that experiment (None:
    unbounded), so that the checker can refuse an expectation that cannot hold; `requires(arch)`
    says why it cannot be computed for that architecture, as Plot.requires does, or None."""

    name: str
    doc: str
    kinds: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    importance: str | None = None  # only methods with this MethodSpec.importance (None: any)
    bounds: Bounds | None = None
    requires: Callable[[Any], tuple[str, tuple[str, ...]] | None] | None = None


@dataclass(frozen=True)
class Plot:
    """A plot the runtime can draw. `requires(arch)` returns why it cannot be drawn for that
    architecture, as (message, paths of the fields involved), or None when it can; such a plot is
    left out of the defaults and refused when asked for."""

    name: str
    doc: str
    kinds: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    requires: Callable[[Any], tuple[str, tuple[str, ...]] | None] | None = None
    importance: str | None = None  # only methods with this MethodSpec.importance (None: any)


KINDS: dict[str, KindSpec] = {}
METHODS: dict[str, MethodSpec] = {}
METRICS: dict[str, Metric] = {}
PLOTS: dict[str, Plot] = {}


class UnknownKind(ValueError):
    """A target kind or decomposition method that no slice registered."""


def kind_spec(kind: str) -> KindSpec:
    try:
        return KINDS[kind]
    except KeyError:
        raise UnknownKind(f"unknown target kind {kind!r} (known: {', '.join(KINDS)})") from None


def method_spec(method: str) -> MethodSpec:
    try:
        return METHODS[method]
    except KeyError:
        raise UnknownKind(f"unknown decomposition method {method!r} (known: {', '.join(METHODS)})") from None


def declare_metric(name: str, doc: str, kinds: tuple[str, ...] | None = None,
                   methods: tuple[str, ...] | None = None, importance: str | None = None,
                   bounds: Bounds | None = None,
                   requires: Callable[[Any], tuple[str, tuple[str, ...]] | None] | None = None) -> None:
    """Declare a metric; a second declaration of the same name adds its methods (a loss term several
    methods share) or its kinds (a ground-truth metric several kinds define) to the first."""
    old = METRICS.get(name)
    if old is not None and old.methods is not None and methods is not None:
        methods = old.methods + tuple(m for m in methods if m not in old.methods)
        doc, kinds, bounds, requires = old.doc, old.kinds, bounds or old.bounds, requires or old.requires
    elif old is not None and old.kinds is not None and kinds is not None:
        kinds = old.kinds + tuple(k for k in kinds if k not in old.kinds)
        doc, bounds, requires = old.doc, bounds or old.bounds, requires or old.requires
    METRICS[name] = Metric(name, doc, kinds, methods, importance, bounds, requires)


def count_of(what: str, n: Callable[[Any, Any], int]) -> Bounds:
    """Bounds of a metric that counts `what` (e.g. "features"), of which the experiment has n(exp, arch)."""
    return lambda exp, arch: (0.0, float(n(exp, arch)), f"it counts {what}, of which there are {n(exp, arch)}")


def cosine(exp: Any, arch: Any) -> tuple[float, float, str]:
    """Bounds of a (mean) cosine similarity."""
    return -1.0, 1.0, "it is a cosine similarity"


def non_negative(exp: Any, arch: Any) -> tuple[float, None, str]:
    """Bounds of a loss, a norm ratio or a count without a known limit."""
    return 0.0, None, "it is never negative"


def unmet(name: str, arch: Any, table: str = "metrics") -> tuple[str, tuple[str, ...]] | None:
    """Why metric (plot) `name` cannot be computed for architecture `arch`, or None."""
    entry = (METRICS if table == "metrics" else PLOTS).get(name)
    return entry.requires(arch) if entry is not None and entry.requires is not None else None


def declare_plot(name: str, doc: str, kinds: tuple[str, ...] | None = None, methods: tuple[str, ...] | None = None,
                 requires: Callable[[Any], tuple[str, tuple[str, ...]] | None] | None = None,
                 importance: str | None = None) -> None:
    PLOTS[name] = Plot(name, doc, kinds, methods, requires, importance)


def declare_terms(method: MethodSpec) -> None:
    """Declare the final value of each of a method's loss terms as a metric (its `term` text)."""
    loss_cls = loss_class(method.cls)
    for f in dataclasses.fields(loss_cls):
        if f.metadata.get("term"):
            declare_metric(f.name, f.metadata["term"], methods=(method.name,))


def declare_ci_truth_metrics(kind: str, dense: bool = False) -> None:
    """The ground-truth CI metrics of a kind whose `ci_truth` states one (VPD notes §6)."""
    declare_metric("identity_ci_error", "errors of the importances on one-hot probes (x_f = 0.75) against 'every feature "
                                        "its own subcomponent' (Hungarian matching; entries > 0.1 off the matched diagonal "
                                        "+ matched entries < 0.9), summed over the kind's identity blocks; 0 = the ground "
                                        "truth. APD: its attributions normalised per probe (largest = 1), one table for "
                                        "every matrix", kinds=(kind,))
    if dense:
        declare_metric("dense_ci_error", "errors of the causal importances on one-hot probes against 'k subcomponents "
                                         "carry the matrix together' (k = the kind's block size: each of the k largest "
                                         "columns needs an entry >= 0.9, any other entry > 0.1 is an error), summed over "
                                         "the kind's dense blocks; 0 = the ground truth", kinds=(kind,), importance="causal",
                       requires=_has_dense_truth)


def _has_dense_truth(arch: Any):
    if not any(t.form == "dense" for t in kind_spec(arch.kind).ci_truth(arch)):
        return "the target states no dense block of causal importance (e.g. a frozen identity)", ("target",)
    return None


def applies(name: str, kind: str, method: str, table: str = "metrics") -> bool:
    """Whether metric (or plot, table="plots") `name` applies to a target `kind` decomposed by `method`."""
    entry = (METRICS if table == "metrics" else PLOTS).get(name)
    if entry is None or (entry.kinds is not None and kind not in entry.kinds):
        return False
    if entry.kinds is None and kind in KINDS and name in KINDS[kind].excludes:
        return False
    if entry.importance is not None and (method not in METHODS or METHODS[method].importance != entry.importance):
        return False
    return entry.methods is None or method in entry.methods


def kinds_of(name: str, table: str = "metrics") -> tuple[str, ...]:
    """The kinds a metric (plot) applies to."""
    entry = (METRICS if table == "metrics" else PLOTS)[name]
    if entry.kinds is not None:
        return entry.kinds
    return tuple(k for k, spec in KINDS.items() if name not in spec.excludes)


def public_classes() -> dict[str, type]:
    """Name -> class of every registered kind's target class and every method's Decompose subclass
    and the dataclasses its fields hold (the `runtime` package exports them)."""
    import typing

    out = {spec.cls.__name__: spec.cls for spec in KINDS.values()}
    for spec in METHODS.values():
        todo = [spec.cls]
        while todo:
            cls = todo.pop()
            if cls.__name__ in out or cls.__module__ == __name__.rsplit(".", 1)[0] + ".experiment":
                continue
            out[cls.__name__] = cls
            for hint in typing.get_type_hints(cls).values():
                todo += [t for t in (hint, *typing.get_args(hint)) if isinstance(t, type) and dataclasses.is_dataclass(t)]
    return out


# What every kind and method reports (the slices declare their own beside their definitions).
declare_metric("total", "final total loss")
declare_metric("target_loss", "target model MSE against the true labels", bounds=non_negative)
declare_plot("losses", "training curves of every loss term")
declare_plot("components", "component weight matrices")
declare_plot("mse_by_sparsity", "MSE by number of active features")

# What every method with causal importances reports (SPD, VPD; runtime/analysis/causal.py computes them).
declare_metric("ci_masked_mse", "MSE of the output with every mask at its causal importance (no noise) vs the target "
                                "output (eval batches)", importance="causal")
declare_metric("ci_l0", "mean number of subcomponents (all matrices) with causal importance > 0.1 per sample with a "
                        "nonzero input", importance="causal")
declare_metric("alive_subcomponents", "subcomponents (all matrices) with causal importance > 0.1 on some eval sample",
               importance="causal")
declare_plot("causal_importance", "SPD paper Figs. 8, 12, 13: causal importance of every subcomponent on one-hot "
                                  "inputs, per matrix, columns permuted", importance="causal")

# The evaluation adversary (VPD notes §5), for every method (runtime/analysis/adversary.py).
declare_metric("adv_recon", "output MSE vs the target under the evaluation adversary: one source vector per matrix "
                            "shared by the eval batch, sign-gradient ascent (report.adversary); masks = importance + "
                            "(1 - importance) source (APD: importance = the batch top-k mask)")
declare_metric("clean_recon", "output MSE vs the target with the masks at the importances (sources 0) on the "
                              "adversary's eval batches (APD: the top-k model; SPD, VPD: the CI-masked model)")
declare_metric("stoch_recon", "output MSE vs the target with uniform random sources on the adversary's eval batches")


# Matrices that are one mechanism by design (KindSpec.dense_matrices: a frozen identity), for every method.
def _has_dense(arch: Any):
    if not kind_spec(arch.kind).dense_matrices(arch):
        return "the target has no matrix that is one mechanism by design (a frozen identity)", ("target",)
    return None


declare_metric("dense_share", "per matrix that is one mechanism by design (a frozen identity), the share of its "
                              "components' squared norm in the fewest components that can hold it (rank / component "
                              "rank): 1 when it is one mechanism; mean over those matrices", requires=_has_dense)
declare_metric("dense_error", "||sum of those fewest components - W||_F / ||W||_F per such matrix, mean: 0 when they "
                              "are the whole matrix", requires=_has_dense)

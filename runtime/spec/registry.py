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


@dataclass(frozen=True)
class Metric:
    """A metric the runtime can report: where it applies (None: every kind / method). `requires(arch)`
    says why it cannot be computed for that architecture, as Plot.requires does, or None."""

    name: str
    doc: str
    kinds: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
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
                   methods: tuple[str, ...] | None = None,
                   requires: Callable[[Any], tuple[str, tuple[str, ...]] | None] | None = None) -> None:
    """Declare a metric; a second declaration of the same name (a loss term several methods
    share) adds its methods to the first."""
    old = METRICS.get(name)
    if old is not None and old.methods is not None and methods is not None:
        methods = old.methods + tuple(m for m in methods if m not in old.methods)
        doc, kinds, requires = old.doc, old.kinds, old.requires
    METRICS[name] = Metric(name, doc, kinds, methods, requires)


def unmet(name: str, arch: Any, table: str = "metrics") -> tuple[str, tuple[str, ...]] | None:
    """Why metric (plot) `name` cannot be computed for architecture `arch`, or None."""
    entry = (METRICS if table == "metrics" else PLOTS).get(name)
    return entry.requires(arch) if entry is not None and entry.requires is not None else None


def declare_plot(name: str, doc: str, kinds: tuple[str, ...] | None = None, methods: tuple[str, ...] | None = None,
                 requires: Callable[[Any], tuple[str, tuple[str, ...]] | None] | None = None) -> None:
    PLOTS[name] = Plot(name, doc, kinds, methods, requires)


def declare_terms(method: MethodSpec) -> None:
    """Declare the final value of each of a method's loss terms as a metric (its `term` text)."""
    loss_cls = loss_class(method.cls)
    for f in dataclasses.fields(loss_cls):
        if f.metadata.get("term"):
            declare_metric(f.name, f.metadata["term"], methods=(method.name,))


def applies(name: str, kind: str, method: str, table: str = "metrics") -> bool:
    """Whether metric (or plot, table="plots") `name` applies to a target `kind` decomposed by `method`."""
    entry = (METRICS if table == "metrics" else PLOTS).get(name)
    if entry is None or (entry.kinds is not None and kind not in entry.kinds):
        return False
    if entry.kinds is None and kind in KINDS and name in KINDS[kind].excludes:
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
declare_metric("target_loss", "target model MSE against the true labels")
declare_plot("losses", "training curves of every loss term")
declare_plot("components", "component weight matrices")
declare_plot("mse_by_sparsity", "MSE by number of active features")


def _has_dense(arch: Any):
    if not kind_spec(arch.kind).dense_matrices(arch):
        return "the target has no matrix that is one mechanism by design (a frozen identity)", ("target",)
    return None


declare_metric("dense_share", "per matrix that is one mechanism by design (a frozen identity), the share of its "
                              "components' squared norm in the fewest components that can hold it (rank / component "
                              "rank): 1 when it is one mechanism; mean over those matrices", requires=_has_dense)
declare_metric("dense_error", "||sum of those fewest components - W||_F / ||W||_F per such matrix, mean: 0 when they "
                              "are the whole matrix", requires=_has_dense)

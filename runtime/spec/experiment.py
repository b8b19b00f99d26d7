"""The typed experiment description the runtime consumes: frozen dataclasses with their defaults.

Everything an experiment can vary lives in these dataclasses and in those of the slices (a target
kind's in runtime/targets/<kind>/spec.py, a method's settings in runtime/methods/<method>/spec.py),
so that (a) the `.apd` language (package `apdspec`) compiles text into exactly these objects, and
(b) a user embedding the runtime builds them directly in Python. Defaults live in one place: the
field defaults, plus `checks.resolve()` for the defaults that depend on the target (the kinds'
`decompose_defaults`). Each field documents itself (`fields.setting`); the language's schema and
docs/language.md are generated from that.

`Decompose` holds what every method shares; `Decompose(method="spd", ...)` builds the method's own
subclass (registry.METHODS[...].cls), whose extra fields are that method's settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .fields import Form, setting, simple_forms
from .per_feature import PerFeature
from .registry import DEFAULT_KIND, DEFAULT_METHOD, KINDS, method_spec

MAX_LAYERS = 1000  # a sanity bound: validation and models build per-layer lists


class Target:
    """Base of the target dataclasses: each kind's (runtime/targets/<kind>/spec.py) is a frozen
    dataclass subclass whose last field is `kind: str = field(default=NAME, init=False)`."""

    kind: str


@dataclass(frozen=True)
class FileTarget(Target):
    """A target saved by apdspec as `.npz` (the run directory's `target.npz`)."""

    path: str = ""
    kind: str = field(default="file", init=False)


def default_target() -> Target:
    return KINDS[DEFAULT_KIND].cls()


OPTIMIZER_KW = {k: k for k in ("lr", "weight_decay", "beta1", "beta2", "eps")}


@dataclass(frozen=True)
class Optimizer:
    """Adam / AdamW (decoupled weight decay, PyTorch semantics)."""

    FORMS: ClassVar[dict[str, Form]] = simple_forms("name", ("adam", "adamw"), OPTIMIZER_KW, positional=("lr",))

    name: str = setting("adam", "adam, or adamw (decoupled weight decay)", choices=("adam", "adamw"))
    lr: float = setting(1e-3, "learning rate (peak, after warmup)", valid="> 0")
    weight_decay: float = setting(0.0, "decoupled weight decay (adamw)", valid=">= 0")
    beta1: float = setting(0.9, "Adam beta1", valid="[0, 1)")
    beta2: float = setting(0.999, "Adam beta2", valid="[0, 1)")
    eps: float = setting(1e-8, "Adam epsilon", valid="> 0")


SCHEDULES = ("constant", "linear", "cosine", "half_cosine", "exponential")
ENDING = ("linear", "cosine", "half_cosine")  # the schedules that end at `final`


@dataclass(frozen=True)
class Schedule:
    """LR multiplier after `warmup` (a fraction of steps, linear from 0): APD notes §6, and the VPD
    authors' half cosine to a final fraction (VPD notes §4)."""

    FORMS: ClassVar[dict[str, Form]] = {
        **simple_forms("kind", ("constant",), {"warmup": "warmup"}),
        **simple_forms("kind", ENDING, {"warmup": "warmup", "final": "final"}),
        "exponential": Form(fixed={"kind": "exponential"}, keywords={"warmup": "warmup", "halflife": "halflife"}),
    }

    kind: str = setting("constant", "LR multiplier after warmup: constant; linear 1 -> final; cosine: cos(pi/2 u) "
                        "from 1 to final (APD notes §6); half_cosine: (1 + cos(pi u)) / 2 from 1 to final (VPD notes "
                        "§4); exponential: 0.5^(step / halflife); u = progress after warmup", choices=SCHEDULES)
    warmup: float = setting(0.0, "fraction of the steps with linear warmup from 0, e.g. 5%", valid="[0, 1]")
    halflife: float | None = setting(None, "half-life in steps (exponential only)", valid="> 0; required by exponential")
    final: float = setting(0.0, "multiplier at the last step (linear, cosine, half_cosine), e.g. 10%", valid="[0, 1]")


@dataclass(frozen=True)
class FaithfulnessWarmup:
    """Before the first step, `steps` AdamW steps on the faithfulness loss alone (the subcomponents
    V, U only), so that training starts from subcomponents that already sum to the target (SPD: not
    in the paper, the authors' later configs; VPD notes §3)."""

    FORMS: ClassVar[dict[str, Form]] = {"adamw": Form(keywords={k: k for k in ("steps", "lr", "weight_decay")})}

    steps: int = setting(200, "AdamW steps on the faithfulness loss alone (V, U) before training", valid="> 0")
    lr: float = setting(1e-2, "their learning rate", valid="> 0")
    weight_decay: float = setting(0.1, "their decoupled weight decay", valid=">= 0")


LABELS = ("identity", "act_plus_resid", "abs")


@dataclass(frozen=True)
class Training:
    """How the target network is trained (kinds that are trained; hand-coded ones have none)."""

    steps: int = setting(5000, "optimiser steps", valid="> 0")
    batch: int = setting(1024, "batch size", valid="> 0")
    optimizer: Optimizer = setting(Optimizer(name="adamw", lr=5e-3, weight_decay=0.01),
                                   "optimiser: adam(...) or adamw(...)")
    schedule: Schedule = setting(Schedule(kind="linear"), "learning-rate schedule")
    seed: int | None = setting(None, "seed of target init and data; none = the experiment seed")
    labels: str | None = setting(None, "identity (y = x), act_plus_resid (y = x + act(x)), abs (y = |x|); "
                                 "none = the target kind's default", choices=LABELS,
                                 valid="one the target kind accepts")
    label_coeffs: str = setting("ones", "label coefficients c_i: ones, or uniform in [1, 2)", choices=("ones", "uniform"))
    label_seed: int = setting(0, "seed of uniform label coefficients")
    importance: PerFeature = setting(1.0, "weight I_i of output feature i in the training loss: a number r means "
                                     "I_i = r^i (the TMS paper's 0.9^i), a list one weight per feature, or a decay "
                                     "form zipf(...) / geometric(...)", paper="I_i (TMS)",
                                     valid=">= 0 each; a list has one value per feature", per_feature="power")
    log_every: int = setting(500, "steps between log lines", valid="> 0")


DATA_MODES = ("at_least_zero_active", "exactly_n_active")


@dataclass(frozen=True)
class Data:
    """The inputs: generated sparse features (notes §2), or the rows of a data file.

    Generated: feature i is active with probability p_i (`probability`), its value ~ U(values);
    `synced` groups fire together, in `anticorrelated` groups at most one feature fires
    (docs/language.md, "Data"). A kind with other inputs (the gated network's control bits) reads
    these fields its own way. With `file`, every batch is drawn uniformly with replacement from the
    file's rows instead, and the generated-data settings do not apply."""

    FORMS: ClassVar[dict[str, Form]] = {
        "file": Form(positional=("file",), keywords={"inputs": "inputs", "labels": "labels", "sha256": "sha256"},
                     required=1),
    }
    CALL_BLOCKS: ClassVar[tuple[str, ...]] = ("file",)  # `data file("x.npz")`, as `target file("x.npz")`

    probability: PerFeature = setting(0.05, "probability p_i that feature i (a control bit) is active: a number (every "
                                      "feature), a list (one per feature) or zipf(...) / geometric(...)",
                                      valid="(0, 1] each; a list has one value per feature", per_feature="constant")
    values: tuple[float, float] | None = setting(None, "value range of active features; none = per target",
                                                 valid="low < high", style="uniform")
    mode: str = setting("at_least_zero_active", "how many features are active", choices=DATA_MODES,
                        forms={"exactly_n_active": Form(fixed={"mode": "exactly_n_active"}, positional=("n_active",),
                                                        required=1)},
                        valid="the target kind's data modes")
    n_active: int = setting(1, "exactly_n_active: the number of active features", valid="[1, features]")
    synced: tuple[tuple[int, ...], ...] = setting((), "correlated groups: when any member would fire, every member "
                                                 "fires (with fresh values)",
                                                 valid="disjoint indices in [0, features); at_least_zero_active only")
    anticorrelated: tuple[tuple[int, ...], ...] = setting(
        (), "anti-correlated groups: at most one member fires, feature i with probability p_i",
        valid="disjoint indices in [0, features), not in synced groups; sum of p_i <= 1 per group; "
              "at_least_zero_active only")
    file: str | None = setting(None, "an .npz file whose rows are the inputs (and labels); none = generated "
                               "features", path=True, valid="a readable .npz; inputs (N, inputs of the target)")
    inputs: str = setting("inputs", "the data file's array of inputs, (N, inputs of the target)")
    labels: str | None = setting("labels", "the data file's array of labels, (N, outputs of the target); when the "
                                 "file has no array of this default name, or with none: the target kind's labels "
                                 "(train.labels) or the target's own outputs")
    sha256: str | None = setting(None, "sha256 of the data file; none = recorded when the spec is resolved (spec.json), "
                                 "a given value is checked", valid="64 hexadecimal digits")


@dataclass(frozen=True)
class Decompose:
    """What every decomposition method shares. `Decompose(method=M, ...)` builds method M's own
    subclass (its settings are the subclass's extra fields); each subclass sets `method`'s default."""

    method: str = setting(DEFAULT_METHOD, "the decomposition method")
    components: int = setting(5, "APD: parameter components; SPD: rank-one subcomponents per decomposed matrix",
                              paper="C", valid="> 0")
    loss: Any = setting(None, "loss coefficients and exponents (each method's own terms)")
    optimizer: Optimizer = setting(Optimizer(name="adam", lr=1e-3), "decomposition optimiser")
    schedule: Schedule = setting(Schedule(), "decomposition learning-rate schedule")
    steps: int = setting(1000, "optimiser steps", valid="> 0")
    batch: int = setting(256, "batch size", paper="B", valid="> 0")
    seed: int | None = setting(None, "seed of the decomposition's init and data; none = the experiment seed")
    init_scale: float | None = setting(None, "gain of the component init (SPD: of V); none = per target", valid="> 0")
    log_every: int = setting(100, "steps between log lines", valid="> 0")
    restarts: int = setting(1, "independent inits per replicate; the one with the best held-out score (the "
                            "method's own, no ground truth) is kept (over finished runs instead: `apdspec pick`, "
                            "docs/outputs.md)", valid="> 0")
    checkpoint_every: int | None = setting(None, "steps between full-state checkpoints of a run directory (exact "
                                           "resume); none = every 10 % of the steps, 0 = none", valid=">= 0")
    checkpoint_keep: int = setting(2, "newest checkpoints kept", valid="> 0")

    def __new__(cls, *args: Any, **kwargs: Any) -> "Decompose":
        if cls is Decompose:  # the base names no method's settings: build the method's own class
            cls = method_spec(kwargs.get("method", DEFAULT_METHOD)).cls
        return object.__new__(cls)

    def __post_init__(self) -> None:
        own = type(self).__dataclass_fields__["method"].default
        if self.method != own:
            raise ValueError(f"{type(self).__name__} is method {own!r}, not {self.method!r}; build "
                             f"Decompose(method={self.method!r}, ...)")


@dataclass(frozen=True)
class Expectation:
    """`expect METRIC OP VALUE` evaluated on each replicate (`reduce="all"`, or at least `at_least`
    replicates), or on a reduction over replicates (`mean`, `min`, `max`, `median`)."""

    metric: str
    op: str  # >= | <= | > | < | ==
    value: float
    reduce: str = "all"  # all | mean | min | max | median
    at_least: int | None = None
    text: str = field(default="", compare=False)  # the clause as written (display only)


@dataclass(frozen=True)
class EvalAdversary:
    """The evaluation adversary every method is measured with (VPD notes §5; adv_recon): per batch
    one source vector per decomposed matrix, shared by the batch's rows, `steps` sign-gradient
    ascents of `step_size` on the output reconstruction, clamped to [0, 1]."""

    FORMS: ClassVar[dict[str, Form]] = {"pgd": Form(keywords={k: k for k in ("steps", "step_size", "batches")})}

    steps: int = setting(20, "sign-gradient ascent steps", paper="20 (VPD notes §5)", valid=">= 0")
    step_size: float = setting(0.1, "the step of each ascent", paper="0.1 (VPD notes §5)", valid="> 0")
    batches: int = setting(1, "batches of decompose.batch samples attacked (each its own attack); the metrics average "
                           "them", valid="> 0", max=10_000, why="each batch is one attack of `steps` passes")


@dataclass(frozen=True)
class Report:
    """Metrics, plots and expectations."""

    metrics: tuple[str, ...] | None = setting(None, "metrics to compute; all = every applicable one",
                                              valid="must apply to the target kind and method", names="metric")
    plots: tuple[str, ...] | None = setting(None, "plots to draw; all = every applicable one",
                                            valid="must apply to the target kind and method", names="plot")
    expect: tuple[Expectation, ...] = setting((), "expect METRIC OP VALUE")
    eval_batches: int = setting(20, "batches for sampled analyses", valid="> 0")
    adversary: EvalAdversary = setting(EvalAdversary(), "the evaluation adversary of adv_recon: pgd(steps = 20, "
                                       "step_size = 0.1, batches = 1)")
    paper: str | None = setting(None, "key of the paper's reference results the report compares with; none = no "
                                "comparison", key="paper")
    smoke: bool = setting(False, "a smoke run: it checks that everything runs end to end, its numbers are not a "
                                 "result; the terminal and the report say so, and the problems its diagnostics find are "
                                 "listed without failing it (its expectations, if any, still do)")


@dataclass(frozen=True)
class SweepAxis:
    path: str  # e.g. "decompose.loss.simplicity" or "seed"
    values: tuple[Any, ...]
    group: int | None = None  # axes with the same group are zipped; others form a grid


@dataclass(frozen=True)
class Sweep:
    axes: tuple[SweepAxis, ...] = ()


@dataclass(frozen=True)
class Experiment:
    """One experiment: a target, its data, the decomposition and what to report."""

    name: str = "experiment"
    seed: int = setting(0, "root seed")
    replicates: int = setting(1, "independent copies trained as one vectorised model", valid=">= 1")
    dtype: str = setting("float32", "floating-point precision", choices=("float32", "float64"))
    target: Target = field(default_factory=default_target)
    train: Training | None = Training()
    data: Data = setting(Data(), "the inputs: generated sparse features (notes §2), or a data file")
    decompose: Decompose = setting(factory=lambda: Decompose(), doc="the decomposition (APD paper §2; SPD paper §2)")
    report: Report = setting(Report(), "metrics, plots and expectations")
    sweep: Sweep | None = None


def with_method(dec: Decompose, method: str) -> Decompose:
    """`dec` as method `method`'s decomposition: the shared fields kept, the method's own at their
    defaults (a spec that sets another method's fields is refused before it gets here)."""
    shared = {f.name for f in fields(Decompose)} - {"method", "loss"}
    return Decompose(method=method, **{k: getattr(dec, k) for k in shared})

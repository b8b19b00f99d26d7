"""The experiment description: what the runtime consumes, with no engine behind it.

Holds the shared dataclasses (experiment.py) and their field metadata (fields.py), the registries
the target kinds and methods fill (registry.py), defaults and validation (checks.py), the JSON round
trip (serial.py), the target-file metadata format (target_file.py), data files (data_file.py),
per-feature values (per_feature.py) and the papers' reference numbers (paper.py). Imports nothing else from runtime: every other subpackage may import it. The
kinds' and methods' own dataclasses live in their slices (runtime/targets, runtime/methods) and are
public from the `runtime` package.
"""
from .checks import (  # noqa: F401
    Issue, SpecValidationError, architecture, check, resolve, target_kind, validate,
)
from .experiment import (  # noqa: F401
    MAX_LAYERS, Data, Decompose, EvalAdversary, Expectation, Experiment, FaithfulnessWarmup, FileTarget, Optimizer, Report, Schedule, Sweep, SweepAxis,
    Target, Training, with_method,
)
from .fields import Form, setting  # noqa: F401
from .per_feature import Profile  # noqa: F401
from .registry import (  # noqa: F401
    CiTruth, DEFAULT_KIND, DEFAULT_METHOD, KINDS, METHODS, METRICS, PLOTS, KindSpec, Layer, MethodSpec, UnknownKind, applies,
    declare_metric, declare_plot, kind_spec, method_spec,
)
from .serial import (  # noqa: F401
    decompose_from_dict, field_value, from_dict, nested_class, target_from_dict, to_dict, to_json,
)

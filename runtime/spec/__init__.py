"""The experiment description: what the runtime consumes, with no engine behind it.

Holds the typed dataclasses (experiment.py), defaults and validation (checks.py), the JSON round
trip (serial.py), the target-file metadata format (target_file.py) and the paper's reference
numbers (paper.py). Imports nothing else from runtime: every other subpackage may import it.
"""
from .checks import (  # noqa: F401
    MAX_LAYERS, Issue, SpecValidationError, check, resolve, target_kind, validate,
)
from .experiment import (  # noqa: F401
    ALL_KINDS, APD_ONLY, METHODS, METRIC_METHODS, METRICS, PLOT_METHODS, PLOTS, SPD_ONLY, TARGET_KINDS, Attribution,
    CausalImportance, Data, Decompose, Expectation, Experiment, FaithfulnessWarmup, FileTarget,
    GatedTarget, Losses, Optimizer, Report, ResidMlpTarget, Revive, Schedule, Sweep, SweepAxis, Target, TmsTarget,
    TopK, Training, applies,
)
from .serial import NESTED, from_dict, target_from_dict, to_dict, to_json  # noqa: F401

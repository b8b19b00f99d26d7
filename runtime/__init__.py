"""apdspec runtime: target models, data, target training and parameter decompositions (APD, SPD)
on NumPy + HIPS autograd.

Needs only numpy and autograd (matplotlib and scipy are imported lazily where used). The six layers,
bottom to top; each imports only those below it (tests/runtime/test_layout.py checks this):

    spec      the experiment description (dataclasses, registries, validation, JSON, target files)
    engine    models, data, target training, the decomposition loop
    store     target files, .npz arrays, the run directory
    analysis  metrics and measures of a finished decomposition
    report    report.md, plots, progress line
    pipeline  run / run_to_dir, restarts (and pick: restarts over finished runs), sweeps, bench

Target kinds (runtime/targets/<kind>/) and decomposition methods (runtime/methods/<method>/) are
slices across the layers; importing this package imports every slice, which registers itself in
the layers' registries (docs/extending.md).
"""
from .spec import (  # noqa: F401
    Data, Decompose, EvalAdversary, Experiment, Expectation, FaithfulnessWarmup, FileTarget, Optimizer, Report, Schedule,
    Sweep, SweepAxis, Training, check, resolve, validate,
)
from .spec.knots import Knots  # noqa: F401
from . import methods, targets  # noqa: F401,E402  (the slices register themselves)
from .spec.registry import public_classes  # noqa: E402

# every kind's target class and every method's settings classes are public here (TmsTarget,
# ApdDecompose, TopK, ...): a new slice's appear without editing this file
globals().update(public_classes())

__version__ = "0.1.0"
from .store.rundir import RunResult, load_run  # noqa: F401,E402
from .pipeline.runner import run, run_to_dir  # noqa: F401,E402
from .pipeline.sweep import points, run_sweep  # noqa: F401,E402

__all__ = [
    "Data", "Decompose", "EvalAdversary", "Experiment", "Expectation", "FaithfulnessWarmup", "FileTarget", "Knots",
    "Optimizer", "Report", "Schedule", "Sweep",
    "SweepAxis", "Training", "check", "resolve", "validate", "RunResult", "load_run", "run", "run_to_dir", "points",
    "run_sweep", *public_classes(),
]

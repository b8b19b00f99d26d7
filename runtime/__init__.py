"""apdspec runtime: target models, data, target training and APD on NumPy + HIPS autograd.

Needs only numpy and autograd (matplotlib is imported lazily by the plotting code). Subpackages,
bottom to top; each imports only those below it (tests/test_layout.py checks this):

    spec      the experiment description (dataclasses, validation, JSON, target-file metadata)
    engine    models, data, target training, APD components, attributions, losses, the train loop
    store     target files, .npz arrays, the run directory
    analysis  metrics and measures of a finished decomposition
    report    report.md, plots, progress line
    pipeline  run / run_to_dir, restarts (and pick: restarts over finished runs), sweeps, bench
"""
from .spec import (  # noqa: F401
    Attribution, CausalImportance, Data, Decompose, Experiment, Expectation, FileTarget, GatedTarget, Losses, Optimizer, Report,
    ResidMlpTarget, Schedule, Sweep, SweepAxis, TmsTarget, TopK, Training, check, resolve, validate,
)

__version__ = "0.1.0"
from .store.rundir import RunResult, load_run  # noqa: F401,E402
from .pipeline.runner import run, run_to_dir  # noqa: F401,E402
from .pipeline.sweep import points, run_sweep  # noqa: F401,E402

__all__ = [
    "Attribution", "CausalImportance", "Data", "Decompose", "Experiment", "Expectation", "FileTarget", "GatedTarget", "Losses",
    "Optimizer", "Report", "ResidMlpTarget", "Schedule", "Sweep", "SweepAxis", "TmsTarget", "TopK", "Training",
    "check", "resolve", "validate", "RunResult", "load_run", "run", "run_to_dir", "points", "run_sweep",
]

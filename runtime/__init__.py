"""apdspec runtime: target models, data, target training and APD on NumPy + HIPS autograd.

Needs only numpy and autograd (matplotlib is imported lazily by the plotting code).
"""
from .spec import (  # noqa: F401
    Attribution, Data, Decompose, Experiment, Expectation, FileTarget, GatedTarget, Losses, Optimizer,
    Report, ResidMlpTarget, Schedule, Sweep, SweepAxis, TmsTarget, TopK, Training, check, resolve, validate,
)

__version__ = "0.1.0"
from .runner import RunResult, load_run, run, run_to_dir  # noqa: F401,E402
from .sweep import points, run_sweep  # noqa: F401,E402

__all__ = [
    "Attribution", "Data", "Decompose", "Experiment", "Expectation", "FileTarget", "GatedTarget", "Losses",
    "Optimizer", "Report", "ResidMlpTarget", "Schedule", "Sweep", "SweepAxis", "TmsTarget", "TopK", "Training",
    "check", "resolve", "validate", "RunResult", "load_run", "run", "run_to_dir", "points", "run_sweep",
]

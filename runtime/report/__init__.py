"""The report of a run: report.md (document.py), plots (plots*.py, matplotlib imported lazily) and
the terminal progress line (progress.py). May import every subpackage except pipeline.
"""
from .document import render  # noqa: F401
from . import causal_plots  # noqa: F401,E402  (registers the causal-importance methods' plot)

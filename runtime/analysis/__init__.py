"""What a decomposition found: evaluation of a finished run against its target.

core (RunAnalysis: cached forward passes, masks and ablations), tms / resid / gated (per-target
measures), diagnostics (what the report says went wrong), metrics (the METRICS registry's values)
and expectations (the spec's `expect` clauses); spd (SpdAnalysis: the same measures of an SPD run,
with causal importances in place of top-k). May import runtime.spec, engine and store.
"""
from . import spd  # noqa: F401  (registers SpdAnalysis with core.analysis_for)

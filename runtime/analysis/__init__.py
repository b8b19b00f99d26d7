"""What a decomposition found: evaluation of a finished run against its target.

core (RunAnalysis: cached forward passes, masks and ablations), tms / resid / gated (per-target
measures), diagnostics (what the report says went wrong), metrics (the METRICS registry's values)
and expectations (the spec's `expect` clauses). May import runtime.spec, engine and store.
"""

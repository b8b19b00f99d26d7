"""What a decomposition found: evaluation of a finished run against its target.

core (RunAnalysis: the method's view of the run, cached; KindAnalysis: a kind's measures), metrics
(the values of the declared metrics, COMPUTED: what the slices register), scrub (the scrubbing
test's masks), diagnostics (what the report says went wrong) and expectations (the spec's `expect`
clauses). The methods' and kinds' own analyses live in their slices (runtime/methods/<method>/
analysis.py, runtime/targets/<kind>/analysis.py). May import runtime.spec, engine and store.
"""

"""What a decomposition found: evaluation of a finished run against its target.

core (RunAnalysis: the method's view of the run, cached; KindAnalysis: a kind's measures), metrics
(the values of the declared metrics, COMPUTED: what the slices register), scrub (the scrubbing
test's masks), diagnostics (what the report says went wrong), expectations (the spec's `expect`
clauses), and the measures every method gets: causal (the causal-importance methods' analyses),
adversary (the evaluation adversary: adv_recon) and ci_truth (identity / dense CI errors). The methods' and kinds' own analyses live in their slices (runtime/methods/<method>/
analysis.py, runtime/targets/<kind>/analysis.py). May import runtime.spec, engine and store.
"""
from . import adversary, causal, ci_truth  # noqa: F401,E402  (register their metrics)

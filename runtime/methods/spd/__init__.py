"""SPD, Stochastic Parameter Decomposition (Bushnaq, Braun & Sharkey 2025): spec, subcomponents,
causal importances, trainer, analysis, plots."""
from . import spec, paper, train, analysis, plots  # noqa: F401  (each registers itself)
from .spec import CausalImportance, FaithfulnessWarmup, SpdDecompose, SpdLosses  # noqa: F401

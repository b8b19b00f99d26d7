"""SPD, Stochastic Parameter Decomposition (Bushnaq, Braun & Sharkey 2025): spec, subcomponents,
causal importances, trainer, analysis (its plots are the causal-importance methods' shared ones)."""
from . import spec, paper, train, analysis  # noqa: F401  (each registers itself)
from .spec import CausalImportance, FaithfulnessWarmup, SpdDecompose, SpdLosses  # noqa: F401

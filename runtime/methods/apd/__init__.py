"""APD, Attribution-based Parameter Decomposition (Braun et al. 2025): spec, components,
attributions, fused kernels, trainer, analysis, plots."""
from . import spec, paper, train, analysis, plots  # noqa: F401  (each registers itself)
from .spec import ApdDecompose, ApdLosses, Attribution, Revive, TopK  # noqa: F401

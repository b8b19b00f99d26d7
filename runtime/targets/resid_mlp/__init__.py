"""The residual MLP of compressed computation (APD paper §3.2-3.3): spec, model, kernels, analysis, plots."""
from . import spec, model, apd_kernels, spd_kernels, analysis, plots  # noqa: F401  (each registers itself)
from .spec import ResidMlpTarget  # noqa: F401

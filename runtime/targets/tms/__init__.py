"""TMS, the toy model of superposition (APD paper §3.1): spec, model, kernels, analysis, plots."""
from . import spec, model, apd_kernels, spd_kernels, analysis, plots  # noqa: F401  (each registers itself)
from .spec import TmsTarget  # noqa: F401

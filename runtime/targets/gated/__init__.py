"""The hand-coded gated-function network (APD paper App. B.1): spec, model, kernels, analysis, plots."""
from . import spec, model, apd_kernels, analysis, plots  # noqa: F401  (each registers itself)
from .spec import GatedTarget  # noqa: F401

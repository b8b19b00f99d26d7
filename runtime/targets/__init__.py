"""Target kinds, one folder each (docs/extending.md). Importing a kind registers it: this line is
the registry of kinds."""
from . import tms, resid_mlp, gated, deep_linear, mlp  # noqa: F401

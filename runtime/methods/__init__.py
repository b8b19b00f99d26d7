"""Decomposition methods, one folder each (docs/extending.md). Importing a method registers it:
this line is the registry of methods."""
from . import apd, spd, vpd  # noqa: F401

"""A deep linear network: L identity-initialised square layers y = x W_1 ... W_L, trained to
reproduce sparse inputs. Ground truth: in every layer, one rank-one component per input dimension."""
from . import spec, model, analysis  # noqa: F401  (each registers itself)
from .spec import DeepLinearTarget  # noqa: F401

"""A target written as a network in the layer vocabulary (runtime/spec/layers.py): linear layers
(bias, tied, frozen), activations, residual blocks; the decomposed matrices and the ground truth
declared in the spec. A network that is an existing kind runs as that kind (spec.equivalent)."""
from . import spec, model, analysis  # noqa: F401  (each registers itself)
from .spec import GroundTruth, MlpTarget  # noqa: F401

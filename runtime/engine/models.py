"""Target networks, generically: the `Model` interface each kind implements, and the calls the rest
of the runtime makes (they look up the kind's model in registry.MODELS).

Every array carries a leading replicate axis I (independent copies trained as one vectorised
model); activations are (I, B, d). Row-vector convention: a layer maps a -> a @ W.

A kind's forward pass is written once against a `linear(layer, a)` callable that returns the
*pre-bias* layer output; the target model passes plain matmuls (`dense_linear`) and each
decomposition method passes its own masked product. The decomposed uses of weight matrices
(`layers_of`) and the parameter shapes come from the kind's spec (registry.KindSpec), stated once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import autograd.numpy as anp
import numpy as np

from ..spec import Layer, Target, kind_spec  # noqa: F401  (Layer: public here too)
from . import memory
from .gelu import gelu  # noqa: F401  (the targets' GELU: the exact erf form, torch's default)
from .registry import model_of

Params = dict  # name -> array with leading replicate axis


# ------------------------------------------------------------------------------------------
# Activations (where-based ReLU: gradient 0 at 0, as PyTorch's relu)

_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def relu(z):
    if type(z) is np.ndarray:  # plain arrays (no gradient needed): one pass instead of compare + where
        return np.maximum(z, 0.0)
    return anp.where(z > 0, z, 0.0)


def relu_grad(z):
    return (z > 0).astype(z.dtype)


def gelu_grad(z):
    from scipy.special import erf

    z = np.asarray(z)
    cdf = 0.5 * (1.0 + erf(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return (cdf + z * pdf).astype(z.dtype)


ACTIVATIONS = {"relu": (relu, relu_grad), "gelu": (gelu, gelu_grad)}


@dataclass
class Trace:
    """What one forward pass exposes: output, layer inputs (hook_pre), pre-bias layer outputs
    (hook_post) and the pre-activations a derivative needs (e.g. "layers.l", "out")."""

    y: object
    pre: dict
    post: dict
    preact: dict


class Model:
    """A target kind's numerics. Subclasses (runtime/targets/<kind>/model.py) implement `forward`
    and override the hooks whose defaults do not fit; one instance per kind in registry.MODELS."""

    kind = ""

    def forward(self, arch: Any, params: Params, x, linear: Callable, pre: dict, post: dict, preact: dict):
        """The output on x (I, B, n_in); `linear(name, a)` is each decomposed layer's pre-bias
        product (it records `pre` / `post` itself); fill `preact` with what derivatives need."""
        raise NotImplementedError

    def init(self, arch: Any, replicates: int, rng: np.random.Generator, dtype=np.float32) -> Params:
        """Fresh trainable parameters (and fixed ones), as float64 draws cast to `dtype`."""
        raise TypeError(f"{type(self).__name__} does not initialise {arch.kind} targets: they are built by `build`")

    def build(self, exp: Any, dtype: Any) -> tuple[Params, dict] | None:
        """(params, extras) of a hand-coded target, or None for a kind that is trained."""
        return None

    def trainable(self, arch: Any) -> tuple[str, ...]:
        """Parameters target training updates (the rest stay exactly fixed)."""
        raise NotImplementedError

    def n_inputs(self, arch: Any) -> int:
        return kind_spec(arch.kind).inputs(arch)

    def n_outputs(self, arch: Any) -> int:
        return kind_spec(arch.kind).outputs(arch)

    def activation(self, arch: Any) -> tuple[Callable, Callable]:
        """(act, act') of the hidden nonlinearity."""
        return relu, relu_grad

    def sample(self, arch: Any, data: Any, shape: tuple[int, int], rng: np.random.Generator, dtype) -> np.ndarray:
        """A batch of inputs (shape + (n_in,)); default: sparse features (data.sparse_features)."""
        from .data import sparse_features, value_range

        return sparse_features(kind_spec(arch.kind).features(arch), data, value_range(arch, data), shape, rng, dtype)

    def active(self, arch: Any, x: np.ndarray) -> np.ndarray:
        """(I, B) samples with an active feature."""
        return np.any(x != 0, axis=-1)

    def labels(self, arch: Any, train: Any, x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        """Training labels of inputs x, in x's dtype."""
        raise NotImplementedError(f"{arch.kind} targets have no training labels")

    def true_labels(self, arch: Any, extras: dict, x: np.ndarray) -> np.ndarray | None:
        """The labels of a hand-coded target (from its extras), None when they are unknown; trained
        kinds take theirs from `labels`."""
        return None

    def train_loss(self, arch: Any, params: Params, x, labels, importance):
        """(I,) training loss per replicate, mean over batch and outputs (autograd-traceable)."""
        y = target_forward(arch, params, x).y
        return anp.mean((y - labels) ** 2 * importance, axis=(1, 2))

    def embedding(self, arch: Any) -> str | None:
        """The fixed parameter the first decomposed matrix reads the input through (x @ W_E), or
        None when it reads x itself: methods may fold it into their first factor."""
        return None

    def zero_input_inert(self, arch: Any) -> bool:
        """True if an all-zero input row has zero gradient attributions and contributes exactly
        nothing to any decomposition loss term whatever the mask (then it can be dropped)."""
        return False

    def forward_floats(self, arch: Any) -> int:
        """Floats per sample that one forward pass computes (the memory estimate, engine/memory.py):
        by default its input and output and every decomposed layer's input and output; a kind whose
        pass computes wide intermediates that are not decomposed says more."""
        return self.n_inputs(arch) + self.n_outputs(arch) + sum(l.d_in + l.d_out for l in layers_of(arch))

    def memory_parts(self, exp: Any, arch: Any) -> list:
        """The target's parts of a run's memory (engine/memory.py): its parameters, in every phase,
        and, when the run trains it, target training: the working copy of the parameters, their
        gradients and Adam moments, and a batch through the forward and backward pass."""
        from ..spec import FileTarget

        w, I = memory.itemsize(exp), exp.replicates
        every, trainable = target_floats(arch)
        parts = [memory.Part("target parameters", w * I * every, memory.ALL)]
        if exp.train is None or isinstance(exp.target, FileTarget) or not kind_spec(arch.kind).trained:
            return parts
        B = exp.train.batch
        batch = I * B * (self.n_inputs(arch) + self.n_outputs(arch))  # inputs and labels
        return parts + [
            memory.Part("a working copy of the target, gradients and 2 Adam moments",
                        w * I * (every + 3 * trainable), ("target training",)),
            memory.Part("a training batch through forward and backward",
                        w * (batch + memory.TAPE * I * B * self.forward_floats(arch)), ("target training",)),
        ]


# ------------------------------------------------------------------------------------------
# The calls the layers make


def target_floats(arch: Target) -> tuple[int, int]:
    """(all, trainable) floats of one replicate of the target's parameters (the kind's shapes)."""
    req, opt = kind_spec(arch.kind).param_shapes(arch)
    sizes = {name: int(np.prod(shape, dtype=np.float64)) for name, shape in {**req, **opt}.items()}
    trained = set(trainable_target_params(arch)) if kind_spec(arch.kind).trained else set()
    return sum(sizes.values()), sum(v for k, v in sizes.items() if k in trained)


def layers_of(arch: Target) -> tuple[Layer, ...]:
    """Decomposed layers in forward order (tied uses included)."""
    return kind_spec(arch.kind).matrices(arch)


def decomposed_params(arch: Target) -> tuple[str, ...]:
    """Names of the parameters decomposed (each once, tied uses folded in)."""
    seen: list[str] = []
    for layer in layers_of(arch):
        if layer.param not in seen:
            seen.append(layer.param)
    return tuple(seen)


def param_shapes(arch: Target) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of every decomposed parameter."""
    return {layer.param: (layer.d_in, layer.d_out) for layer in layers_of(arch) if not layer.transposed}


def n_decomposed_weights(arch: Target) -> int:
    """N of notes §4.2: decomposed weights per replicate, tied uses counted again (TMS 2FH)."""
    return sum(layer.d_in * layer.d_out for layer in layers_of(arch))


def n_inputs(arch: Target) -> int:
    """Width of the model input x."""
    return model_of(arch).n_inputs(arch)


def n_outputs(arch: Target) -> int:
    """d_L, the width of the model output."""
    return model_of(arch).n_outputs(arch)


def activation(arch: Target) -> tuple[Callable, Callable]:
    """(act, act') of the hidden nonlinearity."""
    return model_of(arch).activation(arch)


def forward(arch: Target, params: Params, x, linear: Callable) -> Trace:
    """Run the architecture on x (I, B, n_in) with `linear(layer_name, a) -> a @ W (pre-bias)`.

    `params` supplies the frozen parameters (biases, embeddings)."""
    pre, post, preact = {}, {}, {}

    def lin(name, a):
        pre[name] = a
        h = linear(name, a)
        post[name] = h
        return h

    y = model_of(arch).forward(arch, params, x, lin, pre, post, preact)
    return Trace(y, pre, post, preact)


def dense_linear(params: Params, arch: Target) -> Callable:
    """`linear` for the target itself: plain matmuls with its own weights."""
    by_name = {layer.name: layer for layer in layers_of(arch)}

    def linear(name, a):
        layer = by_name[name]
        W = params[layer.param]
        if layer.transposed:
            W = anp.swapaxes(W, -1, -2)
        return anp.matmul(a, W)

    return linear


def target_forward(arch: Target, params: Params, x) -> Trace:
    return forward(arch, params, x, dense_linear(params, arch))


def init_target(arch: Target, replicates: int, rng: np.random.Generator, dtype=np.float32) -> Params:
    """Fresh target parameters (the kind's init; PyTorch fan rules, per replicate: fans never
    depend on the replicate count)."""
    return model_of(arch).init(arch, replicates, rng, dtype)


def trainable_target_params(arch: Target) -> tuple[str, ...]:
    """Parameters trained during target training."""
    return model_of(arch).trainable(arch)


def random_params(arch: Target, replicates: int, rng: np.random.Generator, dtype=np.float64,
                  scale: float = 0.5) -> Params:
    """Random parameters of the right shapes for any architecture (tests and benchmarks), every
    parameter its kind states (optional ones too), in that order: matrices N(0, scale^2), vectors
    N(0, 0.01)."""
    from ..spec.target_file import EXTRA_PREFIX

    req, opt = kind_spec(arch.kind).param_shapes(arch)
    p = {name: rng.normal(0, scale if len(shape) > 1 else 0.1, (replicates,) + tuple(shape))
         for name, shape in {**req, **opt}.items() if not name.startswith(EXTRA_PREFIX)}
    return {k: v.astype(dtype) for k, v in p.items()}

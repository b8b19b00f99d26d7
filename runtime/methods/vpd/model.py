"""VPD's decomposition of a target: parameters, causal importances, faithfulness and the masked
forward passes (notes §1-§3).

A *site* is one use of a weight matrix in the forward pass (`models.layers_of`: TMS's tied W and
W^T are two sites, "W" and "W.T", with their own subcomponents, as in SPD). Storage, leading
replicate axis I, row-vector convention a -> a @ W (W: d_in x d_out):

    "<site>.V"        (I, d_in, C)      column c and row c of U form subcomponent c = outer(V_c, U_c)
    "<site>.U"        (I, C, d_out)
    "<site>.ci.w<j>"  (I, fan_in, fan_out), "<site>.ci.b<j>" (I, fan_out)   the CI MLP's layers j = 0..

Site output under masks (notes §1), Delta = W - V U (the delta channel; its gradient reaches V, U):

    y = ((a @ V) * mask) @ U + (a @ Delta) * delta_mask      on a routed row
    y = a @ W                                                  on a row the site is not routed on

Every pass is `models.forward(arch, target, x, linear)` with a masked `linear`, so any target kind
the engine runs works. The causal importances read each site's *clean* input activation (the
target's own forward): d_in -> Linear -> GELU (exact erf) -> ... -> Linear -> C preactivations z,
squashed twice (squash.py). Reconstruction is always on the model's final output: the MSE against
the clean target output, mean over rows and outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp, primitive

from ...engine.models import Layer, Params, forward, layers_of, target_forward
from .spec import VpdDecompose
from .ci_mlp import ci_mlp
from .site import site_output
from .squash import lower_leaky, upper_leaky

VpdParams = dict  # "<site>.V" / ".U" / ".ci.*" -> array with a leading replicate axis


@primitive
def scale_grad(x, c: float):
    """Identity whose backward multiplies the cotangent by c: a loss term's coefficient applied to
    the gradient of the parameters it reaches through x, not to anything else in the same graph."""
    return x


defvjp(scale_grad, lambda ans, x, c: lambda g: c * g)


@dataclass
class RowDraws:
    """The random choices of one step's merged reconstruction (notes §1, §3), per replicate and row:
    `adversarial` (I, B) rows that use the persistent sources on every site; `routes` {site: (I, B)}
    sites a stochastic row masks; `stochastic` {site: (I, B, C+1)} its fresh U[0, 1] sources."""

    adversarial: np.ndarray
    routes: dict
    stochastic: dict


class VpdModel:
    """The sites of `arch`, the frozen target weights they decompose, and VPD's passes over them."""

    def __init__(self, arch, target: Params, dec: VpdDecompose):
        self.arch, self.target, self.dec = arch, target, dec
        self.ci_cfg = dec.causal_importance
        self.sites: tuple[Layer, ...] = layers_of(arch)
        self.names = tuple(s.name for s in self.sites)
        self.C = {s.name: dec.components for s in self.sites}
        self.delta = dec.delta_channel
        self.W = {s.name: self._weight(s) for s in self.sites}
        self.W_sq = {k: np.sum(np.asarray(W, dtype=np.float64) ** 2, axis=(1, 2)).astype(W.dtype)
                     for k, W in self.W.items()}

    def _weight(self, site: Layer) -> np.ndarray:
        W = np.asarray(self.target[site.param])
        return np.ascontiguousarray(np.swapaxes(W, -1, -2)) if site.transposed else W

    def channels(self, name: str) -> int:
        """Source channels of a site: C, plus the delta channel."""
        return self.C[name] + int(self.delta)

    # -- parameters
    def init_params(self, replicates: int, rng: np.random.Generator, dtype=np.float32) -> VpdParams:
        """Fresh V, U and CI MLPs. The notes give no init. V ~ N(0, gain^2/d_out), U ~ N(0, 1/C)
        (this repo's SPD init, gain = decompose.init_scale, so V U starts with entries of variance
        gain^2/d_out for any C; the faithfulness warmup then fits it to W). CI MLPs: zero biases,
        weights fan-in scaled as the authors' CI functions (Kaiming: N(0, 2/fan_in) into a GELU,
        N(0, 1/fan_in) into the output)."""
        I, p = replicates, {}
        gain = 1.0 if self.dec.init_scale is None else self.dec.init_scale
        for s in self.sites:
            C = self.C[s.name]
            p[f"{s.name}.V"] = rng.normal(0.0, gain / math.sqrt(s.d_out), (I, s.d_in, C))
            p[f"{s.name}.U"] = rng.normal(0.0, 1.0 / math.sqrt(C), (I, C, s.d_out))
            widths = (s.d_in,) + self.ci_cfg.widths + (C,)
            for j, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
                gain = 2.0 if j < len(widths) - 2 else 1.0
                p[f"{s.name}.ci.w{j}"] = rng.normal(0.0, math.sqrt(gain / fan_in), (I, fan_in, fan_out))
                p[f"{s.name}.ci.b{j}"] = np.zeros((I, fan_out))
        return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in p.items()}

    def component_keys(self) -> tuple[str, ...]:
        return tuple(f"{n}.{f}" for n in self.names for f in ("V", "U"))

    def ci_keys(self) -> tuple[str, ...]:
        n_layers = len(self.ci_cfg.widths) + 1
        return tuple(f"{n}.ci.{f}{j}" for n in self.names for j in range(n_layers) for f in ("w", "b"))

    # -- passes
    def clean(self, x: np.ndarray):
        """The frozen target's forward on x: `.y` the reconstruction target, `.pre` the site inputs."""
        return target_forward(self.arch, self.target, x)

    def ci_preacts(self, params: VpdParams, pre: dict) -> dict:
        """CI preactivations z {site: (I, B, C)} from the clean site inputs `pre` {site: (I, B, d_in)}."""
        n_layers = len(self.ci_cfg.widths) + 1
        return {name: ci_mlp(pre[name], self.ci_cfg.activation,
                             *(params[f"{name}.ci.{f}{j}"] for j in range(n_layers) for f in ("w", "b")))
                for name in self.names}

    def ci(self, params: VpdParams, pre: dict) -> tuple[dict, dict]:
        """(lower CI: feeds the masks, upper CI: feeds the sparsity penalty), {site: (I, B, C)} each."""
        z = self.ci_preacts(params, pre)
        ci = self.ci_cfg
        return ({k: lower_leaky(v, ci.lower_leak) for k, v in z.items()},
                {k: upper_leaky(v, ci.upper_leak) for k, v in z.items()})

    def faithfulness(self, params: VpdParams):
        """mean_s ||W_s - V_s U_s||_F^2 / ||W_s||_F^2 per replicate (I,)."""
        total = 0.0
        for name in self.names:
            d = self.W[name] - anp.matmul(params[f"{name}.V"], params[f"{name}.U"])
            total = total + anp.sum(d * d, axis=(1, 2)) / self.W_sq[name]
        return total / len(self.names)

    def masked_output(self, params: VpdParams, x: np.ndarray, masks: dict, delta_masks: dict | None,
                      routes: dict | None = None):
        """The model output (I, B, d_out) with every site's subcomponents scaled by masks[s] (I, B,
        C) and its delta channel by delta_masks[s] (I, B); `routes` {site: (I, B) bool} picks the rows
        that take the masked path at each site (None: every row), the others use the frozen W."""

        def linear(name, a):
            V, U, W = params[f"{name}.V"], params[f"{name}.U"], self.W[name]
            out = anp.matmul(anp.matmul(a, V) * masks[name], U)
            if delta_masks is not None:
                out = out + anp.matmul(a, W - anp.matmul(V, U)) * anp.expand_dims(delta_masks[name], -1)
            if routes is not None:
                out = anp.where(routes[name][..., None], out, anp.matmul(a, W))
            return out

        return forward(self.arch, self.target, x, linear).y

    def sourced_output(self, params: VpdParams, x: np.ndarray, ci_lower: dict, sources: dict,
                       routes: dict | None = None):
        """The model output with every site's masks built from its importances and `sources` {site:
        (I, B, C + delta)} (engine/masks.py's rule), on the rows `routes` picks (None: every row):
        `masked_output`'s values through the one-primitive site kernel (site.py)."""

        def linear(name, a):
            return site_output(a, params[f"{name}.V"], params[f"{name}.U"], self.W[name], ci_lower[name],
                               sources[name], None if routes is None else routes[name], self.delta)

        return forward(self.arch, self.target, x, linear).y

    def adversarial_output(self, params: VpdParams, x: np.ndarray, ci_lower: dict, sources: dict):
        """Every site masked with `sources` {site: (I, B, C+1)} on every row."""
        return self.sourced_output(params, x, ci_lower, sources)

    def merged_output(self, params: VpdParams, x: np.ndarray, ci_lower: dict, persistent: dict | None,
                      draws: RowDraws):
        """The merged stochastic/adversarial pass (notes §3): adversarial rows take the persistent
        sources on every site; stochastic rows their fresh sources on the sites they route (every
        row, without an adversary: `persistent` None)."""
        adv = draws.adversarial
        sources, routes = {}, {}
        for name in self.names:
            sources[name] = draws.stochastic[name] if persistent is None else \
                anp.where(adv[..., None], persistent[name], draws.stochastic[name])
            routes[name] = adv | draws.routes[name]
        return self.sourced_output(params, x, ci_lower, sources, routes)


@dataclass
class Rows:
    """The rows a step works on when all-zero input rows are dropped (engine/rows.py): `idx` (I, R)
    into the batch of `B` rows, `weights` (I, R) of each kept row in a mean over all B (the last, an
    all-zero row, stands for the rows dropped), and the full batch's adversarial / stochastic row
    counts (I,) (the denominators of recon_adversarial and recon_stochastic)."""

    idx: np.ndarray
    B: int
    weights: np.ndarray
    n_adversarial: np.ndarray
    n_stochastic: np.ndarray


@primitive
def take_rows(a, idx):
    """a (I, B, K) -> (I, R, K): the rows idx (I, R). Its backward writes the cotangent back into
    zeros by assignment: rows repeat only among all-zero input rows, whose cotangent is exactly 0
    (nothing about them depends on the sources), so assignment equals accumulation here."""
    return np.take_along_axis(a, idx[..., None], axis=1)


def _take_rows_vjp(ans, a, idx):
    def vjp(g):
        out = np.zeros(np.shape(a), dtype=np.result_type(g))
        np.put_along_axis(out, idx[..., None], g, axis=1)
        return out

    return vjp


defvjp(take_rows, _take_rows_vjp)


def select_rows(draws: RowDraws, idx: np.ndarray) -> RowDraws:
    """The draws of the kept rows."""
    return RowDraws(np.take_along_axis(draws.adversarial, idx, axis=1),
                    {k: np.take_along_axis(v, idx, axis=1) for k, v in draws.routes.items()},
                    {k: np.take_along_axis(v, idx[..., None], axis=1) for k, v in draws.stochastic.items()})


def draw_rows(model: VpdModel, rng: np.random.Generator, replicates: int, batch: int, adv_fraction: float,
              dtype) -> RowDraws:
    """One step's row choices, in a fixed order from `rng`: adversarial rows ~ Bernoulli(adv_fraction);
    routing ("uniform_k_subset": k ~ U{1..n_sites}, then the first k sites of a uniformly random order,
    i.e. a uniform k-subset; "all": every site); the fresh sources U[0, 1] of every site."""
    I, B, n = replicates, batch, len(model.names)
    adversarial = rng.random((I, B)) < adv_fraction
    if model.dec.routing == "all":
        chosen = np.ones((I, B, n), dtype=bool)
    else:
        k = rng.integers(1, n + 1, size=(I, B))
        rank = np.argsort(np.argsort(rng.random((I, B, n)), axis=-1), axis=-1)
        chosen = rank < k[..., None]
    stochastic = {name: rng.random((I, B, model.channels(name)), dtype=np.dtype(dtype)) for name in model.names}
    return RowDraws(adversarial, {name: chosen[..., j] for j, name in enumerate(model.names)}, stochastic)


def row_errors(y, y_ref):
    """Squared output error per replicate and row (I, B), mean over outputs."""
    d = y - y_ref
    return anp.mean(d * d, axis=2)


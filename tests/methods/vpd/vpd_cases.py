"""Shared fixtures of the VPD tests: tiny targets of every kind, a float64 problem with fixed
draws, and central finite differences."""
from __future__ import annotations

import dataclasses

import numpy as np

from runtime.engine.models import random_params
from runtime.methods.vpd.model import VpdModel, draw_rows
from runtime import Experiment, FaithfulnessWarmup, ResidMlpTarget, TmsTarget, VpdDecompose

ARCHS = {
    "tms": TmsTarget(features=5, hidden=2),
    "tms_id": TmsTarget(features=5, hidden=2, hidden_layers=1),
    "resid": ResidMlpTarget(features=4, d_embed=6, d_mlp=3),
}

# short names for the settings the tests vary -> (block, field) of VpdDecompose ("" = its own field)
_PATHS = {"C": ("", "components"), "ci_hidden": ("causal_importance", "widths"),
          "lower_leak": ("causal_importance", "lower_leak"), "upper_leak": ("causal_importance", "upper_leak"),
          "normalize_at_one": ("loss", "normalize_at_one"), "source_warmup": ("adversary", "warmup"),
          "routing": ("", "routing"), "delta_channel": ("", "delta_channel"), "n_warmup": ("adversary", "ascents")}


def vpd(base: VpdDecompose | None = None, **kw) -> VpdDecompose:
    """VpdDecompose with the short-named settings of _PATHS changed, and faithfulness_warmup_steps
    (0: off; else that many steps at the toys' lr 1e-2, weight decay 0)."""
    d = base or VpdDecompose()
    if "faithfulness_warmup_steps" in kw:
        n = kw.pop("faithfulness_warmup_steps")
        d = dataclasses.replace(d, faithfulness_warmup=FaithfulnessWarmup(n, 1e-2, 0.0) if n else None)
    for key, value in kw.items():
        block, name = _PATHS[key]
        if block:
            d = dataclasses.replace(d, **{block: dataclasses.replace(getattr(d, block), **{name: value})})
        else:
            d = dataclasses.replace(d, **{name: value})
    return d


SMALL = vpd(C=3, ci_hidden=(4,), faithfulness_warmup_steps=0)


def tms_pentagon(bias: float = -0.3, dtype=np.float32) -> dict:
    """A TMS 5-2 target by hand: W's rows are 5 unit vectors 72 degrees apart, b = bias."""
    angles = 2 * np.pi * np.arange(5) / 5
    W = np.stack([np.cos(angles), np.sin(angles)], axis=-1)[None]
    return {"W": W.astype(dtype), "b": np.full((1, 5), bias, dtype=dtype)}


@dataclasses.dataclass
class Case:
    model: VpdModel
    comps: dict
    x: np.ndarray
    tgt: object
    draws: object
    sources: dict


def case(arch_key: str, settings: VpdDecompose = SMALL, I: int = 2, B: int = 7, seed: int = 0) -> Case:
    """A float64 problem: random target, subcomponents and CI MLP (biases too), dense inputs,
    persistent sources in (0, 1) and one step's draws with about half the rows adversarial."""
    rng = np.random.default_rng(seed)
    arch = ARCHS[arch_key]
    target = random_params(arch, I, rng, np.float64)
    model = VpdModel(arch, target, settings)
    comps = model.init_params(I, rng, np.float64)
    for k in comps:
        if ".ci.b" in k:
            comps[k] = rng.normal(0.0, 0.5, comps[k].shape)
    x = rng.uniform(0.05, 1.0, (I, B, target["W"].shape[1] if "W" in target else arch.features))
    tgt = model.clean(x)
    draws = draw_rows(model, rng, I, B, 0.5, np.float64)
    sources = {n: rng.uniform(0.05, 0.95, (I, B, model.channels(n))) for n in model.names}
    return Case(model, comps, x, tgt, draws, sources)


def run_exp(dec: VpdDecompose = SMALL, steps: int = 50, batch: int = 16, replicates: int = 1, dtype: str = "float64",
            seed: int = 0, arch=None) -> Experiment:
    """An experiment around `dec` (what the trainer takes): its steps, batch and seed set."""
    return Experiment(target=arch or ARCHS["tms"], replicates=replicates, dtype=dtype, seed=seed,
                      decompose=dataclasses.replace(dec, steps=steps, batch=batch, seed=seed))


def fd_grad(f, params: dict, keys, h: float = 1e-6) -> dict:
    """Central differences of the scalar f(params) w.r.t. every entry of params[k], k in keys."""
    out = {}
    for k in keys:
        g = np.zeros_like(params[k])
        for idx in np.ndindex(params[k].shape):
            p = {**params, k: params[k].copy()}
            p[k][idx] += h
            up = f(p)
            p[k][idx] -= 2 * h
            g[idx] = (up - f(p)) / (2 * h)
        out[k] = g
    return out


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))

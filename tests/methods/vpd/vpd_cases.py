"""Shared fixtures of the VPD tests: tiny targets of every kind, a float64 problem with fixed
draws, and central finite differences."""
from __future__ import annotations

import dataclasses

import numpy as np

from runtime.engine.models import random_params
from runtime.methods.vpd.model import VpdModel, draw_rows
from runtime.methods.vpd.settings import VpdRun, VpdSettings
from runtime.spec import ResidMlpTarget, TmsTarget

ARCHS = {
    "tms": TmsTarget(features=5, hidden=2),
    "tms_id": TmsTarget(features=5, hidden=2, hidden_layers=1),
    "resid": ResidMlpTarget(features=4, d_embed=6, d_mlp=3),
}

SMALL = VpdSettings(C=3, ci_hidden=(4,), faithfulness_warmup_steps=0)


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


def case(arch_key: str, settings: VpdSettings = SMALL, I: int = 2, B: int = 7, seed: int = 0) -> Case:
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


def small_run(settings: VpdSettings = SMALL, **kw) -> VpdRun:
    return VpdRun(settings=settings, **{"steps": 50, "batch": 16, "dtype": "float64", **kw})


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

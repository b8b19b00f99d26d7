"""Restarts: several decomposition inits per replicate; keep the one with the best held-out score.

APD's loss has local minima in which a feature is split over two components while two others
share one (TMS 5-2: a quarter to a half of inits end there, docs/method.md). Those minima are not
worse by the APD loss itself (their Schatten term is lower), but their top-k reconstruction is
clearly worse. So `decompose.restarts = R` trains R inits of every replicate as one vectorised
model of I*R instances and keeps, per replicate, the init whose batch top-k APD output is closest
to the target output on fresh batches. No ground truth enters the choice, as in k-means restarts.

Instance layout: replicate i, restart r is instance i*R + r (the target is repeated R times).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..engine.decompose import Decomposition
from ..spec import Experiment, Report

def widened(exp: Experiment) -> Experiment:
    """What one training step of `exp` trains: I*R replicates of one init each, with no report
    (the wide run is scored by `select`, not reported). Also what `bench` times."""
    R = exp.decompose.restarts
    return dataclasses.replace(exp, replicates=exp.replicates * R, report=Report(metrics=(), plots=()),
                               decompose=dataclasses.replace(exp.decompose, restarts=1))


def expand(exp: Experiment, target: dict, extras: dict) -> tuple[Experiment, dict, dict]:
    """The experiment, target params and extras for I*R instances (replicate-major)."""
    R = exp.decompose.restarts
    rep = lambda d: {k: np.repeat(np.asarray(v), R, axis=0) for k, v in d.items()}  # noqa: E731
    return widened(exp), rep(target), rep(extras)


def scores(result: Any, seed: int | None = None) -> np.ndarray:
    """(I*R,) selection score per instance, lower is better: the method's held-out score (its
    analysis' `restart_scores`: APD's held-out batch top-k MSE against the target output, SPD's
    held-out SPD loss). No ground truth enters. The held-out batches come from `seed`'s selection
    stream (default decompose.seed): runs scored with one seed are scored on the same batches (pick.py)."""
    from ..analysis.core import ANALYSES

    return ANALYSES[result.experiment.decompose.method](result).restart_scores(seed)


def criterion(exp: Experiment) -> str:
    """What `scores` measures for `exp`, as summary.json's restarts record names it."""
    from ..analysis.core import ANALYSES

    return ANALYSES[exp.decompose.method].criterion_of(exp)


def choose(score: np.ndarray, replicates: int, restarts: int) -> np.ndarray:
    """(I,) instance index of the best restart of every replicate (lowest score; first on ties)."""
    s = np.asarray(score, dtype=np.float64).reshape(replicates, restarts)
    s = np.where(np.isnan(s), np.inf, s)
    return np.arange(replicates) * restarts + np.argmin(s, axis=1)


def select(wide_result: Any, replicates: int, restarts: int) -> tuple[Decomposition, dict]:
    """(the kept decomposition, the record of the choice for summary.json) of a wide run."""
    score = scores(wide_result)
    chosen = choose(score, replicates, restarts)
    record = {"restarts": restarts, "criterion": criterion(wide_result.experiment),
              "scores": score.reshape(replicates, restarts).tolist(),
              "chosen": [int(c) % restarts for c in chosen]}
    return take(wide_result.decomposition, chosen), record


def take(dec: Decomposition, idx: np.ndarray) -> Decomposition:
    """The decomposition restricted to instances `idx`, its per-replicate loss history too."""
    comps = {k: np.ascontiguousarray(v[idx]) for k, v in dec.comps.items()}
    history = []
    for entry in dec.history:
        e = {k: v for k, v in entry.items() if not k.endswith("/replicates")}
        for k, v in entry.items():
            if k.endswith("/replicates"):
                kept = [v[j] for j in idx]
                e[k[: -len("/replicates")]] = float(np.mean(kept))
                if len(idx) > 1:
                    e[k] = kept
        history.append(e)
    where = {int(j): n for n, j in enumerate(idx)}  # revival events of kept instances, renumbered
    revivals = [dict(ev, replicate=where[ev["replicate"]]) for ev in dec.revivals if ev["replicate"] in where]
    return dataclasses.replace(dec, comps=comps, history=history, revivals=revivals)

"""Input batches and labels (notes §2, §1.2).

Batches are (I, B, n_in): one independent draw per replicate. Randomness comes only from the
Generator passed in. Uniform values are drawn in float64 and then cast, so float32 and float64
runs with the same seed see the same data up to rounding; they are drawn and cast a piece at a time
(engine/draws.py), so a batch exists only in the run's dtype.
"""
from __future__ import annotations

import math

import numpy as np

from . import draws
from ..spec import Data, Target, Training, kind_spec
from .registry import model_of


def value_range(arch: Target, data: Data) -> tuple[float, float]:
    """data.values, or the kind's default that spec.resolve would fill in."""
    if data.values is not None:
        return float(data.values[0]), float(data.values[1])
    lo, hi = kind_spec(arch.kind).default_values(arch)
    return float(lo), float(hi)


def _uniform(rng: np.random.Generator, lo: float, hi: float, shape, dtype) -> np.ndarray:
    def values(start: int, n: int) -> np.ndarray:
        u = rng.random(n)
        if (lo, hi) != (0.0, 1.0):  # lo + (hi - lo) * u, in place (on [0, 1) it is u itself, exactly)
            u *= hi - lo
            u += lo
        return u

    v = draws.filled(shape, dtype, values)
    # Casting to float32 can round a value up onto `hi`; keep the interval half-open.
    return np.minimum(v, np.nextafter(np.asarray(hi, dtype), np.asarray(lo, dtype)), out=v)


def _keep(x: np.ndarray, probability: float, rng: np.random.Generator) -> None:
    """Zero each entry of x (in place) unless a uniform draw is below `probability`."""
    flat = x.reshape(-1)
    for s in range(0, flat.size, draws.CHUNK):
        n = min(draws.CHUNK, flat.size - s)
        flat[s:s + n] *= rng.random(n) < probability  # (a value times False: a zero of its sign, as before)


def check_synced(groups, n_features: int) -> None:
    """Synced groups must be disjoint and index existing features."""
    seen: set[int] = set()
    for group in groups:
        for f in group:
            if not 0 <= f < n_features:
                raise ValueError(f"synced feature index {f} is out of range for {n_features} features")
            if f in seen:
                raise ValueError(f"feature {f} is in overlapping synced groups {list(map(list, groups))}")
            seen.add(f)


def _sync(x: np.ndarray, groups, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """Every sample where any member of a group is nonzero gets all members resampled uniformly."""
    for group in groups:
        idx = list(group)
        fires = np.any(x[..., idx] != 0, axis=-1)  # (I, B)
        fresh = _uniform(rng, lo, hi, x.shape[:-1] + (len(idx),), x.dtype)
        x[..., idx] = np.where(fires[..., None], fresh, x[..., idx])
    return x


def _distinct(rng: np.random.Generator, shape: tuple[int, int], F: int, n: int) -> np.ndarray:
    """(shape + (n,)) n distinct features per sample, uniformly: the first n of a random order,
    drawn for a block of samples at a time."""
    chosen = np.empty(shape + (n,), dtype=np.intp)
    flat = chosen.reshape(-1, n)
    step = max(1, draws.CHUNK // F)
    for s in range(0, flat.shape[0], step):
        k = min(step, flat.shape[0] - s)
        flat[s:s + k] = np.argsort(rng.random((k, F)), axis=-1)[:, :n]
    return chosen


def sparse_features(F: int, data: Data, values: tuple[float, float], shape: tuple[int, int], rng, dtype) -> np.ndarray:
    """(shape + (F,)) sparse features: `at_least_zero_active` U[lo,hi) values kept with probability
    p, all-zero samples allowed; `exactly_n_active` n distinct features per sample; synced groups
    fire together."""
    lo, hi = values
    if data.mode == "at_least_zero_active":
        x = _uniform(rng, lo, hi, shape + (F,), dtype)
        _keep(x, data.probability, rng)
        if data.synced:
            check_synced(data.synced, F)
            x = _sync(x, data.synced, lo, hi, rng)
        return x
    if data.mode == "exactly_n_active":
        n = data.n_active
        if not 1 <= n <= F:
            raise ValueError(f"exactly_n_active needs 1 <= n_active <= {F}, got {n}")
        if data.synced:
            # The reference only syncs at_least_zero_active batches; syncing would break "exactly n".
            raise ValueError("synced groups apply to at_least_zero_active data, not exactly_n_active")
        chosen = _distinct(rng, shape, F, n)
        x = np.zeros(shape + (F,), dtype=dtype)
        np.put_along_axis(x, chosen, _uniform(rng, lo, hi, shape + (n,), dtype), axis=-1)
        return x
    raise ValueError(f"unknown data mode {data.mode!r}")


def nonzero_fraction(arch: Target, data: Data) -> float:
    """The expected fraction of samples with an active input under at_least_zero_active data
    without synced groups, 1 - (1 - p)^n_in; 1 otherwise (an upper bound: what the methods'
    costs use for the rows left after all-zero rows are dropped)."""
    if data.mode == "at_least_zero_active" and not data.synced:
        return 1.0 - (1.0 - data.probability) ** model_of(arch).n_inputs(arch)
    return 1.0


def sample_inputs(arch: Target, data: Data, replicates: int, batch: int, rng: np.random.Generator,
                  dtype=np.float32) -> np.ndarray:
    """A fresh batch (I, B, n_in): the kind's inputs (sparse features unless its model says
    otherwise, e.g. the gated network's x and control bits)."""
    if getattr(arch, "kind", "file") == "file":
        raise TypeError(f"cannot sample inputs for {type(arch).__name__}; load the target first")
    return model_of(arch).sample(arch, data, (int(replicates), int(batch)), rng, dtype)


def sample_nonzero(arch: Target, data: Data, replicates: int, batch: int, rng: np.random.Generator,
                   dtype=np.float32, max_draws: int = 1000) -> np.ndarray:
    """Like `sample_inputs`, but every sample has an active feature (rejection sampling; used by
    analyses). Raises RuntimeError if `max_draws` batches are not enough."""
    kept = [[] for _ in range(replicates)]
    counts = np.zeros(replicates, dtype=int)
    for _ in range(max_draws):
        x = sample_inputs(arch, data, replicates, batch, rng, dtype)
        ok = model_of(arch).active(arch, x)
        for i in range(replicates):
            if counts[i] < batch:
                kept[i].append(x[i][ok[i]])
                counts[i] += int(ok[i].sum())
        if np.all(counts >= batch):
            return np.stack([np.concatenate(k)[:batch] for k in kept])
    raise RuntimeError(f"sample_nonzero: fewer than {batch} active samples after {max_draws} batches "
                       f"(probability {data.probability})")


# ------------------------------------------------------------------------------------------
# Labels and feature importance


def feature_importance(n: int, value: float, dtype=np.float64) -> np.ndarray:
    """(n,) weights value**i (1 -> ones; 0 -> [1, 0, 0, ...])."""
    return (float(value) ** np.arange(n, dtype=np.float64)).astype(dtype)


def label_coefficients(arch: Target, train: Training, replicates: int) -> np.ndarray:
    """(I, F) coefficients c of the labels: ones, or U[1,2) from a generator seeded with
    train.label_seed (replicates get different draws); ones for kinds whose labels ignore them."""
    F = kind_spec(arch.kind).features(arch)
    if train.label_coeffs == "ones" or not kind_spec(arch.kind).label_coefficients:
        return np.ones((replicates, F))
    if train.label_coeffs == "uniform":
        return np.random.default_rng(train.label_seed).uniform(1.0, 2.0, (replicates, F))
    raise ValueError(f"unknown label_coeffs {train.label_coeffs!r}")


def gelu_plain(z: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU on plain arrays."""
    from scipy.special import erf  # lazy: runtime must import without scipy

    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


def labels_for(arch: Target, train: Training, x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Training labels for inputs x (I, B, n_in), in x's dtype (the kind's model says how)."""
    return model_of(arch).labels(arch, train, x, coeffs)

"""Input batches and labels (notes §2, §1.2): generated sparse features or the rows of a data file.

Batches are (I, B, n_in): one independent draw per replicate. Randomness comes only from the
Generator passed in. Uniform values are drawn in float64 and then cast, so float32 and float64
runs with the same seed see the same data up to rounding; they are drawn and cast a piece at a time
(engine/draws.py), so a batch exists only in the run's dtype. Per-feature probabilities and
anti-correlated groups add draws only when a spec uses them: other data is drawn exactly as
before they existed. A data file (spec/data_file.py) is loaded once per process, its bytes checked
against the sha256 the spec records; its rows are drawn uniformly with replacement.
"""
from __future__ import annotations

import hashlib
import math
import os

import numpy as np

from . import draws
from ..spec import Data, Target, Training, kind_spec, per_feature
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


def below(rng: np.random.Generator, p, start: int, n: int) -> np.ndarray:
    """n uniform draws compared with the probabilities of flat entries [start, start + n) of an
    array whose last axis is the features: `p` a number, or one per feature (an (F,) array)."""
    u = rng.random(n)
    return u < (p if np.ndim(p) == 0 else p[np.arange(start, start + n) % p.shape[0]])


def _keep(x: np.ndarray, p, rng: np.random.Generator) -> None:
    """Zero each entry of x (in place) unless a uniform draw is below its feature's probability."""
    flat = x.reshape(-1)
    for s in range(0, flat.size, draws.CHUNK):
        n = min(draws.CHUNK, flat.size - s)
        flat[s:s + n] *= below(rng, p, s, n)  # (a value times False: a zero of its sign, as before)


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


def feature_probabilities(data: Data, n: int):
    """p_i of every feature: the number itself when every feature has it (the batch compares
    against a scalar, exactly as before per-feature probabilities existed), else an (n,) array."""
    if per_feature.is_uniform(data.probability):
        return data.probability
    return per_feature.values(data.probability, n)


def _one_of(rng: np.random.Generator, p: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(shape + (len(p),)) booleans, at most one True per row: member i with probability p_i, none
    with probability 1 - sum(p). One uniform draw per row, cut at the cumulative probabilities."""
    u = rng.random(shape)[..., None]
    upper = np.cumsum(p)
    lower = np.concatenate([[0.0], upper[:-1]])  # member i owns [lower_i, upper_i): disjoint intervals
    return (u >= lower) & (u < upper)


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
    """(shape + (F,)) sparse features.

    `at_least_zero_active`: every feature draws a value U[lo, hi) and is kept with probability p_i
    (all-zero samples allowed). In an anti-correlated group the members' independent draws are
    replaced by one categorical draw: member i fires with probability p_i, none with 1 - sum p_i,
    so each keeps its rate and no two fire together. Then every synced group in which any member
    fired has all its members fire, with fresh values. `exactly_n_active`: n distinct features
    per sample, chosen uniformly. The draws happen in this order, and the optional ones only when
    their groups exist, so data without them is what it always was."""
    lo, hi = values
    if data.mode == "at_least_zero_active":
        p = feature_probabilities(data, F)
        x = _uniform(rng, lo, hi, shape + (F,), dtype)
        grouped = [f for g in data.anticorrelated for f in g]
        kept = x[..., grouped].copy() if grouped else None  # a group's values before _keep zeroes them
        _keep(x, p, rng)
        if data.anticorrelated:
            check_groups(data, F)
            p_all = per_feature.values(data.probability, F)
            at = 0
            for group in data.anticorrelated:
                idx = list(group)
                x[..., idx] = kept[..., at:at + len(idx)] * _one_of(rng, p_all[idx], shape)
                at += len(idx)
        if data.synced:
            check_synced(data.synced, F)
            x = _sync(x, data.synced, lo, hi, rng)
        return x
    if data.mode == "exactly_n_active":
        n = data.n_active
        if not 1 <= n <= F:
            raise ValueError(f"exactly_n_active needs 1 <= n_active <= {F}, got {n}")
        if data.synced or data.anticorrelated:
            # The reference only syncs at_least_zero_active batches; syncing would break "exactly n".
            raise ValueError("synced and anticorrelated groups apply to at_least_zero_active data, not exactly_n_active")
        chosen = _distinct(rng, shape, F, n)
        x = np.zeros(shape + (F,), dtype=dtype)
        np.put_along_axis(x, chosen, _uniform(rng, lo, hi, shape + (n,), dtype), axis=-1)
        return x
    raise ValueError(f"unknown data mode {data.mode!r}")


def check_groups(data: Data, n_features: int) -> None:
    """Anti-correlated groups are disjoint, index existing features, avoid synced ones and have
    probabilities that sum to at most 1 (validate() says so first, located)."""
    check_synced(tuple(data.synced) + tuple(data.anticorrelated), n_features)
    p = per_feature.values(data.probability, n_features)
    for group in data.anticorrelated:
        if p[list(group)].sum() > 1 + 1e-12:
            raise ValueError(f"anticorrelated group {list(group)}: probabilities sum to {p[list(group)].sum():g} > 1")


def mean_active(data: Data, F: int) -> float:
    """Expected active features per sample of at_least_zero_active data (cost estimates)."""
    p = per_feature.values(data.probability, F)
    synced = [f for g in data.synced for f in g]
    total = float(p.sum()) - float(p[synced].sum()) if synced else float(p.sum())
    for g in data.synced:  # the group fires when any member would
        total += len(g) * (1.0 - float(np.prod(1.0 - p[list(g)])))
    return total


def nonzero_fraction(data: Data, F: int) -> float:
    """Probability that an at_least_zero_active sample has an active feature (cost estimates). A
    synced group is silent exactly when all its members' draws are, as if independent."""
    if per_feature.is_uniform(data.probability) and not data.anticorrelated:
        return 1.0 - (1.0 - data.probability) ** F
    p = per_feature.values(data.probability, F)
    grouped = [f for g in data.anticorrelated for f in g]
    silent = float(np.prod(np.delete(1.0 - p, grouped)))
    for g in data.anticorrelated:
        silent *= max(0.0, 1.0 - float(p[list(g)].sum()))
    return 1.0 - silent


def sample_inputs(arch: Target, data: Data, replicates: int, batch: int, rng: np.random.Generator,
                  dtype=np.float32) -> np.ndarray:
    """A fresh batch (I, B, n_in): rows of the data file, or the kind's inputs (sparse features
    unless its model says otherwise, e.g. the gated network's x and control bits)."""
    if getattr(arch, "kind", "file") == "file":
        raise TypeError(f"cannot sample inputs for {type(arch).__name__}; load the target first")
    if data.file is not None:
        return _file_rows(data, _rows(data, replicates, batch, rng), dtype)[0]
    return model_of(arch).sample(arch, data, (int(replicates), int(batch)), rng, dtype)


def sample_batch(arch: Target, data: Data, train: Training, coeffs: np.ndarray, replicates: int, batch: int,
                 rng: np.random.Generator, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) of a fresh batch: the data file's rows with their labels when it has
    labels, else inputs as `sample_inputs` draws them with the kind's labels (`labels_for`)."""
    if data.file is not None and file_has_labels(data):
        return _file_rows(data, _rows(data, replicates, batch, rng), dtype, labels=True)
    x = sample_inputs(arch, data, replicates, batch, rng, dtype)
    return x, labels_for(arch, train, x, coeffs)


def _rows(data: Data, replicates: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """(I, B) row indices: uniform, with replacement, independent per replicate."""
    n = len(load_data_file(data)[0])
    return rng.integers(0, n, size=(int(replicates), int(batch)))


def _file_rows(data: Data, rows: np.ndarray, dtype, labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    inputs, lab = load_data_file(data)
    x = inputs[rows].astype(dtype)
    return x, (lab[rows].astype(dtype) if labels else None)


_LOADED: dict[tuple, tuple[np.ndarray, np.ndarray | None]] = {}  # one data file, loaded once per process


def load_data_file(data: Data) -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs (N, n_in), labels (N, n_out) or None) of `data.file`, as float64, read once: the
    bytes are hashed as they are read and must match `data.sha256` (resolve() records it), so a
    run never trains on a file other than the one its spec names. Loaded without pickle."""
    import io

    from ..spec import data_file

    st = os.stat(data.file)  # a file rewritten in place is read again (and checked against the sha256)
    key = (data.file, data.sha256, data.inputs, data.labels, st.st_size, st.st_mtime_ns)
    if key in _LOADED:
        return _LOADED[key]
    with open(data.file, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()
    if data.sha256 is not None and digest != data.sha256:
        raise ValueError(f"the data file {data.file!r} has changed: its sha256 is {digest}, the run's spec records "
                         f"{data.sha256}; restore that file, or check the spec again to accept the new one")
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        entries = {name: None for name in z.files}
        inputs = np.asarray(z[data.inputs], dtype=np.float64)
        name = data_file.labels_name(data, entries)
        labels = None if name is None else np.asarray(z[name], dtype=np.float64)
    for what, a in (("inputs", inputs), ("labels", labels)):
        if a is not None and not np.all(np.isfinite(a)):
            bad = np.argwhere(~np.isfinite(a))[0]
            raise ValueError(f"the data file {data.file!r}: {what} row {bad[0]} holds {a[tuple(bad)]}; every value "
                             "must be finite")
    _LOADED.clear()
    _LOADED[key] = (inputs, labels)
    return inputs, labels


def file_has_labels(data: Data) -> bool:
    """Whether batches of `data` come with labels from its file."""
    return data.file is not None and load_data_file(data)[1] is not None


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


def feature_importance(n: int, value: per_feature.PerFeature, dtype=np.float64) -> np.ndarray:
    """(n,) weights I_i of train.importance: a number r gives r**i (1 -> ones; 0 -> [1, 0, 0, ...]),
    a list or a decay form its values (spec/per_feature.py)."""
    return per_feature.values(value, n, "power").astype(dtype)


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

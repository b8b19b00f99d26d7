"""Named, independent random streams derived from one experiment seed.

One `numpy.random.SeedSequence` root per experiment seed; every purpose ("target_init",
"target_data", ...) gets its own child, keyed by a hash of its *name*. A purpose's stream therefore
never depends on which other streams a run happens to use, or in which order: adding an eval
draw cannot change the training data. Children can be rebuilt from `describe()`'s record
(entropy + spawn_key), so run outputs say exactly which randomness they used.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

# The purposes the runtime uses. Any other name works too (it hashes to its own stream); this
# list only documents the known ones and is what `streams()` / `describe()` enumerate.
PURPOSES: tuple[str, ...] = (
    "target_init",  # target parameter initialisation
    "target_data",  # batches for target training
    "labels",  # label coefficients when not seeded by train.label_seed
    "apd_init",  # APD component initialisation
    "apd_data",  # batches for the decomposition
    "eval",  # evaluation / analysis batches
    "gated_functions",  # trig coefficients of the gated target
    "gated_permutation",  # neuron permutation of the gated target
    "spd_masks",  # SPD's mask noise
    "vpd_sources",  # VPD's persistent sources (their initial draw)
    "vpd_masks",  # VPD's per-step row draws: adversarial rows, routing, fresh sources
    "eval.adversary",  # the evaluation adversary's batches and random starts (every method)
)

# First spawn-key word: keeps named children apart from the plain `root.spawn(n)` children
# (spawn keys (0,), (1,), ...) that a sweep might derive from the same seed.
_NAMED = 0x41504453  # "APDS"


def _key(purpose: str) -> tuple[int, int]:
    if not purpose:
        raise ValueError("a random-stream purpose must be a non-empty string")
    h = int.from_bytes(hashlib.sha256(purpose.encode("utf-8")).digest()[:4], "little")
    return (_NAMED, h)


def seed_sequence(seed: int, purpose: str) -> np.random.SeedSequence:
    """The SeedSequence of one purpose (deterministic in (seed, purpose))."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=_key(purpose))


def stream(seed: int, purpose: str) -> np.random.Generator:
    """A fresh Generator for `purpose`; calling again restarts the same stream."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, purpose)))


def streams(seed: int, purposes: tuple[str, ...] = PURPOSES) -> dict[str, np.random.Generator]:
    """Fresh generators for several purposes at once."""
    return {p: stream(seed, p) for p in purposes}


def describe(seed: int, purposes: tuple[str, ...] = PURPOSES) -> dict:
    """JSON-able record of the streams (rebuild one with SeedSequence(entropy, spawn_key=...))."""
    return {
        "seed": int(seed),
        "bit_generator": "PCG64",
        "streams": {p: {"entropy": int(seed), "spawn_key": list(_key(p))} for p in purposes},
    }


# Checkpoints store a stream's state as JSON: its big integers as strings (JSON numbers would lose them).


def _jsonable_rng(state: dict) -> Any:
    """bit_generator.state with its big integers as strings (JSON numbers would lose them)."""
    if isinstance(state, dict):
        return {k: _jsonable_rng(v) for k, v in state.items()}
    if isinstance(state, (int, np.integer)) and not isinstance(state, bool):
        return {"__int__": str(int(state))}
    if isinstance(state, np.ndarray):
        return {"__array__": state.tolist(), "dtype": str(state.dtype)}
    return state


def _rng_from_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__int__" in obj:
            return int(obj["__int__"])
        if "__array__" in obj:
            return np.asarray(obj["__array__"], dtype=obj["dtype"])
        return {k: _rng_from_json(v) for k, v in obj.items()}
    return obj


def rng_state(rng: np.random.Generator) -> Any:
    return _jsonable_rng(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: Any) -> None:
    rng.bit_generator.state = _rng_from_json(state)

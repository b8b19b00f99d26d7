"""VPD's persistent training adversary (notes §4): the sources masks are built from
(engine/masks.py), one row per batch index and site, (I, B, C+1), initialised U[0, 1], moved by
gradient *ascent* with their own Adam (denominator sqrt(v_hat) + eps) and clamped to [0, 1] after
every update; sources and moments persist across steps (and checkpoints). The ascents themselves
are driven by the trainer (train.py), which owns the losses. The evaluation adversary every method
is measured with is runtime/analysis/adversary.py.
"""
from __future__ import annotations

import numpy as np

from ...engine.optim import Adam
from ...spec import Optimizer


class PersistentSources:
    """The PPGD adversary's state: sources {site: (I, B, n_channels)} and their Adam moments."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], rng: np.random.Generator, dtype,
                 beta1: float, beta2: float, eps: float):
        self.sources = {k: rng.random(shape, dtype=np.dtype(dtype)) for k, shape in shapes.items()}
        # lr is passed per step (the source schedule), so the config's lr is unused
        self.opt = Adam(self.sources, Optimizer("adam", 0.0, 0.0, beta1, beta2, eps))

    def ascend(self, grads: dict[str, np.ndarray], lr: float) -> None:
        """One Adam step up the gradient of the loss the sources attack, then the clamp to [0, 1]."""
        self.opt.step(self.sources, {k: -np.asarray(grads[k], dtype=v.dtype) for k, v in self.sources.items()}, lr)
        for v in self.sources.values():
            np.clip(v, 0.0, 1.0, out=v)

    def state(self) -> tuple[dict[str, np.ndarray], int]:
        """(arrays "src.<site>", "src_m.<site>", "src_v.<site>"; Adam's step count)."""
        arrays = {}
        for prefix, d in (("src.", self.sources), ("src_m.", self.opt.m), ("src_v.", self.opt.v)):
            arrays.update({prefix + k: v for k, v in d.items()})
        return arrays, self.opt.t

    def restore(self, arrays: dict[str, np.ndarray], t: int) -> None:
        for prefix, d in (("src.", self.sources), ("src_m.", self.opt.m), ("src_v.", self.opt.v)):
            for k, v in d.items():
                v[...] = arrays[prefix + k]
        self.opt.t = int(t)

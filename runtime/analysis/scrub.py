"""The scrubbing test's masks (notes §7.7): keep every component with probability 1/2, then force
the components of the active features on (scrubbed) or off (anti-scrubbed). A decomposition whose
components are the features' own barely changes the output when the rest is scrubbed away."""
from __future__ import annotations

import numpy as np


def forced_components(active: np.ndarray, feature_map: np.ndarray, C: int) -> np.ndarray:
    """(I, B, C) bool: the components mapped from the active features of every sample.
    active (I, B, F) bool, feature_map (I, F) component index per feature."""
    onehot = (feature_map[..., None] == np.arange(C)).astype(np.float64)  # (I, F, C)
    return np.matmul(active.astype(np.float64), onehot) > 0


def scrub_masks(active: np.ndarray, feature_map: np.ndarray, C: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scrubbed, anti_scrubbed, random) masks (I, B, C) of notes §7.7, with the reference's index
    bug fixed: every one of the C components is kept with probability 1/2; scrubbed then forces the
    active features' components on, anti-scrubbed forces them off."""
    random = rng.random(active.shape[:-1] + (C,)) < 0.5
    forced = forced_components(active, feature_map, C)
    return random | forced, random & ~forced, random



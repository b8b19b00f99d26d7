"""Full-state checkpoints of a decomposition, for exact resume.

A checkpoint is one .npz (written atomically by files.save_npz; loaded with allow_pickle=False)
holding every array the next step depends on: the components, Adam's moments, the reviver's
window, under "comp.", "adam_m.", "adam_v.", "revive." names, plus a JSON entry "__state__" with the
scalars: the next step, Adam's step count, the bit-generator states of the random streams the loop
draws from, the loss history so far, revival events, and how many lines metrics.jsonl had. Resuming
from it reproduces the uninterrupted run bit for bit (tests/test_resume.py).

A trained target is saved once, when its training ends, as RUN_DIR/checkpoints/target.npz (a
target file, files.save_target, with its training log and the log length in the metadata), so a
resumed run does not train it again.

Files: RUN_DIR/checkpoints/step-<N>.npz (the newest `keep` are kept) and target.npz; all removed
when the run finishes.
"""
from __future__ import annotations

import glob
import json
import os
import re
import numpy as np

from .files import load_npz, load_target, own_subdir, save_npz, save_target

STATE_KEY = "__state__"
DIR = "checkpoints"
TARGET = "target.npz"


def save(run_dir: str, arrays: dict[str, np.ndarray], state: dict, keep: int = 2) -> str:
    """Write RUN_DIR/checkpoints/step-<state['step']>.npz atomically; remove all but the newest `keep`."""
    d = own_subdir(run_dir, DIR)
    path = os.path.join(d, f"step-{state['step']:09d}.npz")
    save_npz(path, {**arrays, STATE_KEY: np.array(json.dumps(state))})
    for old in sorted(all_checkpoints(run_dir))[:-keep]:
        os.unlink(old)
    return path


def all_checkpoints(run_dir: str) -> list[str]:
    pat = re.compile(r"step-\d{9}\.npz$")
    return sorted(p for p in glob.glob(os.path.join(run_dir, DIR, "step-*.npz")) if pat.search(p))


def latest(run_dir: str) -> str | None:
    found = all_checkpoints(run_dir)
    return found[-1] if found else None


def load(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, state) of a checkpoint file."""
    arrays = load_npz(path)
    if STATE_KEY not in arrays:
        raise ValueError(f"{path!r} is not an apdspec checkpoint (no {STATE_KEY} entry)")
    state = json.loads(str(arrays.pop(STATE_KEY)[()]))
    return arrays, state


def save_built_target(run_dir: str, arch, params: dict, extras: dict, history: list, log_lines: int) -> str:
    """RUN_DIR/checkpoints/target.npz: the target as built, its training log and the log length."""
    d = own_subdir(run_dir, DIR)
    return save_target(os.path.join(d, TARGET), arch, params, extras,
                       meta={"history": history, "log_lines": log_lines})


def load_built_target(run_dir: str) -> tuple[tuple, int] | None:
    """((arch, params, extras, history), log_lines) saved by save_built_target, or None."""
    path = os.path.join(run_dir, DIR, TARGET)
    if not os.path.exists(path):
        return None
    arch, params, extras, meta = load_target(path)
    return (arch, params, extras, list(meta["history"])), int(meta["log_lines"])


def remove_all(run_dir: str) -> None:
    """Delete every checkpoint (a finished run needs none) and the folder if it is left empty."""
    for p in all_checkpoints(run_dir) + glob.glob(os.path.join(run_dir, DIR, TARGET)):
        os.unlink(p)
    d = os.path.join(run_dir, DIR)
    if os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)

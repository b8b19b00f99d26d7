"""The target file format: its metadata entry and reading it without loading the arrays.

A target file (.npz, loaded with allow_pickle=False) holds the parameters under their stable
engine/models.py names, extras under "extra.<name>", and JSON metadata in a 0-d unicode array
"__meta__": {"format": "apdspec-target/1", "kind", "target": spec.to_dict(arch), "dtype", ...}.
Here, not in store/, because checking a spec with a file target needs the file's kind.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np


FORMAT = "apdspec-target/1"


META_KEY = "__meta__"


EXTRA_PREFIX = "extra."


def _open(path: str) -> np.lib.npyio.NpzFile:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path!r} is not a readable .npz file: {e}") from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is a single .npy array, not an .npz archive")
    return z


def _meta_of(path: str, z: np.lib.npyio.NpzFile) -> dict:
    if META_KEY not in z.files:
        raise ValueError(f"{path!r} is not an apdspec target file (no {META_KEY} entry)")
    try:
        meta = json.loads(str(z[META_KEY][()]))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path!r}: unreadable target metadata: {e}") from e
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT:
        raise ValueError(f"{path!r}: unsupported target format {fmt!r} (this version reads {FORMAT!r})")
    for key in ("kind", "target"):
        if key not in meta:
            raise ValueError(f"{path!r}: target metadata lacks {key!r}")
    return meta


def read_target_meta(path: str | os.PathLike) -> dict:
    """The metadata of a target file (contains "kind" and "target"), without loading the arrays."""
    path = os.fspath(path)
    with _open(path) as z:
        return _meta_of(path, z)

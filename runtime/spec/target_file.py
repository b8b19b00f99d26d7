"""The target file format: its metadata entry and reading it without loading the arrays.

A target file (.npz, loaded with allow_pickle=False) holds the parameters under their stable
kind's parameter names (its `param_shapes`), extras under "extra.<name>", and JSON metadata in a 0-d unicode array
"__meta__": {"format": "apdspec-target/1", "kind", "target": spec.to_dict(arch), "dtype", ...}.
Every entry has its architecture's shape (`entry_shapes`), or all of them carry one leading
replicate axis of the same length R (`stored_replicates`: R independent targets, one per replicate).
Here, not in store/, because checking a spec with a file target needs the file's kind and shapes.
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


# ------------------------------------------------------------------------------------------
# Shapes: what a file of a given architecture holds, and how many replicates it stores


def entry_shapes(arch) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(required, optional): entry name -> shape of one replicate, for a target of architecture
    `arch` (a target dataclass): its kind's `param_shapes` (registry.KindSpec), extras under
    EXTRA_PREFIX."""
    from .registry import kind_spec

    return kind_spec(arch.kind).param_shapes(arch)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def stored_replicates(arch, shapes: dict[str, tuple[int, ...]], where: str = "the target file") -> int | None:
    """How many replicates arrays of these `shapes` hold on a leading axis (None: no replicate
    axis, one target that every replicate shares). Every entry must have its architecture's shape,
    all of them with a leading axis of the same length R or none; ValueError says what differs."""
    req, opt = entry_shapes(arch)
    missing = [n for n in req if n not in shapes]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(repr(n) for n in missing)} (a {arch.kind} target of this "
                         f"architecture holds {', '.join(req)})")
    # extras apdspec does not know are carried along unchecked (they are the writer's business)
    shapes = {n: s for n, s in shapes.items() if n in req or n in opt or not n.startswith(EXTRA_PREFIX)}
    unknown = [n for n in shapes if n not in req and n not in opt]
    if unknown:
        raise ValueError(f"{where} holds {', '.join(repr(n) for n in unknown)}, which a {arch.kind} target of this "
                         f"architecture does not have (expected {', '.join(req)})")
    leading: dict[str, int | None] = {}
    for name, shape in shapes.items():
        want = {**req, **opt}[name]
        if tuple(shape) == want:
            leading[name] = None
        elif len(shape) == len(want) + 1 and tuple(shape[1:]) == want and shape[0] >= 1:
            leading[name] = int(shape[0])
        else:
            raise ValueError(f"{where}: {name!r} has shape {_shape_text(shape)}, expected {_shape_text(want)} "
                             f"or (R, {', '.join(str(s) for s in want)}) for R replicates")
    counts = set(leading.values())
    if len(counts) > 1:
        detail = ", ".join(f"{n} {'without' if r is None else f'with {r}'}" for n, r in leading.items())
        raise ValueError(f"{where}: entries disagree on the replicate axis ({detail}); all must have a leading "
                         "axis of the same length, or none")
    return counts.pop() if counts else None


def read_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Shape of every array entry of an .npz file (not __meta__), read from the .npy headers only."""
    path = os.fspath(path)
    _open(path).close()  # the same errors as loading (missing file, not an .npz)
    out: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if name == META_KEY:
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape = np.lib.format.read_array_header_1_0(f)[0]
                    else:
                        shape = np.lib.format.read_array_header_2_0(f)[0]
                out[name] = tuple(int(s) for s in shape)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path!r} is corrupt: {e}") from e
    return out


def target_replicates(path: str | os.PathLike) -> int | None:
    """The number of replicates a target file stores on a leading axis (None: one target, no
    replicate axis), checked against its architecture without loading the arrays."""
    from .serial import target_from_dict

    path = os.fspath(path)
    try:
        arch = target_from_dict(read_target_meta(path)["target"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path!r}: invalid target description: {e}") from e
    return stored_replicates(arch, read_shapes(path), repr(path))

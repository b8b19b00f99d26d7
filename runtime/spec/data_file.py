"""Data files: an .npz whose rows are a run's inputs (and labels), checked without loading the arrays.

    np.savez("data.npz", inputs=X, labels=Y)      # X (N, inputs of the target), Y (N, outputs)

The arrays are read with allow_pickle=False. `data.inputs` / `data.labels` name them ("inputs",
"labels"); labels are optional. Checking a spec reads only the .npy headers (shapes and dtypes)
and hashes the file; the engine loads it (engine/data.py). Here, not in store/, because checking a
spec needs the shapes, as for target files (target_file.py).
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass

import numpy as np

_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    """One array of a data file, from its .npy header."""

    shape: tuple[int, ...]
    dtype: np.dtype


def usable_dtype(dtype: np.dtype) -> bool:
    """Real numbers the run can cast to float32 / float64: floats, integers and booleans."""
    return dtype.kind in "fiub" and not dtype.fields


def read_entries(path: str) -> dict[str, Entry]:
    """name -> Entry of every array of an .npz file, from the headers only. Raises
    FileNotFoundError, or ValueError for a file that is not a readable .npz archive."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not an .npz file")
    if not os.path.isfile(path):  # a device or a pipe: reading it could block forever
        raise ValueError(f"{path!r} is not a regular file")
    out: dict[str, Entry] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                out[info.filename[:-4]] = Entry(tuple(int(s) for s in shape), np.dtype(dtype))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path!r} is not a readable .npz file: {e}") from None
    return out


_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256: checking sweeps hashes once


def sha256_of(path: str) -> str:
    """The sha256 (hex) of a file's bytes, cached while the file is unchanged."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if len(_HASHES) > 64:
            _HASHES.clear()
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def valid_sha256(text: str) -> bool:
    return bool(_HEX.fullmatch(text))


def labels_name(data, entries: dict[str, Entry]) -> str | None:
    """The array holding the labels, or None: `data.labels` when the file has it; the default name
    "labels" may be absent (then there are none), a name given otherwise must exist (issues say so)."""
    if data.labels is None or data.labels not in entries:
        return None
    return data.labels


DEFAULT_LABELS = "labels"


def file_issues(data, n_in: int, n_out: int) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(path, message, hint, also) of everything wrong with `data.file` for a target with n_in
    inputs and n_out outputs (as checks.Issue fields)."""
    path = data.file
    out = []
    try:
        entries = read_entries(path)
    except (OSError, ValueError) as e:
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return [("data.file", f"cannot read data file {path!r}: {msg}",
                 "give an .npz written by np.savez(path, inputs=X, labels=Y), X of shape (N, inputs)", ())]
    names = ", ".join(repr(n) for n in entries) or "no arrays"
    inputs = entries.get(data.inputs)
    if inputs is None:
        return [("data.inputs", f"the data file {path!r} has no array {data.inputs!r} (it holds {names})",
                 'name the inputs array: data file("...", inputs = "x")' if entries else
                 "write the inputs with np.savez(path, inputs=X)", ("data.file",))]
    if not usable_dtype(inputs.dtype):
        out.append(("data.inputs", f"the data file's {data.inputs!r} has dtype {inputs.dtype}; inputs must be real "
                    "numbers (float, integer or bool)", "save them as float32 or float64", ("data.file",)))
    if len(inputs.shape) != 2 or inputs.shape[1] != n_in:
        out.append(("data.file", f"{data.inputs!r} has shape {_shape(inputs.shape)}; this target takes inputs of "
                    f"shape (N, {n_in}): N samples of {n_in} inputs",
                    f"save {data.inputs!r} as an (N, {n_in}) array, or change the target", ("target",)))
    elif inputs.shape[0] < 1:
        out.append(("data.file", f"{data.inputs!r} has no rows", "save at least one sample", ()))
    if data.labels is not None and data.labels not in entries and data.labels != DEFAULT_LABELS:
        out.append(("data.labels", f"the data file {path!r} has no array {data.labels!r} (it holds {names})",
                    'name the labels array, or write labels = none to use none', ("data.file",)))
    name = labels_name(data, entries)
    if name is not None:
        lab = entries[name]
        if name == data.inputs:
            out.append(("data.labels", f"inputs and labels are the same array {name!r}",
                        "name two arrays, or write labels = none", ("data.inputs",)))
        elif not usable_dtype(lab.dtype):
            out.append(("data.labels", f"the data file's {name!r} has dtype {lab.dtype}; labels must be real numbers",
                        "save them as float32 or float64", ("data.file",)))
        n = inputs.shape[0] if inputs.shape else None
        if len(lab.shape) != 2 or lab.shape[1] != n_out or lab.shape[0] != n:
            want = f"({n if n is not None else 'N'}, {n_out})"
            out.append(("data.file", f"{name!r} has shape {_shape(lab.shape)}; with {data.inputs!r} of shape "
                        f"{_shape(inputs.shape)} the labels must be {want}: one row of {n_out} outputs per sample",
                        f"save {name!r} as a {want} array, or write labels = none", ("target",)))
    if data.sha256 is not None:
        if not valid_sha256(data.sha256):
            out.append(("data.sha256", f"not a sha256: {data.sha256!r}", "64 lowercase hexadecimal digits", ()))
        else:
            actual = sha256_of(path)
            if actual != data.sha256:
                out.append(("data.sha256", f"the data file {path!r} has changed: its sha256 is {actual}, the spec "
                            f"records {data.sha256}", "restore the recorded file, or drop sha256 to accept the new one",
                            ("data.file",)))
    return out


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def record(data) -> dict:
    """What summary.json records of a data file: path, sha256, shapes."""
    entries = read_entries(data.file)
    name = labels_name(data, entries)
    return {"path": os.path.abspath(data.file), "sha256": data.sha256 or sha256_of(data.file),
            "inputs": {"name": data.inputs, "shape": list(entries[data.inputs].shape)},
            "labels": None if name is None else {"name": name, "shape": list(entries[name].shape)}}

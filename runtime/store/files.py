"""Target checkpoints and generic array files (.npz, loaded with allow_pickle=False).

The target format is described in spec/target_file.py. Files are written atomically (`atomic_write`:
a temporary file created exclusively in the same directory, then os.replace) and always at exactly
the path given (no ".npz" is appended).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import zipfile
from typing import IO, Any, Iterator

import numpy as np

from ..spec import Target, target_from_dict, to_dict
from ..spec.target_file import EXTRA_PREFIX, FORMAT, META_KEY, _meta_of, _open


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """A file object whose content replaces `path` atomically when the block ends without an error.

    The temporary file is created exclusively (mkstemp: O_CREAT | O_EXCL, mode 0600, never through
    a symbolic link) in `path`'s own directory as `.<name>.<random>.tmp`, flushed and fsynced, made
    0644 and renamed over `path` (a symbolic link at `path` is replaced, not followed). On any error
    (a full disk included) the temporary file is removed and the error raised; `path` keeps its old
    content."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class LinkedDirectory(OSError):
    """A directory a run writes into (plots/, checkpoints/, replicates/r/, a sweep's point
    directory) is a symbolic link: writing through it could change files outside the run directory."""

    def __str__(self) -> str:  # the message alone, without "[Errno 40] ...: 'path'"
        return str(self.strerror)


def own_subdir(parent: str | os.PathLike, *names: str) -> str:
    """parent/names..., each level created where missing and refused (LinkedDirectory) where it is
    a symbolic link, so a run writes nothing outside its directory through a link planted in it.
    `parent` itself (the directory the user named, e.g. --out) may be a link."""
    path = os.fspath(parent)
    for name in names:
        path = os.path.join(path, name)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        refuse_link(path)
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, f"{path} is not a directory", path)
    return path


def refuse_link(path: str | os.PathLike) -> None:
    """Raise LinkedDirectory if `path` is a symbolic link."""
    if os.path.islink(path):
        raise LinkedDirectory(errno.ELOOP, f"{os.fspath(path)} is a symbolic link (to {os.readlink(path)}); a run "
                                           "writes only inside its directory: remove the link", os.fspath(path))


def linked_subdirs(run_dir: str | os.PathLike) -> list[str]:
    """The symbolic links to directories directly in `run_dir` or in its replicates/ folder: where
    a run (or a sweep, whose points are its subdirectories) would write through a link."""
    out = []
    for d in (os.fspath(run_dir), os.path.join(os.fspath(run_dir), "replicates")):
        if os.path.isdir(d) and not (d != os.fspath(run_dir) and os.path.islink(d)):
            with os.scandir(d) as it:
                out += [e.path for e in it if e.is_symlink() and os.path.isdir(e.path)]
        elif os.path.islink(d):
            out.append(d)
    return sorted(out)


def disk_full(e: BaseException) -> bool:
    """Whether `e` is a write that failed for lack of space (a full disk or an exhausted quota)."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def save_npz(path: str | os.PathLike, arrays: dict[str, Any], compressed: bool = False) -> str:
    """Write `arrays` atomically (`atomic_write`) to exactly `path`; returns the path. Object arrays
    are refused (they would need pickle to load)."""
    path = os.fspath(path)
    out = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise ValueError(f"cannot save {name!r} to {path}: object arrays need pickle")
        out[name] = a
    with atomic_write(path) as f:  # a file object: np.savez appends no suffix
        (np.savez_compressed if compressed else np.savez)(f, **out)
    return path


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read into memory."""
    path = os.fspath(path)
    with _open(path) as z:
        try:
            return {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path!r} is corrupt: {e}") from e


def save_target(path: str | os.PathLike, arch: Target, params: dict, extras: dict | None = None,
                meta: dict | None = None) -> str:
    """Write a target checkpoint; arrays are saved exactly as passed. `meta` must be JSON-able;
    it may repeat but not contradict the reserved keys (format, kind, target, dtype)."""
    path = os.fspath(path)
    float_dtypes = sorted({str(np.asarray(v).dtype) for v in params.values() if np.asarray(v).dtype.kind == "f"})
    reserved = {"format": FORMAT, "kind": arch.kind, "target": to_dict(arch),
                "dtype": float_dtypes[0] if len(float_dtypes) == 1 else "mixed"}
    full = dict(meta or {})
    for k, v in reserved.items():
        if k in full and json.loads(json.dumps(full[k])) != json.loads(json.dumps(v)):
            raise ValueError(f"meta[{k!r}] = {full[k]!r} contradicts the target being saved ({v!r})")
        full[k] = v
    arrays: dict[str, Any] = {}
    for name, a in params.items():
        if name == META_KEY or name.startswith(EXTRA_PREFIX):
            raise ValueError(f"parameter name {name!r} is reserved in target files")
        arrays[name] = a
    for name, a in (extras or {}).items():
        arrays[EXTRA_PREFIX + name] = a
    try:
        text = json.dumps(full)
    except TypeError as e:
        raise ValueError(f"target metadata for {path!r} is not JSON-serialisable: {e}") from e
    arrays[META_KEY] = np.array(text)
    return save_npz(path, arrays)


def load_target(path: str | os.PathLike) -> tuple[Target, dict, dict, dict]:
    """(arch, params, extras, meta) of a target file."""
    path = os.fspath(path)
    with _open(path) as z:
        meta = _meta_of(path, z)
        try:
            arch = target_from_dict(meta["target"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path!r}: invalid target description {meta['target']!r}: {e}") from e
        if arch.kind != meta["kind"]:
            raise ValueError(f"{path!r}: kind {meta['kind']!r} does not match the target {arch.kind!r}")
        params, extras = {}, {}
        try:
            for name in z.files:
                if name == META_KEY:
                    continue
                if name.startswith(EXTRA_PREFIX):
                    extras[name[len(EXTRA_PREFIX):]] = z[name]
                else:
                    params[name] = z[name]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path!r} is corrupt: {e}") from e
    return arch, params, extras, meta


def log_entries(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(phase, entry) for every line of a run's metrics.jsonl, in order. Phases: "target" (target
    training), "restarts" (every init of a restarts run), "decompose" (the kept decomposition; also
    entries without a phase). A line that is not JSON raises ValueError when it is reached, so a
    reader may keep what came before it."""
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            yield entry.get("phase", "decompose"), entry

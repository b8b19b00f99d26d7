"""The run directory: RunResult, writing its arrays and JSON atomically, and reading a run back.

Layout (docs/outputs.md): spec.apd, spec.json, metrics.jsonl, summary.json, and target.npz +
decomposition.npz per replicate (replicate 0 at the top level, others under replicates/<r>/).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Iterator

import numpy as np

from ..engine.decompose import Decomposition
from ..engine.models import Params
from ..engine.registry import engine_of
from ..spec import Experiment, Target, from_dict, to_dict


RUN_FORMAT = "apdspec-run/1"


@dataclasses.dataclass
class RunResult:
    """Everything a run produced, in memory. Arrays carry a leading replicate axis."""

    experiment: Experiment
    arch: Target
    target: Params
    extras: dict
    decomposition: Decomposition
    target_history: list
    metrics: dict  # name -> list of per-replicate values
    expectations: list  # dicts: text, passed, values
    seeds: dict
    timings: dict
    analysis: Any = dataclasses.field(default=None, repr=False, compare=False)  # cache of analysis/core.py
    selection: dict | None = None  # decompose.restarts > 1: scores per (replicate, restart), chosen restart

    @property
    def status(self) -> str:
        return "ok" if all(e["passed"] for e in self.expectations) else "expectations_failed"

    def components(self, name: str, replicate: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The two factors of decomposed matrix `name` (row-vector h = a @ W), as the method stores
        them: APD's A (C, d_in, m) and B (C, m, d_out), SPD's V (d_in, C) and U (C, d_out)."""
        return self.decomposition.components(name, replicate)


def _replicate_dir(out_dir: str, r: int) -> str:
    return out_dir if r == 0 else os.path.join(out_dir, "replicates", str(r))


def save_arrays(result: RunResult, out_dir: str) -> list[str]:
    """target.npz and decomposition.npz per replicate (replicate 0 at the top level)."""
    from .files import save_npz, save_target

    from .files import own_subdir

    written = []
    for r in range(result.experiment.replicates):
        d = out_dir if r == 0 else own_subdir(out_dir, "replicates", str(r))
        params = {k: v[r] for k, v in result.target.items()}
        extras = {k: v[r] for k, v in result.extras.items()}
        written.append(save_target(os.path.join(d, "target.npz"), result.arch, params, extras,
                                   meta={"replicate": r, "experiment": result.experiment.name,
                                         "train": to_dict(result.experiment.train)}))
        written.append(save_npz(os.path.join(d, "decomposition.npz"), result.decomposition.arrays(r)))
    return written


def file_record(path: str) -> dict:
    """`{path, sha256}` of a spec file, as summary.json and sweep.json list them."""
    import hashlib

    with open(path, "rb") as f:
        return {"path": os.path.abspath(path), "sha256": hashlib.sha256(f.read()).hexdigest()}


def write_text(path: str, text: str) -> None:
    """Write `text` atomically (files.atomic_write: an exclusive temporary file in the same directory,
    then a rename): a reader, or a run killed meanwhile, sees the old file or the new one; a failed
    write (a full disk) leaves no temporary file behind."""
    from .files import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str, obj: Any) -> None:
    """Write `obj` as indented JSON atomically (`write_text`); NumPy scalars and arrays allowed."""
    write_text(path, json.dumps(obj, indent=2, default=_json_default))


def out_dir_problem(out_dir: str) -> str | None:
    """Why `out_dir` cannot be a run (or sweep) directory, or None: it names something that is not a
    directory, it cannot be created, a directory in it (or in its replicates/) is a symbolic link,
    or no file can be created in it. Creates the directory (as a run would), and a file in it that
    it removes again."""
    from .files import atomic_write, linked_subdirs

    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        what = "a broken symbolic link" if not os.path.exists(out_dir) else "a file, not a directory"
        return f"it is {what}"
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        return f"cannot create it: {e.strerror or e}"
    links = linked_subdirs(out_dir)
    if links:  # a run writes only inside its directory
        return (f"{os.path.relpath(links[0], out_dir)} in it is a symbolic link to a directory "
                f"({os.readlink(links[0])}); remove the link")
    try:
        with atomic_write(os.path.join(out_dir, ".write-test"), "w") as f:
            f.write("")
        os.unlink(os.path.join(out_dir, ".write-test"))
    except OSError as e:
        return f"cannot write in it: {e.strerror or e}"
    return None


def missing_arrays(run_dir: str, replicates: int) -> str | None:
    """The first array file of a finished run that is missing or not a whole .npz (deleted, truncated),
    relative to `run_dir`, or None if every replicate's target.npz and decomposition.npz is there.
    Reads only each file's zip directory (at its end), not the arrays."""
    import zipfile

    for r in range(replicates):
        for name in ("target.npz", "decomposition.npz"):
            path = os.path.join(_replicate_dir(run_dir, r), name)
            try:
                with zipfile.ZipFile(path) as z:
                    if not z.namelist():
                        raise zipfile.BadZipFile("no arrays")
            except (OSError, zipfile.BadZipFile):
                return os.path.relpath(path, run_dir)
    return None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def load_run(run_dir: str) -> RunResult:
    """Rebuild a RunResult (every replicate) from a run directory, for re-analysis and reports."""
    from .files import load_npz, load_target, log_entries

    with open(os.path.join(run_dir, "spec.json")) as f:
        exp = from_dict(json.load(f))
    summary = {}
    sp = os.path.join(run_dir, "summary.json")
    if os.path.exists(sp):
        with open(sp) as f:
            summary = json.load(f)
    targets, extras_l, comps_l = [], [], []
    arch = None
    for r in range(exp.replicates):
        d = _replicate_dir(run_dir, r)
        arch, params, extras, _ = load_target(os.path.join(d, "target.npz"))
        targets.append(params)
        extras_l.append(extras)
        comps_l.append(load_npz(os.path.join(d, "decomposition.npz")))
    target = {k: np.stack([t[k] for t in targets]) for k in targets[0]}
    extras = {k: np.stack([e[k] for e in extras_l]) for k in extras_l[0]}
    dec_cls = engine_of(exp.decompose.method).decomposition
    comps = dec_cls.comps_from_arrays(arch, exp, comps_l)
    history, target_history = [], []
    mp = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(mp):
        for phase, entry in log_entries(mp):
            if phase == "target":
                target_history.append(entry)
            elif phase == "decompose":  # "restarts": every init, not kept
                history.append(entry)
    dec = dec_cls(arch, exp.decompose.components, dec_cls.inner_rank(exp.decompose), comps, history, summary.get("timings", {}).get("decompose_s", 0.0),
                  summary.get("steps_per_s", 0.0), summary.get("revivals", []))
    return RunResult(exp, arch, target, extras, dec, target_history, summary.get("metrics", {}),
                     summary.get("expectations", []), summary.get("seeds", {}), summary.get("timings", {}),
                     selection=summary.get("restarts"))


LOCK = ".lock"  # in a run (or sweep) directory while a process writes it: holds that process's pid


class RunDirBusy(RuntimeError):
    """Another live process is writing this run directory."""

    def __init__(self, out_dir: str, pid: int):
        self.out_dir, self.pid = out_dir, pid
        super().__init__(f"{out_dir} is being written by another run (pid {pid}); give another --out, "
                         f"or wait for it to finish")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def lock_holder(out_dir: str) -> int | None:
    """The pid of the live process that holds `out_dir/.lock`, or None (no lock, or one left by a
    process that no longer exists on this machine)."""
    try:
        with open(os.path.join(out_dir, LOCK)) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid and _alive(pid) else None


@contextlib.contextmanager
def locked(out_dir: str) -> Iterator[None]:
    """Hold `out_dir/.lock` (created exclusively) while writing the directory; a lock left by a
    process that no longer exists (kill -9, a reboot) is taken over. Raises RunDirBusy otherwise."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, LOCK)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = lock_holder(out_dir)
            if pid and pid != os.getpid():
                raise RunDirBusy(out_dir, pid) from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    else:
        raise RunDirBusy(out_dir, 0)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

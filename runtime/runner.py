"""Run an experiment end to end: target -> decomposition -> metrics (-> run directory).

    result = runtime.run(exp)                 # in memory; touches no file
    summary = runtime.run_to_dir(exp, "runs/x")  # writes the run directory (docs/outputs.md)

Data flow: `build_target` (train, hand-code or load), `decompose.decompose` (APD), then
`metrics.evaluate` and the `expect` clauses. Random streams are named per purpose (seeding.py),
so e.g. adding evaluation draws never changes training data.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

from . import apd, restarts, seeding
from .data import sample_inputs
from .decompose import Decomposition, decompose
from .models import Params, decomposed_params, init_target
from .spec import Experiment, FileTarget, GatedTarget, Target, check, from_dict, to_dict, to_json

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
    analysis: Any = dataclasses.field(default=None, repr=False, compare=False)  # cache of analysis.py
    selection: dict | None = None  # decompose.restarts > 1: scores per (replicate, restart), chosen restart

    @property
    def status(self) -> str:
        return "ok" if all(e["passed"] for e in self.expectations) else "expectations_failed"

    def components(self, name: str, replicate: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A (C, d_in, m) and B (C, m, d_out) of decomposed matrix `name` (row-vector h = a @ W)."""
        return self.decomposition.components(name, replicate)


def build_target(exp: Experiment, log: Callable[[dict], None] | None = None) -> tuple[Target, Params, dict, list]:
    """(arch, params, extras, history): train a fresh target, hand-code a gated one, or load one."""
    dtype = np.dtype(exp.dtype)
    t = exp.target
    if isinstance(t, FileTarget):
        from .io import load_target

        arch, params, extras, _ = load_target(t.path)
        # A saved target has no replicate axis unless it was saved from a replicated run.
        params = {k: _with_replicates(np.asarray(v, dtype=dtype), exp.replicates, _rank(arch, k)) for k, v in params.items()}
        extras = {k: _with_replicates(np.asarray(v), exp.replicates, None) for k, v in extras.items()}
        return arch, params, extras, []
    if isinstance(t, GatedTarget):
        from .gated import build_for_experiment

        params, extras = build_for_experiment(exp, dtype)
        return t, params, extras, []
    from .train_target import train_target

    params = init_target(t, exp.replicates, seeding.stream(exp.train.seed, "target_init"), dtype)
    cb = None if log is None else (lambda step, entry: log(dict(entry, phase="target")))
    params, history = train_target(exp, t, params, seeding.stream(exp.train.seed, "target_data"), log=cb)
    return t, params, {}, history


def _rank(arch: Target, name: str) -> int:
    """Number of axes of parameter `name` without the replicate axis."""
    return 1 if name in ("b",) or ".b_" in name else 2


def _with_replicates(a: np.ndarray, replicates: int, rank: int | None) -> np.ndarray:
    if rank is not None and a.ndim == rank + 1:
        if a.shape[0] != replicates:
            raise ValueError(f"the target file holds {a.shape[0]} replicates, the experiment asks for {replicates}")
        return a
    return np.broadcast_to(a, (replicates,) + a.shape).copy()


def run(exp: Experiment | dict, *, log: Callable[[dict], None] | None = None,
        progress: Callable[[int, int, dict], None] | None = None, with_metrics: bool = True) -> RunResult:
    """Run an experiment in memory. `exp` may be an Experiment or its dict form (spec.json)."""
    if isinstance(exp, dict):
        exp = from_dict(exp)
    exp = check(exp)
    t0 = time.perf_counter()
    arch, target, extras, target_history = build_target(exp, log)
    t1 = time.perf_counter()
    dc = exp.decompose
    rng_data = seeding.stream(dc.seed, "apd_data")
    dtype = np.dtype(exp.dtype)

    # With restarts, R inits of every replicate train as one model of I*R instances (restarts.py).
    wide, wide_target, wide_extras = restarts.expand(exp, target, extras) if dc.restarts > 1 else (exp, target, extras)

    def sample(batch: int) -> np.ndarray:
        return sample_inputs(arch, exp.data, wide.replicates, batch, rng_data, dtype)

    phase = "restarts" if dc.restarts > 1 else "decompose"
    cb = None if log is None else (lambda entry: log(dict(entry, phase=phase)))
    dec = decompose(wide, arch, wide_target, sample, seeding.stream(dc.seed, "apd_init"), log=cb, progress=progress)
    selection = None
    if dc.restarts > 1:
        wide_result = RunResult(wide, arch, wide_target, wide_extras, dec, [], {}, [], {}, {})
        dec, selection = restarts.select(wide_result, exp.replicates, dc.restarts)
        for entry in dec.history if log is not None else ():
            log(dict(entry, phase="decompose"))  # the kept inits' curves, what readers of the run see
    t2 = time.perf_counter()
    result = RunResult(exp, arch, target, extras, dec, target_history, {}, [],
                       {"experiment": seeding.describe(exp.seed), "decompose": seeding.describe(dc.seed)},
                       {"target_s": t1 - t0, "decompose_s": t2 - t1,
                        "decompose_steps_per_s": dc.steps / max(t2 - t1, 1e-9)}, selection=selection)
    if with_metrics:
        finish(result)
        result.timings["metrics_s"] = time.perf_counter() - t2
    return result


def finish(result: RunResult) -> None:
    """Compute the metrics and evaluate the expectations (in place)."""
    from .expectations import evaluate_expectations
    from .metrics import evaluate

    result.metrics = evaluate(result)
    result.expectations = evaluate_expectations(result.experiment, result.metrics)


# ------------------------------------------------------------------------------------------
# Run directory


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "not installed"

    out = {"python": sys.version.split()[0], "numpy": np.__version__, "autograd": v("autograd"),
           "scipy": v("scipy"), "matplotlib": v("matplotlib"), "platform": platform.platform(),
           "cpus": os.cpu_count(), "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}
    from . import __version__

    out["apdspec"] = __version__
    return out


def _replicate_dir(out_dir: str, r: int) -> str:
    return out_dir if r == 0 else os.path.join(out_dir, "replicates", str(r))


def save_arrays(result: RunResult, out_dir: str) -> list[str]:
    """target.npz and decomposition.npz per replicate (replicate 0 at the top level)."""
    from .io import save_npz, save_target

    written = []
    for r in range(result.experiment.replicates):
        d = _replicate_dir(out_dir, r)
        os.makedirs(d, exist_ok=True)
        params = {k: v[r] for k, v in result.target.items()}
        extras = {k: v[r] for k, v in result.extras.items()}
        written.append(save_target(os.path.join(d, "target.npz"), result.arch, params, extras,
                                   meta={"replicate": r, "experiment": result.experiment.name,
                                         "train": to_dict(result.experiment.train)}))
        arrays = {}
        for name in decomposed_params(result.arch):
            A, B = result.components(name, r)
            arrays[f"{name}.A"], arrays[f"{name}.B"] = A, B
        written.append(save_npz(os.path.join(d, "decomposition.npz"), arrays))
    return written


def run_to_dir(exp: Experiment | dict, out_dir: str, spec_text: str | None = None, spec_files: tuple = (),
               progress: bool = False, report: bool = True) -> dict:
    """Run and write the run directory; returns summary.json's content (status "ok",
    "expectations_failed" or "error")."""
    if isinstance(exp, dict):
        exp = from_dict(exp)
    exp = check(exp)
    os.makedirs(out_dir, exist_ok=True)
    if spec_text is not None:
        with open(os.path.join(out_dir, "spec.apd"), "w") as f:
            f.write(spec_text)
    with open(os.path.join(out_dir, "spec.json"), "w") as f:
        f.write(to_json(exp))
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    mf = open(metrics_path, "w")

    def log(entry: dict) -> None:
        mf.write(json.dumps(entry) + "\n")
        mf.flush()

    printer = None
    if progress:
        from .progress import ProgressLine

        printer = ProgressLine()
    t0 = time.time()
    summary: dict[str, Any] = {"format": RUN_FORMAT, "experiment": exp.name, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}
    try:
        result = run(exp, log=log, progress=printer)
    except Exception as e:  # record the failure, then let the caller decide how to show it
        mf.close()
        summary.update(status="error", error=f"{type(e).__name__}: {e}", wall_time_s=time.time() - t0)
        write_json(os.path.join(out_dir, "summary.json"), summary)
        raise
    finally:
        if printer is not None:
            printer.close()
    mf.close()
    save_arrays(result, out_dir)
    summary.update(
        status=result.status, wall_time_s=time.time() - t0, timings=result.timings,
        final_losses={k: v for k, v in result.decomposition.history[-1].items() if k not in ("step", "lr")},
        metrics=result.metrics, expectations=result.expectations, seeds=result.seeds, versions=_versions(),
        replicates=exp.replicates, spec_files=[file_record(p) for p in spec_files],
        steps_per_s=result.decomposition.steps_per_second,
    )
    if result.selection is not None:
        summary["restarts"] = result.selection
    if result.experiment.decompose.revive is not None:
        summary["revivals"] = result.decomposition.revivals
    write_json(os.path.join(out_dir, "summary.json"), summary)
    if report:
        from .report import render

        try:
            summary["report"] = render(out_dir, result=result)
        except Exception as e:  # the arrays are saved; a report failure must not lose them
            summary["report_error"] = f"{type(e).__name__}: {e}"
            write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def file_record(path: str) -> dict:
    """`{path, sha256}` of a spec file, as summary.json and sweep.json list them."""
    import hashlib

    with open(path, "rb") as f:
        return {"path": os.path.abspath(path), "sha256": hashlib.sha256(f.read()).hexdigest()}


def write_json(path: str, obj: Any) -> None:
    """Write `obj` as indented JSON atomically (via a .tmp file); NumPy scalars and arrays allowed."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def load_run(run_dir: str) -> RunResult:
    """Rebuild a RunResult (every replicate) from a run directory, for re-analysis and reports."""
    from .io import load_npz, load_target, log_entries

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
    C, m = exp.decompose.components, exp.decompose.rank
    comps = {}
    for name in decomposed_params(arch):
        A = np.stack([c[f"{name}.A"] for c in comps_l])
        B = np.stack([c[f"{name}.B"] for c in comps_l])
        comps.update(apd.from_components(name, A, B))
    history, target_history = [], []
    mp = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(mp):
        for phase, entry in log_entries(mp):
            if phase == "target":
                target_history.append(entry)
            elif phase == "decompose":  # "restarts": every init, not kept
                history.append(entry)
    dec = Decomposition(arch, C, m, comps, history, summary.get("timings", {}).get("decompose_s", 0.0),
                        summary.get("steps_per_s", 0.0), summary.get("revivals", []))
    return RunResult(exp, arch, target, extras, dec, target_history, summary.get("metrics", {}),
                     summary.get("expectations", []), summary.get("seeds", {}), summary.get("timings", {}),
                     selection=summary.get("restarts"))

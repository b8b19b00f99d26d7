"""Run an experiment end to end: target -> decomposition -> metrics (-> run directory).

    result = runtime.run(exp)                 # in memory; touches no file
    summary = runtime.run_to_dir(exp, "runs/x")  # writes the run directory (docs/outputs.md)

Data flow: `build_target` (train, hand-code or load), `engine.decompose.decompose` (APD), then
`analysis.metrics.evaluate` and the `expect` clauses. Random streams are named per purpose
(engine/seeding.py), so e.g. adding evaluation draws never changes training data.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

from . import restarts
from ..engine import seeding
from ..engine.data import sample_inputs
from ..engine.decompose import NonFiniteError, decompose
from ..engine.models import Params, init_target
from ..spec import Experiment, FileTarget, GatedTarget, Target, check, from_dict, to_json
from ..store.rundir import RUN_FORMAT, RunResult, file_record, locked, save_arrays, write_json


def build_target(exp: Experiment, log: Callable[[dict], None] | None = None) -> tuple[Target, Params, dict, list]:
    """(arch, params, extras, history): train a fresh target, hand-code a gated one, or load one."""
    dtype = np.dtype(exp.dtype)
    t = exp.target
    if isinstance(t, FileTarget):
        from ..store.files import load_target

        arch, params, extras, _ = load_target(t.path)
        # A saved target has no replicate axis unless it was saved from a replicated run.
        params = {k: _with_replicates(np.asarray(v, dtype=dtype), exp.replicates, _rank(arch, k)) for k, v in params.items()}
        extras = {k: _with_replicates(np.asarray(v), exp.replicates, None) for k, v in extras.items()}
        return arch, params, extras, []
    if isinstance(t, GatedTarget):
        from ..engine.gated import build_for_experiment

        params, extras = build_for_experiment(exp, dtype)
        return t, params, extras, []
    from ..engine.train_target import train_target

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
    try:
        dec = decompose(wide, arch, wide_target, sample, seeding.stream(dc.seed, "apd_init"), log=cb, progress=progress)
    except NonFiniteError as e:
        if dc.restarts > 1:  # name the replicate and restart, not the instance of the wide model
            replicate, restart = divmod(e.replicate, dc.restarts)
            raise NonFiniteError(e.what, replicate, e.step, e.value, restart) from e
        raise
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
    from ..analysis.expectations import evaluate_expectations
    from ..analysis.metrics import evaluate

    result.metrics = evaluate(result)
    result.expectations = evaluate_expectations(result.experiment, result.metrics)


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
    from .. import __version__

    out["apdspec"] = __version__
    return out


def run_to_dir(exp: Experiment | dict, out_dir: str, spec_text: str | None = None, spec_files: tuple = (),
               progress: bool = False, report: bool = True) -> dict:
    """Run and write the run directory; returns summary.json's content (status "ok",
    "expectations_failed" or "error"). Raises store.rundir.RunDirBusy if another live process is
    writing `out_dir`."""
    with locked(out_dir):
        return _run_to_dir(exp, out_dir, spec_text, spec_files, progress, report)


def _run_to_dir(exp: Experiment | dict, out_dir: str, spec_text: str | None, spec_files: tuple, progress: bool,
                report: bool) -> dict:
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
        from ..report.progress import ProgressLine

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
        from ..report.document import render

        try:
            summary["report"] = render(out_dir, result=result)
        except Exception as e:  # the arrays are saved; a report failure must not lose them
            summary["report_error"] = f"{type(e).__name__}: {e}"
            write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary

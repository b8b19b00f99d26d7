"""Run an experiment end to end: target -> decomposition -> metrics (-> run directory).

    result = runtime.run(exp)                 # in memory; touches no file
    summary = runtime.run_to_dir(exp, "runs/x")  # writes the run directory (docs/outputs.md)

Data flow: `build_target` (train, hand-code or load), `engine.decompose.decompose` (the method's trainer), then
`analysis.metrics.evaluate` and the `expect` clauses. Random streams are named per purpose
(engine/seeding.py), so e.g. adding evaluation draws never changes training data.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Iterator

import numpy as np

from . import restarts
from ..engine import seeding
from ..engine.data import sample_inputs
from ..engine.decompose import Checkpointing, Interrupted, NonFiniteError, decompose
from ..engine.models import Params, init_target
from ..engine.registry import engine_of, model_of
from ..spec import Experiment, FileTarget, Target, check, data_file, from_dict, to_json
from ..store.rundir import RUN_FORMAT, RunResult, file_record, locked, save_arrays, write_json, write_text


def build_target(exp: Experiment, log: Callable[[dict], None] | None = None,
                 progress: Callable[[int, int, dict], None] | None = None,
                 stop: Callable[[], int | None] | None = None) -> tuple[Target, Params, dict, list]:
    """(arch, params, extras, history): train a fresh target, build a hand-coded one (the kind's
    `Model.build`), or load one. `progress` and `stop` reach the training loop
    (engine.train_target.train_target)."""
    dtype = np.dtype(exp.dtype)
    t = exp.target
    if isinstance(t, FileTarget):
        from ..store.files import load_target

        arch, params, extras, _ = load_target(t.path)
        return arch, *_replicated(arch, params, extras, exp, t.path), []
    built = model_of(t).build(exp, dtype)
    if built is not None:
        return t, built[0], built[1], []
    from ..engine.train_target import train_target

    params = init_target(t, exp.replicates, seeding.stream(exp.train.seed, "target_init"), dtype)
    cb = None if log is None else (lambda step, entry: log(dict(entry, phase="target")))
    params, history = train_target(exp, t, params, seeding.stream(exp.train.seed, "target_data"), log=cb,
                                   progress=progress, stop=stop)
    return t, params, {}, history


def _replicated(arch: Target, params: dict, extras: dict, exp: Experiment, path: str) -> tuple[Params, dict]:
    """A loaded target file's arrays with the experiment's replicate axis: a file without one is
    shared by every replicate; a file with R replicates (a leading axis, docs/outputs.md) needs
    exp.replicates == R (the checker says so first)."""
    from ..spec.target_file import EXTRA_PREFIX, stored_replicates

    shapes = {**{k: np.shape(v) for k, v in params.items()}, **{EXTRA_PREFIX + k: np.shape(v) for k, v in extras.items()}}
    stored = stored_replicates(arch, shapes, repr(path))
    if stored is not None and stored != exp.replicates:
        raise ValueError(f"{path!r} holds {stored} replicates, the experiment asks for {exp.replicates}")

    def widen(a: np.ndarray) -> np.ndarray:
        return a if stored is not None else np.broadcast_to(a, (exp.replicates,) + a.shape).copy()

    dtype = np.dtype(exp.dtype)
    return ({k: widen(np.asarray(v, dtype=dtype)) for k, v in params.items()},
            {k: widen(np.asarray(v)) for k, v in extras.items()})


def run(exp: Experiment | dict, *, log: Callable[[dict], None] | None = None,
        progress: Callable[[int, int, dict], None] | None = None, with_metrics: bool = True,
        checkpoint: Callable[[dict, dict], None] | None = None, checkpoint_every: int = 0,
        stop: Callable[[], int | None] | None = None, resume: tuple[dict, dict] | None = None,
        built_target: tuple[Target, Params, dict, list] | None = None,
        on_target: Callable[[Target, Params, dict, list], None] | None = None) -> RunResult:
    """Run an experiment in memory. `exp` may be an Experiment or its dict form (spec.json).

    `checkpoint(arrays, state)` receives the decomposition's full state every `checkpoint_every`
    steps and when `stop()` returns a signal number (then engine.decompose.Interrupted is raised;
    during target training too, phase "target"); `resume` = (arrays, state) of such a checkpoint
    continues from it bit-identically. `built_target` = (arch, params, extras, history) of this
    experiment's target, built earlier (`on_target` receives it once built), skips building it;
    without it a resumed run trains the target again, deterministically, without logging it twice."""
    if isinstance(exp, dict):
        exp = from_dict(exp)
    exp = check(exp)
    t0 = time.perf_counter()
    begin = getattr(progress, "begin", lambda label: None)  # ProgressLine labels its phases
    if built_target is None:
        begin("target")
        built_target = build_target(exp, None if resume is not None else log, progress=progress, stop=stop)
        if on_target is not None:
            on_target(*built_target)
    begin("")
    arch, target, extras, target_history = built_target
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
        ckpt = None if checkpoint is None else Checkpointing(checkpoint, max(checkpoint_every, 1), stop or (lambda: None))
        dec = decompose(wide, arch, wide_target, sample, seeding.stream(dc.seed, "apd_init"), log=cb, progress=progress,
                         checkpoint=ckpt, resume=resume, rngs={"apd_data": rng_data})
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


SWEEP_PARENT_ENV = "APDSPEC_SWEEP_PARENT"  # set by sweep.py in its workers: the driver's pid


def orphaned() -> bool:
    """Whether this process is a sweep worker whose driver has died."""
    parent = os.environ.get(SWEEP_PARENT_ENV)
    return bool(parent) and os.getppid() != int(parent)


@contextlib.contextmanager
def signal_flag(signals: tuple[int, ...]) -> Iterator[list[int]]:
    """While the block lasts, each of `signals` only records itself in the yielded list (the code
    acts on it at a point of its choosing); a second signal interrupts at once. Outside the main
    thread (where handlers cannot be set) nothing changes and the list stays empty."""
    import signal
    import threading

    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum, frame):
        if got:  # asked twice: stop now
            raise KeyboardInterrupt
        got.append(signum)

    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _signals_stop() -> Iterator[Callable[[], int | None]]:
    """While the run lasts, SIGINT and SIGTERM only set a flag that the decomposition loop reads at
    each step boundary (it then checkpoints and stops); a second signal interrupts at once. Outside
    the main thread (where handlers cannot be set) nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    with signal_flag((signal.SIGINT, signal.SIGTERM)) as got:
        def stop() -> int | None:
            if got:
                return got[0]
            # a sweep worker whose driver is gone (killed outright) stops as if sent SIGTERM: orphans
            # would otherwise train on and write into a directory that a new sweep may already be using
            return signal.SIGTERM if orphaned() else None

        yield stop


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


CHECKPOINTS = 10  # default: a checkpoint every 10 % of the decomposition's steps


def run_to_dir(exp: Experiment | dict, out_dir: str, spec_text: str | None = None, spec_files: tuple = (),
               progress: bool = False, report: bool = True, resume: bool = False,
               checkpoint_every: int | None = None, spec_original: str | None = None,
               stop: Callable[[], int | None] | None = None) -> dict:
    """Run and write the run directory; returns summary.json's content (status "ok",
    "expectations_failed" or "error"). Raises store.rundir.RunDirBusy if another live process is
    writing `out_dir`.

    Full-state checkpoints go to out_dir/checkpoints/ every `checkpoint_every` steps (default:
    decompose.checkpoint_every, else 10 % of decompose.steps; 0: none), the newest
    decompose.checkpoint_keep kept, with the trained target beside them; all are removed when the
    run finishes. SIGINT and SIGTERM stop at the next step boundary (writing a checkpoint in the
    decomposition), mark summary.json and report.md "interrupted" and raise
    engine.decompose.Interrupted. `resume=True` continues the run in `out_dir` (its spec.json is the
    experiment) from its newest checkpoint, else from its saved target, else from the start, and
    gives the arrays an uninterrupted run would have.

    `spec_text` (the resolved spec, canonical .apd) is written as spec.apd, `spec_original` (the
    spec file as the user wrote it, comments included) as spec.original.apd. `stop()`, asked at
    every step boundary besides the signals, returns a signal number to stop as if sent it (a dask
    worker whose driver or scheduler is gone, runtime/pipeline/sweep.py).

    Every file is written through an exclusive temporary file in its own directory (never through
    a symbolic link). A write that fails, a full disk included, raises its OSError after marking the
    run "error" (or, if even that cannot be written, removing summary.json): a run is never left
    marked "ok" with a file missing; its checkpoints are kept until the report is written."""
    with locked(out_dir):
        return _run_to_dir(exp, out_dir, spec_text, spec_files, progress, report, resume, checkpoint_every,
                           spec_original, stop)


def _interrupted_report(out_dir: str, summary: dict) -> None:
    """report.md / report.html of an interrupted run: its status, how far it got, how to resume."""
    from ..report.document import render

    try:
        render(out_dir)
    except Exception as e:  # the checkpoint is what matters; a report failure must not hide it
        summary["report_error"] = f"{type(e).__name__}: {e}"
        write_json(os.path.join(out_dir, "summary.json"), summary)


def _restart_log(path: str, keep_lines: int) -> Any:
    """metrics.jsonl cut to its first `keep_lines` lines (atomically), open for appending."""
    lines = []
    if keep_lines and os.path.exists(path):
        with open(path) as f:
            lines = f.readlines()[:keep_lines]
    write_text(path, "".join(lines))
    return open(path, "a")


def _record_failure(out_dir: str, summary: dict, e: BaseException, t0: float) -> None:
    """summary.json says "error" (`e`); if even that cannot be written (a full disk), no summary.json
    is left, so that no earlier "ok" stands for a run that did not finish."""
    summary.update(status="error", error=f"{type(e).__name__}: {e}", wall_time_s=time.time() - t0)
    for key in ("report", "report_error"):
        summary.pop(key, None)
    path = os.path.join(out_dir, "summary.json")
    try:
        write_json(path, summary)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _run_to_dir(exp: Experiment | dict, out_dir: str, spec_text: str | None, spec_files: tuple, progress: bool,
                report: bool, resume: bool, checkpoint_every: int | None, spec_original: str | None = None,
                extra_stop: Callable[[], int | None] | None = None) -> dict:
    from ..store import checkpoint as ckpt

    if isinstance(exp, dict):
        exp = from_dict(exp)
    exp = check(exp)
    dc = exp.decompose
    os.makedirs(out_dir, exist_ok=True)
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    state, built, resumed_from, keep_lines = None, None, None, 0
    if resume:  # from the newest checkpoint, else the saved target, else the start
        latest = ckpt.latest(out_dir)
        saved_target = ckpt.load_built_target(out_dir)
        if saved_target is not None:
            built, keep_lines = saved_target
            resumed_from = os.path.join(ckpt.DIR, ckpt.TARGET)
        if latest is not None:
            state = ckpt.load(latest)
            keep_lines, resumed_from = state[1]["log_lines"], os.path.relpath(latest, out_dir)
    else:
        with contextlib.suppress(FileNotFoundError):  # a new run: an earlier run's verdict no longer holds
            os.unlink(os.path.join(out_dir, "summary.json"))
        for name, text in (("spec.apd", spec_text), ("spec.original.apd", spec_original)):
            if text is not None:
                write_text(os.path.join(out_dir, name), text)
        write_text(os.path.join(out_dir, "spec.json"), to_json(exp))
    mf = _restart_log(metrics_path, keep_lines)
    written = [keep_lines]

    def log(entry: dict) -> None:
        mf.write(json.dumps(entry) + "\n")
        mf.flush()
        written[0] += 1

    every = checkpoint_every if checkpoint_every is not None else dc.checkpoint_every
    every = max(dc.steps // CHECKPOINTS, 1) if every is None else every

    def save_checkpoint(arrays: dict, st: dict) -> None:
        ckpt.save(out_dir, arrays, dict(st, log_lines=written[0]), keep=dc.checkpoint_keep)

    def save_target(arch: Target, params: Params, extras: dict, history: list) -> None:
        if history and every:  # a trained target: worth keeping for a resume
            ckpt.save_built_target(out_dir, arch, params, extras, history, written[0])

    printer = None
    if progress:
        from ..report.progress import ProgressLine

        printer = ProgressLine()
    t0 = time.time()
    summary: dict[str, Any] = {"format": RUN_FORMAT, "experiment": exp.name, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}
    if exp.data.file is not None:  # the exact data the run read: its sha256 is checked as it is loaded
        summary["data_file"] = data_file.record(exp.data)
    if resume:
        summary["resumed_from"] = resumed_from or "the start (no checkpoint yet)"
    try:
        with _signals_stop() as signalled:
            stop = signalled if extra_stop is None else (lambda: signalled() or extra_stop())
            # the non-finite guard names a diverged term (NonFiniteError): NumPy's overflow and
            # invalid-value warnings on the way there would only be noise before it
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                result = run(exp, log=log, progress=printer, checkpoint=save_checkpoint if every else None,
                             checkpoint_every=every, stop=stop, resume=state, built_target=built,
                             on_target=save_target, with_metrics=False)
            t_metrics = time.perf_counter()
            finish(result)
            result.timings["metrics_s"] = time.perf_counter() - t_metrics
        mf.close()
    except Interrupted as e:
        _close_quietly(mf)
        summary.update(status="interrupted", signal=e.signum, phase=e.phase, next_step=e.step,
                       wall_time_s=time.time() - t0, resume=f"apdspec run --resume {out_dir}")
        write_json(os.path.join(out_dir, "summary.json"), summary)
        _interrupted_report(out_dir, summary)
        raise
    except Exception as e:  # record the failure, then let the caller decide how to show it
        _close_quietly(mf)
        _record_failure(out_dir, summary, e, t0)
        raise
    finally:
        if printer is not None:
            printer.close()
    summary.update(wall_time_s=time.time() - t0, spec_files=[file_record(p) for p in spec_files])
    try:
        return write_finished(result, out_dir, summary, report)
    except Exception as e:  # an array, summary.json or the report could not be written
        _record_failure(out_dir, summary, e, t0)
        raise


def _close_quietly(f: Any) -> None:
    """Close a log whose last write may have failed (a full disk): closing flushes it again."""
    with contextlib.suppress(OSError):
        f.close()


def write_finished(result: RunResult, out_dir: str, summary: dict, report: bool = True) -> dict:
    """The end of a finished run (also of pipeline/pick.py's): arrays, summary.json (`summary`
    plus the result's status, metrics and records), the report, the diagnostics the report lists
    (summary.json's "diagnostics": severity and text; a "problem" fails the run's exit code), then
    the checkpoints removed. A report that fails is recorded as `report_error`, unless it failed
    for lack of disk space: that OSError is raised (the caller marks the run "error"; the
    checkpoints are still there)."""
    from ..store import checkpoint as ckpt
    from ..store.files import LinkedDirectory, disk_full

    save_arrays(result, out_dir)
    summary.update(
        status=result.status, timings=result.timings,
        final_losses={k: v for k, v in result.decomposition.history[-1].items() if k not in ("step", "lr")},
        metrics=result.metrics, expectations=result.expectations, seeds=result.seeds, versions=_versions(),
        replicates=result.experiment.replicates, steps_per_s=result.decomposition.steps_per_second,
    )
    if result.selection is not None:
        summary["restarts"] = result.selection
    if result.experiment.report.smoke:
        summary["smoke"] = True  # its problems do not fail it (apdspec run's verdict)
    summary.update(engine_of(result.experiment.decompose.method).summary_extra(result.experiment, result.decomposition))
    write_json(os.path.join(out_dir, "summary.json"), summary)
    if report:
        from ..report.document import render

        try:
            summary["report"] = render(out_dir, result=result)
        except Exception as e:  # the arrays are saved; a report failure must not lose them
            if disk_full(e) or isinstance(e, LinkedDirectory):  # the run is not whole: marked error
                raise
            summary["report_error"] = f"{type(e).__name__}: {e}"
            write_json(os.path.join(out_dir, "summary.json"), summary)
        full = _disk_full_plot(result)
        if full is not None:  # a plot that failed for lack of space: the report is not whole
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({full})")
    summary["diagnostics"] = _diagnostics(out_dir, summary, result)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    ckpt.remove_all(out_dir)  # the run is complete: its arrays, summary and report are saved
    return summary


def _diagnostics(out_dir: str, summary: dict, result: RunResult) -> list[dict]:
    """The run's diagnostics as summary.json records them (after the report: its plots' errors count)."""
    from ..report.document import diagnostics_of

    try:
        found = diagnostics_of(out_dir, summary, result)
    except Exception as e:  # the diagnostics are a reading of the run: a bug in one must not lose the run
        found = [("problem", f"the diagnostics could not be computed: {type(e).__name__}: {e}")]
    return [{"severity": sev, "text": text} for sev, text in found]


def _disk_full_plot(result: RunResult) -> str | None:
    """The error of a plot that could not be saved for lack of space (plots record their errors and
    go on, see report/plots.py), or None."""
    errors = getattr(getattr(result, "analysis", None), "errors", None) or {}
    full = f"[Errno {errno.ENOSPC}]"
    return next((f"{k}: {v}" for k, v in errors.items() if full in str(v)), None)

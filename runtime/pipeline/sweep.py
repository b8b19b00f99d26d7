"""Run every point of an experiment's sweep into one directory, with a table of the results.

    pts = runtime.pipeline.sweep.points(exp)                     # the concrete, checked experiments
    summary = runtime.pipeline.sweep.run_sweep(exp, "runs/s")    # runs them; writes sweep.json and sweep.md
    runtime.pipeline.sweep.render("runs/s")                      # sweep.md again, from sweep.json

`expand(exp)` is `points` without raising: the points that check and the issues of those that do
not, with each point's position on every axis (apdspec locates the issues in the spec by it).

Axes with the same `group` are zipped; the others (and each zipped group as one unit) form a grid
in the order the axes are listed, the last varying fastest. Point `label` names its run directory
`out_dir/<label>/`, a normal run directory (docs/outputs.md). A point whose directory already holds a
finished summary.json for the same spec.json, and every array file it names, is reused, so
re-running an interrupted sweep with the same `out_dir` only runs what is missing.

`jobs > 1` runs points in spawned processes (never forked: a fork after BLAS has started threads can
deadlock), one point at a time each; each worker gets OPENBLAS/OMP/MKL_NUM_THREADS=1 unless the
variable is already set, so `jobs` processes use `jobs` cores. A worker that dies (kill -9, out of
memory) is replaced and its point runs again from its last checkpoint; the other points go on.
`scheduler="tcp://host:port"` hands the points to a dask.distributed cluster (optional extra
`apdspec[distributed]`); its workers must share `out_dir`'s filesystem and should be started with one
BLAS thread (`OPENBLAS_NUM_THREADS=1 dask worker ADDR --nthreads 1`; docs/outputs.md for the
addresses). A point stops, checkpointed, when its dask worker loses the scheduler or the driver
gives it up; the driver raises SchedulerLost when the scheduler goes away.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import time
from concurrent.futures import CancelledError
from typing import Any, Callable, Iterator

import numpy as np

from . import runner
from ..engine.decompose import Interrupted
from ..store import checkpoint
from ..store.files import LinkedDirectory, disk_full, refuse_link
from ..store.rundir import file_record, lock_holder, locked, missing_arrays, write_json, write_text
from ..analysis.expectations import describe
from ..spec import (Decompose, Experiment, Issue, SpecValidationError, SweepAxis, check, field_value, from_dict, kind_spec,
                    nested_class, resolve, to_dict, to_json, with_method)
from ..spec.checks import architecture

SWEEP_FORMAT = "apdspec-sweep/1"
MAX_LABEL = 100  # characters; longer labels become p<index>_<prefix>
FINISHED = ("ok", "expectations_failed")  # statuses a resumed sweep reuses
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")
_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class DistributedUnavailable(ImportError):
    """`scheduler=` was given but dask.distributed is not installed."""


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    index: int
    values: dict  # runtime path -> value
    label: str  # filesystem-safe, unique within the sweep: the point's directory name
    experiment: Experiment  # checked (resolved), with sweep=None
    positions: dict = dataclasses.field(default_factory=dict, compare=False)  # path -> index of its value in its axis


@dataclasses.dataclass(frozen=True)
class PointIssue:
    """An issue of a sweep point that does not check (`expand`)."""
    index: int
    label: str
    values: dict  # runtime path -> value, as SweepPoint.values
    positions: dict  # runtime path -> the index of this point's value in that axis's values
    issue: Issue


# ------------------------------------------------------------------------------------------
# Expansion


def replace_path(obj: Any, path: str, value: Any) -> Any:
    """A copy of the frozen dataclass tree `obj` with the field at dotted `path` set to `value`.

    An optional object that is None on the way (e.g. `decompose.topk` of the Lp formulation) is
    brought back with its defaults first, as setting one of its fields in a spec does."""
    name, _, rest = path.partition(".")
    if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj) if f.init}:
        raise ValueError(f"{path!r} names no field of {type(obj).__name__}")
    if not rest:
        if isinstance(obj, Decompose) and name == "method":  # another method: its own class
            return with_method(obj, value)
        if isinstance(value, dict):  # a value that is an object in JSON (a zipf(...) per-feature form)
            value = field_value(type(obj), name, value)
        return dataclasses.replace(obj, **{name: _plain(value)})
    inner = getattr(obj, name)
    if inner is None:
        inner = nested_class(type(obj), name)()
    return dataclasses.replace(obj, **{name: replace_path(inner, rest, value)})


def _plain(value: Any) -> Any:
    """JSON lists back to the tuples the dataclasses hold (axes read from spec.json carry lists)."""
    return tuple(_plain(v) for v in value) if isinstance(value, list) else value


def _follow_derived(exp: Experiment, swept: set[str]) -> Experiment:
    """Let defaults that resolve() derives from a swept field follow it.

    A resolved experiment (e.g. `apdspec.load(...).experiment`) has the train and decompose seeds
    filled in from `seed`, the decompose fields the kind derives (APD's rank) and the plots from
    the target, data ranges from the target's input range and a data file's sha256 from the file; sweeping `seed` alone would otherwise leave the seeds fixed and every point would
    run the same thing. A derived field that still holds the value resolve() gives the base is
    reset to None so each point derives it again; one set to anything else stays as set. An
    unresolved experiment (`resolve(exp) != exp`) is taken as it is: its None fields are derived per
    point anyway and its set fields were set on purpose."""
    if resolve(exp) != exp:
        return exp
    target_swept = any(p.startswith("target.") for p in swept)
    tr, dc, rp, data = exp.train, exp.decompose, exp.report, exp.data
    own = {f.name for f in dataclasses.fields(dc)}
    try:
        arch = architecture(exp)
        kind_derived = [k for k in kind_spec(arch.kind).decompose_defaults(arch, dc.method) if k in own]
    except (OSError, KeyError, ValueError, TypeError):
        kind_derived = []
    bare = dataclasses.replace(
        exp, train=None if tr is None else dataclasses.replace(tr, seed=None),
        decompose=dataclasses.replace(dc, seed=None, **{k: None for k in kind_derived}),
        report=dataclasses.replace(rp, plots=None), data=dataclasses.replace(data, values=None, sha256=None))
    derived = resolve(bare)

    def follow(cond: bool, current: Any, default: Any) -> bool:
        return cond and current is not None and current == default

    if tr is not None and derived.train is not None and follow("seed" in swept, tr.seed, derived.train.seed):
        tr = dataclasses.replace(tr, seed=None)
    if follow("seed" in swept, dc.seed, derived.decompose.seed):
        dc = dataclasses.replace(dc, seed=None)
    for k in kind_derived:
        if follow(target_swept, getattr(dc, k), getattr(derived.decompose, k)):
            dc = dataclasses.replace(dc, **{k: None})
    if follow(target_swept, rp.plots, derived.report.plots):
        rp = dataclasses.replace(rp, plots=None)
    if follow(target_swept, data.values, derived.data.values):
        data = dataclasses.replace(data, values=None)
    if follow("data.file" in swept, data.sha256, derived.data.sha256):  # each point's file records its own
        data = dataclasses.replace(data, sha256=None)
    return dataclasses.replace(exp, train=tr, decompose=dc, report=rp, data=data)


def _units(axes: tuple[SweepAxis, ...]) -> list[list[SweepAxis]]:
    """Grid units in listed order: each ungrouped axis alone, each zip group at its first axis."""
    units: list[list[SweepAxis]] = []
    groups: dict[int, list[SweepAxis]] = {}
    for a in axes:
        if a.group is None:
            units.append([a])
        elif a.group in groups:
            groups[a.group].append(a)
        else:
            groups[a.group] = [a]
            units.append(groups[a.group])
    for u in units:
        if len({len(a.values) for a in u}) > 1:
            raise SpecValidationError([Issue(u[0].path, "zipped axes need the same number of values: "
                                             + ", ".join(f"{a.path} has {len(a.values)}" for a in u))])
    return units


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, float):
        return repr(v)  # shortest round-trip form: distinct values never share a label
    if isinstance(v, (tuple, list)):
        return "_".join(_fmt_value(x) for x in v)
    return str(v)


def _labels(values: list[dict]) -> list[str]:
    labels = [_UNSAFE.sub("_", ",".join(f"{p}={_fmt_value(v)}" for p, v in vals.items())) or "base"
              for vals in values]
    if any(len(s) > MAX_LABEL for s in labels) or len(set(labels)) < len(labels):
        width = max(3, len(str(len(labels) - 1)))
        labels = [f"p{i:0{width}d}_{s}"[:MAX_LABEL] for i, s in enumerate(labels)]
    return labels


def expand(exp: Experiment) -> tuple[list[SweepPoint], list[PointIssue]]:
    """Every point of `exp.sweep` that checks, and every issue of the points that do not.

    Validation only (resolve + validate per point), nothing runs. Raises SpecValidationError for a
    malformed sweep (an axis path that names no field, zipped axes of different lengths)."""
    axes = exp.sweep.axes if exp.sweep is not None else ()
    units = _units(axes)
    base = dataclasses.replace(_follow_derived(exp, {a.path for a in axes}), sweep=None)
    values, positions = [], []
    for idx in itertools.product(*(range(len(u[0].values)) for u in units)):
        values.append({a.path: _plain(a.values[i]) for u, i in zip(units, idx) for a in u})
        positions.append({a.path: i for u, i in zip(units, idx) for a in u})
    out, issues = [], []
    for i, (vals, pos, label) in enumerate(zip(values, positions, _labels(values))):
        try:
            e = base
            for path, v in vals.items():
                e = replace_path(e, path, v)
            out.append(SweepPoint(i, vals, label, check(e), pos))
        except SpecValidationError as err:
            issues += [PointIssue(i, label, vals, pos, x) for x in err.issues]
        except ValueError as err:  # a path that names no field: the same for every point
            raise SpecValidationError([Issue(path, f"sweep axis: {err}")]) from None
    return out, issues


def points(exp: Experiment) -> list[SweepPoint]:
    """Every point of `exp.sweep` (one point, label "base", without a sweep), each checked.

    Raises SpecValidationError listing every issue of every point that does not check."""
    out, issues = expand(exp)
    if issues:
        raise SpecValidationError([dataclasses.replace(x.issue, message=f"in sweep point {x.label}: {x.issue.message}")
                                   for x in issues])
    return out


# ------------------------------------------------------------------------------------------
# Running


def _run_point(exp_dict: dict, out_dir: str, spec_files: tuple, progress: bool, report: bool,
               on_dask: bool = False) -> dict:
    """One point, in this process or a worker: summary.json's content; a raising run becomes an
    "error" summary so that one bad point never stops the others. A full disk is raised: every other
    point would fail the same way. On a dask worker (`on_dask`) the run also stops, checkpointed, when
    the worker loses its scheduler or the driver gives the point up (`_dask_stop`); it then returns
    status "interrupted"."""
    t0 = time.time()
    try:
        return runner.run_to_dir(exp_dict, out_dir, spec_files=tuple(spec_files), progress=progress, report=report,
                                 resume=_resumable(exp_dict, out_dir), stop=_dask_stop() if on_dask else None)
    except Interrupted as e:  # a signal stops the sweep, not just this point (which resumes next time)
        if on_dask:  # the driver resubmits it, or is gone
            return {"status": "interrupted", "signal": e.signum, "wall_time_s": time.time() - t0}
        if runner.orphaned():  # the driver is gone: nobody reads this result or sends more points
            os._exit(128 + e.signum)  # the run directory is already written (interrupted, checkpointed)
        raise
    except Exception as e:
        if disk_full(e):
            raise
        return {"status": "error", "error": f"{type(e).__name__}: {e}", "wall_time_s": time.time() - t0}


def _dask_stop() -> Callable[[], int | None]:
    """On a dask worker: a stop() for run_to_dir that says SIGTERM once the worker is closing (it lost
    its scheduler, or was told to stop) or the running task was released (its driver gave up or
    died). Asked every step, it looks at most twice a second."""
    import signal

    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
    except (ImportError, ValueError, AttributeError, KeyError):  # not in a dask task
        return lambda: None
    seen = {"at": 0.0, "stop": None}

    def stop() -> int | None:
        now = time.monotonic()
        if seen["stop"] is None and now - seen["at"] >= 0.5:
            seen["at"] = now
            status = getattr(worker.status, "name", str(worker.status))
            task = worker.state.tasks.get(key)
            if status in _DASK_WORKER_GONE or task is None or task.state in ("cancelled", "released", "forgotten"):
                seen["stop"] = signal.SIGTERM
        return seen["stop"]

    return stop


_DASK_WORKER_GONE = ("closing", "closing_gracefully", "closed", "failed")


def _resumable(exp_dict: dict, point_dir: str) -> bool:
    """Whether `point_dir` holds a checkpoint of exactly this point's experiment (an interrupted run)."""
    if checkpoint.latest(point_dir) is None:
        return False
    try:
        with open(os.path.join(point_dir, "spec.json")) as f:
            return from_dict(json.load(f)) == check(from_dict(exp_dict))
    except (OSError, ValueError, TypeError, KeyError, SpecValidationError):
        return False


def _finished_summary(point: SweepPoint, point_dir: str) -> tuple[dict | None, str | None]:
    """(summary, None) of an earlier finished run of exactly this point whose arrays are all there;
    else (None, why a finished run there cannot be reused, or None if there is none)."""
    try:
        with open(os.path.join(point_dir, "summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(point_dir, "spec.json")) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return None, None
    same = spec == json.loads(json.dumps(to_dict(point.experiment)))  # through JSON: tuples -> lists
    if not same or not isinstance(summary, dict) or summary.get("status") not in FINISHED:
        return None, None
    missing = missing_arrays(point_dir, point.experiment.replicates)
    if missing is not None:
        return None, f"{missing} is missing or not a whole .npz"
    return summary, None


def _record(point: SweepPoint, summary: dict, resumed: bool) -> dict:
    per = {k: [float(x) for x in np.atleast_1d(v)] for k, v in (summary.get("metrics") or {}).items()}
    rec = {"index": point.index, "label": point.label, "values": point.values,
           "status": summary.get("status", "error"), "resumed": resumed,
           "wall_time_s": summary.get("wall_time_s"),
           "metrics": {k: (float(np.mean(v)) if v else None) for k, v in per.items()},
           "metrics_per_replicate": per,
           "expectations": [{"text": e.get("text"), "passed": bool(e.get("passed"))}
                            for e in summary.get("expectations", [])],
           "problems": [d.get("text", "") for d in summary.get("diagnostics") or () if d.get("severity") == "problem"],
           "smoke": bool(summary.get("smoke"))}
    if rec["status"] == "error":
        rec["error"] = summary.get("error", "unknown error")
    return rec


@contextlib.contextmanager
def _worker_env() -> Iterator[None]:
    """One BLAS thread per spawned worker unless the user chose otherwise (workers inherit the
    environment at spawn, before they import numpy)."""
    saved = {v: os.environ.get(v) for v in (*_BLAS_VARS, runner.SWEEP_PARENT_ENV)}
    for v in _BLAS_VARS:
        os.environ.setdefault(v, "1")
    os.environ[runner.SWEEP_PARENT_ENV] = str(os.getpid())
    try:
        yield
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


Todo = list[tuple[SweepPoint, str]]  # (point, its directory) still to run
Note = Callable[[str], None]


def _execute(todo: Todo, jobs: int, scheduler: str | None, progress: bool, report: bool, spec_files: tuple,
             out_dir: str, note: Note, worker_wait: float) -> Iterator[tuple[SweepPoint, dict]]:
    """(point, summary) as points finish: in order in this process, or as workers finish."""
    if not todo:
        return
    if scheduler is not None:
        yield from _execute_dask(todo, scheduler, report, spec_files, out_dir, note, worker_wait)
    elif jobs <= 1:
        for p, d in todo:
            yield p, _run_point(to_dict(p.experiment), d, spec_files, progress, report)
    else:
        yield from _execute_pool(todo, jobs, report, spec_files, note)


MAX_LOST = 2  # a point whose worker is lost this many times is recorded as an error, not run again


def _lost_again(lost: collections.Counter, point: SweepPoint, how: str, note: Note) -> dict | None:
    """Count a lost worker of `point`: None to run it again (from its checkpoint), or its error summary."""
    lost[point.index] += 1
    if lost[point.index] >= MAX_LOST:
        return {"status": "error", "error": f"its worker was lost {lost[point.index]} times ({how}); not run again"}
    note(f"point {point.label}: its worker was lost ({how}); it runs again in another worker, from its "
         "last checkpoint")
    return None


# --jobs N: a pool of our own rather than concurrent.futures': ProcessPoolExecutor fails every
# pending point when one worker dies (BrokenProcessPool) and lets the others take queued points
# after it gave up on them. Here each worker runs one point at a time, so a dead worker loses
# exactly its point's current checkpoint interval.


def _pool_worker(conn: Any) -> None:
    """A --jobs worker process: runs the points the driver sends, one at a time, until told to stop
    (None) or the driver is gone."""
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            reply = ("done", _run_point(*job))
        except BaseException as e:  # Interrupted (a signal), a full disk: the driver raises it
            reply = ("raised", e)
        try:
            conn.send(reply)
        except (OSError, ValueError):  # the driver is gone
            return
        except Exception:  # an exception that does not pickle
            conn.send(("raised", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))


@dataclasses.dataclass(eq=False)
class _Worker:
    proc: Any  # multiprocessing.Process
    conn: Any  # the driver's end of its pipe
    job: tuple | None = None  # (point, directory) while it runs one


class _Pool:
    """Up to `size` spawned worker processes (never forked: a fork after BLAS has started threads can
    deadlock). A worker that dies is replaced when the next point starts."""

    def __init__(self, size: int):
        import multiprocessing

        self.ctx, self.size, self.workers = multiprocessing.get_context("spawn"), size, []

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc.pid is not None]

    def busy(self) -> list[_Worker]:
        return [w for w in self.workers if w.job is not None]

    def start(self, job: tuple, args: tuple) -> None:
        w = next((w for w in self.workers if w.job is None and w.proc.is_alive()), None)
        if w is None:
            self.workers = [w for w in self.workers if w.job is not None or w.proc.is_alive()]
            parent, child = self.ctx.Pipe()
            w = _Worker(self.ctx.Process(target=_pool_worker, args=(child,), daemon=True), parent)
            w.proc.start()
            child.close()
            self.workers.append(w)
        w.job = job
        w.conn.send(args)

    def wait(self) -> list[tuple[tuple, str, Any]]:
        """(job, "done" | "raised" | "died", summary | exception | exit code) of the busy workers
        that answered or died."""
        from multiprocessing.connection import wait

        busy = self.busy()
        ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
        out = []
        for w in busy:
            if w.conn not in ready and w.proc.sentinel not in ready:
                continue
            job, w.job = w.job, None
            try:
                kind, value = w.conn.recv()
            except (EOFError, OSError):  # it died without answering
                w.proc.join()
                w.conn.close()
                self.workers.remove(w)
                kind, value = "died", w.proc.exitcode
            out.append((job, kind, value))
        return out

    def close(self, failed: bool) -> None:
        """Stop every worker: idle ones at once; busy ones (only when `failed`: the sweep stops) by
        SIGTERM, so that they checkpoint their points; all joined."""
        import signal

        for w in self.workers:
            if w.job is not None and failed:
                with contextlib.suppress(OSError):
                    os.kill(w.proc.pid, signal.SIGTERM)
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(None)
        for w in self.workers:
            w.proc.join(timeout=300)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
        self.workers = []


def _exit_text(code: int | None) -> str:
    import signal

    if code is not None and code < 0:
        try:
            return f"its process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"its process was killed by signal {-code}"
    return f"its process exited with code {code}"


def _execute_pool(todo: Todo, jobs: int, report: bool, spec_files: tuple,
                  note: Note) -> Iterator[tuple[SweepPoint, dict]]:
    queue, lost = collections.deque(todo), collections.Counter()
    pool = _Pool(min(jobs, len(todo)))
    failed = True
    with _worker_env(), _forward_signals(pool.pids) as signalled:
        try:
            while (queue and not signalled) or pool.busy():
                while queue and not signalled and len(pool.busy()) < pool.size:
                    p, d = queue.popleft()
                    pool.start((p, d), (to_dict(p.experiment), d, spec_files, False, report))
                for (p, d), kind, value in pool.wait():
                    if kind == "raised":
                        raise value
                    if kind == "died" and signalled:  # killed by the signal passed on, before it could stop
                        queue.appendleft((p, d))
                        continue
                    if kind == "died":
                        value = _lost_again(lost, p, _exit_text(value), note)
                        if value is None:
                            queue.appendleft((p, d))
                            continue
                    yield p, value
            if signalled:  # no worker was running a point that could report it
                raise Interrupted(signalled[0], 0)
            failed = False
        finally:
            pool.close(failed)


@contextlib.contextmanager
def _forward_signals(pids: Callable[[], list[int]]) -> Iterator[list[int]]:
    """SIGINT / SIGTERM to the sweep's driver are passed on to its workers, which checkpoint their
    points and stop (their Interrupted then ends the sweep here, after the pool has shut down); the
    signals received are yielded (no new point starts after one). Ctrl-C reaches the workers anyway
    (one process group); `kill PID` reaches only the driver. Workers also stop by themselves if the
    driver dies outright (runner._signals_stop)."""
    import signal
    import threading

    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def forward(signum, frame):
        got.append(signum)
        for pid in pids():
            with contextlib.suppress(OSError):  # already gone
                os.kill(pid, signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --scheduler ADDRESS: dask.distributed.

DASK_WAIT_ENV = "APDSPEC_DASK_WAIT"  # seconds without a worker before the driver says so (default 30)
LOCK_WAIT_S = 30.0  # after losing the scheduler: how long to wait for running points to stop writing


class SchedulerLost(RuntimeError):
    """The dask scheduler went away mid-sweep. Unfinished points are left "pending" in sweep.json, their
    checkpoints in place; `writing` lists those still locked by a live worker when the driver gave up."""

    def __init__(self, scheduler: str, unfinished: list[str], writing: list[str]):
        self.scheduler, self.unfinished, self.writing = scheduler, unfinished, writing
        super().__init__(f"lost the dask scheduler {scheduler} with {len(unfinished)} "
                         f"point{'' if len(unfinished) == 1 else 's'} unfinished")


def _execute_dask(todo: Todo, scheduler: str, report: bool, spec_files: tuple, out_dir: str, note: Note,
                  worker_wait: float) -> Iterator[tuple[SweepPoint, dict]]:
    import signal

    try:
        from dask.distributed import Client, wait
    except ImportError as e:
        raise DistributedUnavailable(
            f"scheduler {scheduler!r} needs dask.distributed, which is not installed: "
            "pip install 'apdspec[distributed]'") from e
    lost = collections.Counter()
    with _quiet_distributed(), Client(scheduler) as client, \
            runner.signal_flag((signal.SIGINT,)) as signalled:
        def submit(p: SweepPoint, d: str) -> Any:
            return client.submit(_run_point, to_dict(p.experiment), d, spec_files, False, report, True, pure=False)

        futures = {submit(p, d): (p, d) for p, d in todo}
        idle_since, told, asked = time.monotonic(), False, 0.0
        while futures:
            # Ctrl-C is acted on between dask calls, never inside one: a KeyboardInterrupt in one of
            # the client's blocking calls could leave its event loop mid-call and the exit hanging
            if signalled:
                raise KeyboardInterrupt
            try:
                done = wait(list(futures), timeout=1.0, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                done = set()
            except CancelledError:  # the client cancels every future when it loses the scheduler
                done = set(futures)
            if client.status != "running" or any(f.cancelled() for f in done):
                raise _scheduler_lost(scheduler, list(futures.values()))
            for fut in done:
                p, d = futures.pop(fut)
                summary = _result(fut)
                if summary.get("status") == "interrupted":  # its worker stopped: it resumes elsewhere
                    summary = _lost_again(lost, p, "the worker stopped", note)
                    if summary is None:
                        futures[submit(p, d)] = (p, d)
                        continue
                yield p, summary
            now = time.monotonic()
            if done or now - asked < 2.0:
                continue
            asked = now
            try:
                workers = len(client.nthreads())
            except OSError:
                raise _scheduler_lost(scheduler, list(futures.values())) from None
            if workers:
                idle_since, told = now, False
            elif not told and now - idle_since >= worker_wait:
                told = True
                host = " --host 127.0.0.1" if re.search(r"//(127\.0\.0\.1|localhost)[:/]?", scheduler) else ""
                note(f"no dask worker has joined {scheduler} for {worker_wait:.0f} s; the points wait for one. "
                     f"Start workers with: OPENBLAS_NUM_THREADS=1 dask worker {scheduler} --nthreads 1{host} "
                     f"(Ctrl-C stops the sweep; resume it with: apdspec run --resume {out_dir})")


def _scheduler_lost(scheduler: str, running: Todo) -> SchedulerLost:
    """After the scheduler went away: wait (up to LOCK_WAIT_S) until no live process still holds the
    lock of an unfinished point (its worker checkpoints and stops within a second, see _dask_stop),
    so nothing writes into the sweep once the driver has given up."""
    deadline = time.monotonic() + LOCK_WAIT_S
    writing = [p.label for p, d in running if lock_holder(d)]
    while writing and time.monotonic() < deadline:
        time.sleep(0.2)
        writing = [p.label for p, d in running if lock_holder(d)]
    return SchedulerLost(scheduler, [p.label for p, _ in running], writing)


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """dask.distributed's own logging off while the driver uses its client: a lost scheduler is
    reported by the driver in one line, not by the client's reconnection tracebacks. Left off if the
    sweep stops on an error (the client's event loop may still log while this process exits)."""
    import logging

    names = ["distributed"] + [n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL + 1)
    yield
    for n, level in saved.items():
        logging.getLogger(n).setLevel(level)


def _result(fut: Any) -> dict:
    """A dask worker's summary; a task that failed (its workers killed too often, say) is that
    point's error. A full disk stops the sweep."""
    try:
        return fut.result()
    except Exception as e:
        if disk_full(e):
            raise
        return {"status": "error", "error": f"worker failed: {type(e).__name__}: {e}"}


def run_sweep(exp: Experiment | dict, out_dir: str, *, jobs: int = 1, progress: bool = False,
              spec_text: str | None = None, spec_files: tuple = (), scheduler: str | None = None,
              report: bool = True, on_point: Callable[[dict], None] | None = None,
              spec_original: str | None = None, on_note: Note | None = None,
              worker_wait: float | None = None) -> dict:
    """Run every point into `out_dir/<label>/`; write and return sweep.json's content.

    `spec_text` (the resolved spec with its sweep block) is written as out_dir/spec.apd,
    `spec_original` (the file as written, comments included) as out_dir/spec.original.apd.

    `report=False` skips each point's plots and report; `on_point(record)` is called as each point
    finishes (or is reused), `on_note(text)` with what the user should know meanwhile (a lost
    worker, a finished point run again because its arrays are gone, a scheduler without workers for
    `worker_wait` seconds: default $APDSPEC_DASK_WAIT, else 30). A point whose run raises is
    recorded with status "error". With `jobs > 1` a worker process that dies is replaced and its
    point runs again from its checkpoint (MAX_LOST times at most). Raises SchedulerLost if the dask
    scheduler goes away, and an OSError if the disk is full."""
    if isinstance(exp, dict):
        exp = from_dict(exp)
    pts = points(exp)  # every point is checked before any compute is spent
    out_dir = os.path.abspath(out_dir)
    if worker_wait is None:
        worker_wait = float(os.environ.get(DASK_WAIT_ENV) or 30.0)
    with locked(out_dir):  # a second sweep on the same directory is refused (RunDirBusy)
        if spec_original is not None:
            write_text(os.path.join(out_dir, "spec.original.apd"), spec_original)
        return _run_points(exp, pts, out_dir, jobs, progress, spec_text, spec_files, scheduler, report, on_point,
                           on_note or (lambda text: None), worker_wait)


def _run_points(exp: Experiment, pts: list[SweepPoint], out_dir: str, jobs: int, progress: bool,
                spec_text: str | None, spec_files: tuple, scheduler: str | None, report: bool,
                on_point: Callable[[dict], None] | None, note: Note, worker_wait: float) -> dict:
    if spec_text is not None:
        write_text(os.path.join(out_dir, "spec.apd"), spec_text)
    write_text(os.path.join(out_dir, "spec.json"), to_json(exp))  # what `apdspec run --resume DIR` runs
    files = tuple(os.path.abspath(p) for p in spec_files)
    t0 = time.time()
    sweep = {"format": SWEEP_FORMAT, "experiment": exp.name,
             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "status": "running",
             "axes": [to_dict(a) for a in (exp.sweep.axes if exp.sweep else ())],
             "table_metrics": metric_columns(pts[0].experiment), "expectations": [],
             "points": [{"index": p.index, "label": p.label, "values": p.values, "status": "pending"} for p in pts],
             "spec_files": [file_record(p) for p in files], "wall_time_s": None}

    def done(point: SweepPoint, summary: dict, resumed: bool) -> None:
        rec = _record(point, summary, resumed)
        sweep["points"][point.index] = rec
        _write(out_dir, sweep, pts[0].experiment)  # after every point: an interrupted sweep leaves a table
        if on_point is not None:
            on_point(rec)

    todo = []
    for p in pts:
        d = os.path.join(out_dir, p.label)
        try:
            refuse_link(d)  # a point writes only inside the sweep directory
        except LinkedDirectory as e:
            done(p, {"status": "error", "error": f"{type(e).__name__}: {e}"}, False)
            continue
        previous, why_not = _finished_summary(p, d)
        if previous is not None:
            done(p, previous, True)
            continue
        if why_not is not None:  # it no longer claims to be finished, and runs again
            note(f"point {p.label}: finished earlier, but {why_not}; it runs again")
            os.unlink(os.path.join(d, "summary.json"))
        todo.append((p, d))
    for p, summary in _execute(todo, jobs, scheduler, progress, report, files, out_dir, note, worker_wait):
        done(p, summary, False)
    statuses = {r["status"] for r in sweep["points"]}
    sweep["status"] = "ok" if statuses == {"ok"} else "error" if "error" in statuses else "expectations_failed"
    sweep["wall_time_s"] = time.time() - t0
    _write(out_dir, sweep, pts[0].experiment)
    if write_page(out_dir, sweep):
        write_markdown(out_dir, sweep)  # now with the page's figure
    return sweep


# ------------------------------------------------------------------------------------------
# sweep.json and sweep.md


def metric_columns(exp: Experiment) -> list[str]:
    """The metrics a sweep shows per point: those with expectations first, then the report's."""
    names = [e.metric for e in exp.report.expect] + list(exp.report.metrics or ())
    return list(dict.fromkeys(names))


def _write(out_dir: str, sweep: dict, exp: Experiment) -> None:
    recs = [r for r in sweep["points"] if r["status"] != "pending"]
    sweep["expectations"] = [
        {"text": e.text or describe(e),
         "passed_points": sum(1 for r in recs if i < len(r.get("expectations", [])) and r["expectations"][i]["passed"]),
         "points": len(sweep["points"])}
        for i, e in enumerate(exp.report.expect)]
    write_json(os.path.join(out_dir, "sweep.json"), sweep)
    write_markdown(out_dir, sweep)


def write_markdown(out_dir: str, sweep: dict) -> str:
    """Write `out_dir/sweep.md` (atomically) for sweep.json's content `sweep`; returns its path."""
    path = os.path.join(out_dir, "sweep.md")
    write_text(path, markdown(sweep, out_dir))
    return path


def load_sweep(out_dir: str) -> dict:
    """sweep.json's content; ValueError if it is not a sweep file this version writes."""
    with open(os.path.join(out_dir, "sweep.json")) as f:
        sweep = json.load(f)
    if not isinstance(sweep, dict) or sweep.get("format") != SWEEP_FORMAT:
        found = sweep.get("format") if isinstance(sweep, dict) else type(sweep).__name__
        raise ValueError(f"{os.path.join(out_dir, 'sweep.json')} is not an {SWEEP_FORMAT} file (format {found!r})")
    return sweep


def render(out_dir: str, point_reports: bool = False,
           on_error: Callable[[str, Exception], None] | None = None) -> list[str]:
    """Re-render sweep.md and sweep.html from the saved sweep.json; returns the paths written.

    With `point_reports`, first re-render the plots and report of every finished point (status ok or
    expectations_failed) with `runtime.report.render`, so sweep.md links them. A point whose report
    raises is passed to `on_error(label, exception)` and skipped (without `on_error` it raises)."""
    sweep = load_sweep(out_dir)
    written: list[str] = []
    if point_reports:
        from ..report.document import render as render_report

        for rec in sweep["points"]:
            point_dir = os.path.join(out_dir, rec["label"])
            if rec.get("status") not in FINISHED or not os.path.exists(os.path.join(point_dir, "summary.json")):
                continue
            try:
                written += render_report(point_dir)
            except Exception as e:
                if on_error is None:
                    raise
                on_error(rec["label"], e)
    page = write_page(out_dir, sweep)
    written.append(write_markdown(out_dir, sweep))
    return written + page


def write_page(out_dir: str, sweep: dict) -> list[str]:
    """sweep.html and its figure (report/pages.py: every metric against every axis); the paths
    written. A page that fails to draw is noted in sweep.json's `page_error`, never fails the sweep."""
    from ..report.pages import sweep_page

    try:
        written = sweep_page(out_dir, sweep)
        sweep.pop("page_error", None)
        return written
    except Exception as e:  # the table and the points are what matter
        if disk_full(e):
            raise
        sweep["page_error"] = f"{type(e).__name__}: {e}"
        write_json(os.path.join(out_dir, "sweep.json"), sweep)
        return []


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (tuple, list)):  # tuples in memory, lists once read back from sweep.json
        return "[" + ", ".join(_cell(x) for x in v) + "]"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown(sweep: dict, out_dir: str | None = None) -> str:
    """sweep.md: one row per point, then how many points met each expectation."""
    pts, axes = sweep["points"], sweep["axes"]
    paths = list(dict.fromkeys(a["path"] for a in axes))
    metrics = [m for m in sweep["table_metrics"] if any(m in r.get("metrics", {}) for r in pts)]
    counts = {s: sum(r["status"] == s for r in pts) for s in ("ok", "expectations_failed", "error", "pending")}
    resumed = sum(bool(r.get("resumed")) for r in pts)
    units = _units(tuple(SweepAxis(a["path"], tuple(a["values"]), a["group"]) for a in axes))
    shape = " x ".join(_axis_text(u) for u in units) or "no axes"
    lines = [f"# Sweep: {sweep['experiment']}", "",
             f"{len(pts)} points over {shape}. Status: **{sweep['status']}** ("
             + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ")."]
    if sweep.get("wall_time_s") is not None:
        lines[-1] += f" Wall time {_duration(sweep['wall_time_s'])}."
    if resumed:
        lines.append(f"{resumed} point{'s' if resumed != 1 else ''} reused from an earlier run of this sweep.")
    lines += ["", "| point | " + " | ".join(paths + ["status"] + metrics + ["wall time (s)"]) + " |",
              "|" + "---|" * (len(paths) + len(metrics) + 3)]
    for r in pts:
        name = r["label"]
        if out_dir is not None and os.path.exists(os.path.join(out_dir, name, "report.md")):
            name = f"[{name}]({name}/report.md)"
        status = r["status"] + (" (reused)" if r.get("resumed") else "")
        if r.get("problems"):
            status += f", {len(r['problems'])} problem{'s' if len(r['problems']) != 1 else ''}"
        cells = [name] + [_cell(r["values"].get(p)) for p in paths] + [status]
        cells += [_cell(r.get("metrics", {}).get(m)) for m in metrics]
        cells.append("" if r.get("wall_time_s") is None else f"{r['wall_time_s']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    if out_dir is not None and os.path.exists(os.path.join(out_dir, "plots", "sweep.png")):
        lines += ["", "Every metric against every axis (mean +- std over replicates and seeds; "
                      "[sweep.html](sweep.html) has the figure and this table with links to the reports):", "",
                  "![every metric against every axis](plots/sweep.png)"]
    lines += ["", "Metrics are means over replicates; sweep.json and each point's summary.json hold the "
                  "per-replicate values."]
    if sweep["expectations"]:
        lines += ["", "## Expectations", "", "| expectation | points where it passed |", "|---|---|"]
        lines += [f"| {_cell(e['text'])} | {e['passed_points']} of {e['points']} |" for e in sweep["expectations"]]
    errors = [r for r in pts if r["status"] == "error"]
    if errors:
        lines += ["", "## Errors", ""] + [f"- `{r['label']}`: {_cell(r.get('error'))}" for r in errors]
    return "\n".join(lines) + "\n"


def _duration(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _axis_text(unit: list[SweepAxis]) -> str:
    if len(unit) == 1:
        return f"{unit[0].path} ({len(unit[0].values)})"
    return "zip(" + ", ".join(a.path for a in unit) + f") ({len(unit[0].values)})"

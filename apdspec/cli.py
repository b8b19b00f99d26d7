"""The `apdspec` command line (also `python -m apdspec`).

Exit codes: 0 success; 1 a run (or a sweep point) failed, did not meet its expectations or has a
problem its diagnostics found, a sweep point's report failed to render, the disk is full, memory ran
out, or `fmt --check` found files to reformat; 2 spec errors (a spec whose estimated peak memory
exceeds the machine's or --max-memory included) and command-line usage errors (e.g. an --out that is
a file); 3 an internal error (a bug: rerun with --debug for the traceback).
"""
from __future__ import annotations

import os

# Pin BLAS to one thread before anything imports numpy (oversubscription is 100x slower on small VMs).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from typing import Sequence  # noqa: E402

from .errors import SpecError  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_SPEC, EXIT_INTERNAL = 0, 1, 2, 3


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _debug_internal(e: SpecError, debug: bool) -> None:
    """With --debug, the traceback of the bug behind a safety-net SpecError."""
    if debug and e.internal and e.__cause__ is not None:
        traceback.print_exception(type(e.__cause__), e.__cause__, e.__cause__.__traceback__)


# ------------------------------------------------------------------------------------------
# Commands


def cmd_check(args) -> int:
    from .loader import load
    from .resources import budget_for, check_fits
    from .summary import summary_lines

    status = EXIT_OK
    budget = budget_for(args.max_memory)
    for path in args.files:
        try:
            spec = load(path, args.set)
            check_fits(spec, budget, path)
        except SpecError as e:
            _debug_internal(e, args.debug)
            _err(e.render())
            n = len(e.diagnostics)
            _err(f"{path}: {n} error{'' if n == 1 else 's'}")
            status = EXIT_SPEC
            continue
        print(f"{path}: ok")
        try:
            lines = summary_lines(spec.experiment, written_as=spec.state.kind)
        except Exception as e:  # the summary is informative only; never fail a valid spec on it
            if args.debug:
                traceback.print_exc()
            lines = [f"  (no summary: {type(e).__name__}: {e})"]
        print("\n".join(lines), flush=True)
        if not args.no_estimate:
            print(f"  {'time':<10}  {_estimate_line(spec, args.debug)}", flush=True)
    return status


def _estimate_line(spec, debug: bool) -> str:
    """The estimated wall time of `apdspec run` on a checked spec (every sweep point; --jobs as the
    default, one point per core), from a calibration that times a few real steps."""
    try:
        if spec.experiment.sweep is None:
            return _estimate_text(spec.experiment, None, debug)
        from runtime.pipeline.sweep import points

        from .build import build

        pts = points(build(spec.state, spec.experiment.name))
        return _estimate_text(None, pts, debug, min(len(pts), os.cpu_count() or 1))
    except Exception as e:  # informative only: never fail a valid spec on it
        if debug:
            traceback.print_exc()
        return f"(no estimate: {type(e).__name__}: {e})"


def _estimate_text(exp, pts, debug: bool, jobs: int = 1, budget_s: float = 1.5) -> str:
    """The estimated wall time of one run (`exp`) or of the sweep points `pts` run `jobs` at a time,
    from timing a few real steps for about `budget_s` seconds (the first point's, for a sweep)."""
    from runtime.pipeline.estimate import duration, estimate

    try:
        if pts is None:
            return estimate(exp, budget_s=budget_s).describe()
        first = estimate(pts[0].experiment, budget_s=budget_s)
        per = []
        for p in pts:  # the first point's step times, each point's own step counts
            e = p.experiment
            trains = first.target_step_ms is not None and e.train is not None
            per.append((first.target_step_ms * e.train.steps if trains else 0.0) / 1e3
                       + first.step_ms * e.decompose.steps / 1e3 + first.parts["finish"])
        total = sum(per) / jobs  # points run `jobs` at a time
        return (f"~{duration(total)} for {len(pts)} points ({jobs} at a time; a point ~{duration(min(per))}"
                + (f" to ~{duration(max(per))}" if max(per) > 1.05 * min(per) else "")
                + f"; step times of the first point: {first.describe()})")
    except Exception as e:  # informative only: never fail a valid spec on it
        if debug:
            traceback.print_exc()
        return f"(no estimate: {type(e).__name__}: {e})"


BANNER_BUDGET_S = 0.5  # seconds `apdspec run` spends timing steps for its start banner's estimate


def _banner(out: str, rows: list[tuple[str, str]]) -> None:
    """The start of `apdspec run`: the output directory first, then what runs and how long it should take."""
    print(f"{'output':<9} {out}", flush=True)
    for key, text in rows:
        print(f"{key:<9} {text}", flush=True)


def _what_runs(exp) -> str:
    """One line on an experiment: its name, target, method and replicates."""
    from runtime.spec import method_spec
    from runtime.spec.checks import target_kind

    dc = exp.decompose
    restarts = f" x {dc.restarts} inits" if getattr(dc, "restarts", 1) > 1 else ""
    return (f"experiment {exp.name}: {target_kind(exp)} target, {dc.method} ({method_spec(dc.method).components_text(dc)}, "
            f"{dc.steps:,} steps), {exp.replicates} replicate{'s' if exp.replicates != 1 else ''}{restarts}")


def cmd_fmt(args) -> int:
    from .fmt import format_text
    from .loader import read_source

    status = EXIT_OK
    same = changed = 0
    for path in args.files:
        try:
            text = read_source(path)
            new = format_text(text, path)
        except SpecError as e:
            _err(e.render())
            status = EXIT_SPEC
            continue
        if new == text:
            same += 1
            continue
        changed += 1
        if args.check:
            print(f"would reformat: {path}")
            status = max(status, EXIT_FAILED)
        else:
            from runtime.store.rundir import write_text

            write_text(path, new)  # atomic: a crash never leaves a half-written spec
            print(f"reformatted: {path}")
    files = lambda n: f"{n} file{'' if n == 1 else 's'}"  # noqa: E731
    done = [f"{files(changed)} {'would be reformatted' if args.check else 'reformatted'}"] if changed else []
    if same or not changed:
        done.append(f"{files(same)} already formatted")
    print(", ".join(done))
    return status


def _resume(args) -> int:
    """apdspec run --resume DIR: continue the run in DIR from its newest checkpoint, or the sweep
    in DIR (its finished points reused, its interrupted ones resumed from their checkpoints)."""
    import json as _json

    d = args.resume
    try:
        with open(os.path.join(d, "spec.json")) as f:
            exp = _json.load(f)
    except (OSError, ValueError) as e:
        _err(f"apdspec run: cannot resume {d}: no readable spec.json ({e})")
        return EXIT_FAILED
    if _unusable_out("run", d, "--resume"):
        return EXIT_SPEC
    if _refused_resume(args, exp, os.path.join(d, "spec.json")):
        return EXIT_SPEC
    # a sweep directory: its spec.json has the sweep (sweep.json is written only as points finish,
    # so a sweep stopped during its first points has none yet)
    is_sweep = isinstance(exp, dict) and bool(exp.get("sweep"))
    if is_sweep or os.path.exists(os.path.join(d, "sweep.json")):
        from runtime.spec import SpecValidationError, from_dict

        try:
            raw = from_dict(exp)
            files = []
            if os.path.exists(os.path.join(d, "sweep.json")):
                with open(os.path.join(d, "sweep.json")) as f:
                    files = [r["path"] for r in _json.load(f).get("spec_files", []) if os.path.exists(r["path"])]
        except (OSError, ValueError, TypeError, KeyError, AttributeError, SpecValidationError) as e:
            _err(f"apdspec run: cannot resume the sweep in {d}: {e}")
            return EXIT_FAILED
        return _run_sweep(args, raw, d, None, tuple(files))
    return _run_one(args, exp, d, None, (), resume=True)


def _refused_resume(args, exp_dict, where: str) -> bool:
    """Whether the run (every point of the sweep) in spec.json `exp_dict` does not fit in memory,
    after saying why (no spans to point at: the message names spec.json)."""
    from runtime.pipeline.resources import check_memory
    from runtime.pipeline.sweep import points
    from runtime.spec import SpecValidationError, from_dict

    from .resources import refusal_issue
    from .state import lang_path

    budget = _run_budget(args)
    if budget is None:
        return False
    try:
        raw = from_dict(exp_dict)
        pts = points(raw)
    except (ValueError, TypeError, KeyError, AttributeError, SpecValidationError):
        return False  # the resume itself says what is wrong with spec.json
    for p in pts:
        r = check_memory(p.experiment, budget)
        if r is not None:
            i = refusal_issue(r, point=raw.sweep is not None)
            point = f"sweep point {p.label}: " if raw.sweep is not None else ""
            _err(f"{where}: error: {point}{lang_path(i.path)}: {i.message}\nhint: {i.hint}")
            return True
    return False


def _run_budget(args):
    """The memory budget of a run: --max-memory, else what this machine has available; with
    --scheduler only --max-memory (the points run on the workers' machines)."""
    from .resources import budget_for

    if args.scheduler and args.max_memory is None:
        return None
    return budget_for(args.max_memory)


def _out_of_memory(command: str, e: MemoryError, out: str | None) -> int:
    """A MemoryError the estimate did not foresee: one line, exit 1 (a run is marked "error")."""
    what = str(e) or "an allocation failed"
    _err(f"apdspec {command}: out of memory: {what}" + (f"; the run in {out} is marked error" if out else "")
         + "; lower the sizes `apdspec check` names in its memory line, or free memory")
    return EXIT_FAILED


def _run_one(args, exp, out: str, spec_text, spec_files, resume: bool = False, spec_original=None) -> int:
    import signal as _signal

    from runtime.engine.decompose import Interrupted
    from runtime.store.files import LinkedDirectory, disk_full
    from runtime.store.rundir import RunDirBusy

    from runtime.pipeline.runner import run_to_dir
    if resume:
        _banner(out, [("resume", "from its newest checkpoint (the progress line shows the time left)")])
    elif args.quiet:
        _banner(out, [])
    else:
        smoke = [("smoke", "a smoke run: it checks that everything runs, its numbers are not a result")] \
            if exp.report.smoke else []
        _banner(out, [("spec", f"{args.spec} ({_what_runs(exp)})"), *smoke,
                      ("estimate", _estimate_text(exp, None, args.debug, budget_s=BANNER_BUDGET_S))])
    try:
        summary = run_to_dir(exp, out, spec_text=spec_text, spec_files=list(spec_files), progress=not args.quiet,
                             resume=resume, checkpoint_every=args.checkpoint_every, spec_original=spec_original)
    except RunDirBusy as e:
        _err(f"apdspec run: {e}")
        return EXIT_FAILED
    except MemoryError as e:  # summary.json already says "error" with the reason
        return _out_of_memory("run", e, out)
    except FloatingPointError as e:  # NonFiniteError: name what diverged, and what was kept
        from runtime.store import checkpoint

        _err(f"apdspec run: the run diverged: {e}")
        _err(f"hint: {getattr(e, 'hint', 'lower the learning rate')}")
        last = checkpoint.latest(out)
        if last is not None:
            _err(f"note: the last checkpoint before it is kept: {last}")
        return EXIT_FAILED
    except FileNotFoundError as e:
        if not resume:
            raise
        _err(f"apdspec run: cannot resume: {e}")
        return EXIT_FAILED
    except LinkedDirectory as e:  # planted while the run lasted (before, --out is refused as a usage error)
        _err(f"apdspec run: {e}; the run in {out} is marked error")
        return EXIT_FAILED
    except OSError as e:
        if not disk_full(e):
            raise
        return _no_space("run", out, out)
    except Interrupted as e:
        name = _signal.Signals(e.signum).name
        saved = ("in target training, nothing saved yet" if e.phase == "target"
                 else "with a checkpoint")
        _err(f"apdspec run: {name}: stopped before step {e.step} {saved}; resume with: "
             f"apdspec run --resume {out}")
        return 128 + e.signum
    _print_run_summary(summary)
    verdict, code = _verdict(summary if isinstance(summary, dict) else {})
    print(f"{out}: {verdict}")
    return code


def cmd_run(args) -> int:
    from .loader import load

    if args.resume:
        if args.spec or args.set:
            _err("apdspec run: --resume DIR takes no SPEC or -s: the run continues with DIR/spec.json")
            return EXIT_SPEC
        return _resume(args)
    if not args.spec:
        _err("apdspec run: give a SPEC to run, or --resume DIR")
        return EXIT_SPEC
    from .resources import check_fits

    spec = load(args.spec, args.set)
    check_fits(spec, _run_budget(args), args.spec)  # before anything runs or is written
    exp = spec.experiment
    out = args.out or os.path.join("runs", exp.name, datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    if _unusable_out("run", out):
        return EXIT_SPEC
    if exp.sweep is not None:
        from .build import build

        # The unresolved experiment, so that defaults derived from swept fields (the train and
        # decompose seeds from `seed`, the rank from the target) are derived per point.
        return _run_sweep(args, build(spec.state, exp.name), out, spec.text, tuple(spec.files),
                          spec.sources.get(args.spec))
    if (args.jobs or 1) > 1 or args.scheduler:
        _err("apdspec run: note: --jobs and --scheduler apply to sweeps; this spec has no sweep")
    held = _existing_run(out)
    if held is not None and not args.force:
        if held in ("interrupted", "unknown"):  # unknown: no summary, e.g. killed with kill -9
            _err(f"apdspec run: {out} already holds a run that did not finish; continue it with: "
                 f"apdspec run --resume {out} (or pass --force to start it over)")
        else:
            _err(f"apdspec run: {out} already holds a finished run (status {held}); choose another --out, "
                 "or pass --force to replace it")
        return EXIT_FAILED
    return _run_one(args, exp, out, spec.text, spec.files, spec_original=spec.sources.get(args.spec))


def _unusable_out(command: str, out: str, flag: str = "--out") -> bool:
    """Whether `out` cannot be a run directory (a file, a path that cannot be created or written),
    after saying why; creates it otherwise."""
    from runtime.store.rundir import out_dir_problem

    problem = out_dir_problem(out)
    if problem is not None:
        _err(f"apdspec {command}: {flag} {out}: {problem}; give a directory you can write to")
    return problem is not None


def _no_space(command: str, where: str, resume: str | None) -> int:
    """A write failed for lack of disk space: one line (the temporary files are already removed and
    the run is not marked ok), exit 1."""
    _err(f"apdspec {command}: no space left on {where}: free some space, then "
         + (f"resume with: apdspec run --resume {resume}" if resume else "run it again"))
    return EXIT_FAILED


def _existing_run(out: str) -> str | None:
    """The status of the run already in directory `out` ("unknown" if it never wrote a summary), or None."""
    import json as _json

    if not os.path.exists(os.path.join(out, "spec.json")):
        return None
    try:
        with open(os.path.join(out, "summary.json")) as f:
            return str(_json.load(f).get("status", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


def _run_sweep(args, raw, out: str, spec_text: str | None, spec_files: tuple, spec_original: str | None = None) -> int:
    """Every point of the sweep `raw` (an unresolved Experiment) into OUT/<label>/; one line per
    finished point, then sweep.md. `spec_original`: the spec file as written (spec.original.apd)."""
    from .state import lang_path

    from runtime.pipeline.sweep import points
    from runtime.spec import SpecValidationError
    from runtime.pipeline.sweep import DistributedUnavailable, SchedulerLost, metric_columns, run_sweep
    from runtime.engine.decompose import Interrupted
    from runtime.store.files import disk_full
    from runtime.store.rundir import RunDirBusy

    try:
        pts = points(raw)  # load() has checked every point; this fails only if e.g. a target file changed since
    except SpecValidationError as e:
        for i in e.issues:
            _err(f"{args.spec or args.resume}: error: {lang_path(i.path)}: {i.message}")
        return EXIT_SPEC
    # one point per core by default: each worker runs one BLAS thread (runtime/pipeline/sweep.py); a
    # second BLAS thread speeds a step up far less than 2x (benchmarks/RESULTS.md), a second process ~2x
    jobs = args.jobs or min(len(pts), os.cpu_count() or 1)
    if jobs > 1 and not args.scheduler:
        jobs = _jobs_that_fit(args, pts, jobs)
        if jobs is None:
            return EXIT_SPEC
    key = metric_columns(pts[0].experiment)[:4]
    width = len(str(len(pts)))
    finished = [0]

    def line(rec: dict) -> None:
        finished[0] += 1
        status = rec["status"] + (" (reused)" if rec.get("resumed") else "")
        parts = [f"[{finished[0]:>{width}}/{len(pts)}] {rec['label']}  {status}"]
        if rec["status"] == "error":
            parts.append(rec.get("error", ""))
        parts += [f"{m} {rec['metrics'][m]:.4g}" for m in key if rec["metrics"].get(m) is not None]
        if rec["expectations"]:
            parts.append(f"expectations {sum(e['passed'] for e in rec['expectations'])}/{len(rec['expectations'])}")
        if rec.get("problems"):
            parts.append(f"{len(rec['problems'])} problem{'s' if len(rec['problems']) != 1 else ''}")
        if rec.get("wall_time_s") is not None:
            parts.append(f"({rec['wall_time_s']:.1f} s)")
        print("  ".join(parts), flush=True)

    where = f" on {args.scheduler}" if args.scheduler else f", {jobs} at a time" if jobs > 1 else ""
    rows = [("sweep", f"{len(pts)} points{where} ({_what_runs(pts[0].experiment)} at the first point)")]
    if not args.quiet and not args.resume:
        rows.append(("estimate", _estimate_text(None, pts, args.debug, min(jobs, len(pts)), BANNER_BUDGET_S)))
    _banner(out, rows)
    try:
        sweep = run_sweep(raw, out, jobs=jobs, scheduler=args.scheduler, progress=not args.quiet and jobs == 1,
                          spec_text=spec_text, spec_files=spec_files, on_point=line,
                          spec_original=spec_original, on_note=lambda text: _err(f"apdspec run: note: {text}"))
    except (DistributedUnavailable, RunDirBusy) as e:
        _err(f"apdspec run: {e}")
        return EXIT_FAILED
    except Interrupted as e:
        _err(f"apdspec run: stopped by signal {e.signum} with a checkpoint of the running point; resume the sweep "
             f"with: apdspec run --resume {out}")
        return 128 + e.signum
    except SchedulerLost as e:
        writing = f"; still being written by their workers: {', '.join(e.writing)}" if e.writing else ""
        _err(f"apdspec run: {e} (checkpointed); resume with: apdspec run --resume {out} --scheduler "
             f"{args.scheduler} once it is back, or without --scheduler to run them here{writing}")
        return EXIT_FAILED
    except OSError as e:
        if disk_full(e):
            return _no_space("run", out, out)
        if not args.scheduler:
            raise
        _err(f"apdspec run: cannot use the scheduler {args.scheduler}: {e}")
        return EXIT_FAILED
    for e in sweep["expectations"]:
        print(f"  {e['text']}: passed at {e['passed_points']} of {e['points']} points")
    flagged = [r["label"] for r in sweep["points"] if r.get("problems") and not r.get("smoke")]
    if flagged:
        print(f"  problems found by the diagnostics at {len(flagged)} of {len(sweep['points'])} points: "
              + ", ".join(flagged[:10]) + (", ..." if len(flagged) > 10 else "") + " (each point's report lists them)")
    for name in ("sweep.md", "sweep.html"):
        if os.path.exists(os.path.join(out, name)):
            print(f"  {'table' if name == 'sweep.md' else 'page'}: {os.path.join(out, name)}")
    status = sweep["status"]
    if status == "ok" and flagged:
        print(f"{out}: problems (at {len(flagged)} of {len(sweep['points'])} points; every expectation met)")
        return EXIT_FAILED
    print(f"{out}: {status}")
    return EXIT_OK if status == "ok" else EXIT_FAILED


def _jobs_that_fit(args, pts, jobs: int) -> int | None:
    """`jobs`, or fewer when that many of the largest points at once would not fit in memory
    (each point was checked alone already): a default --jobs is lowered with a note, an explicit one
    refused (None, after saying why)."""
    from runtime.pipeline.resources import estimate_memory, size_text

    budget = _run_budget(args)
    if budget is None:
        return jobs
    peaks = sorted((estimate_memory(p.experiment).peak for p in pts), reverse=True)
    fit = 1
    while fit < jobs and sum(peaks[:fit + 1]) <= budget.bytes:
        fit += 1
    if fit == jobs:
        return jobs
    at_once = f"{jobs} points at a time need up to ~{size_text(sum(peaks[:jobs]))}, more than the " \
              f"{size_text(budget.bytes)} {budget.source}"
    if args.jobs:
        _err(f"apdspec run: --jobs {jobs}: {at_once}; use --jobs {fit}")
        return None
    _err(f"apdspec run: note: {at_once}: running {fit} at a time")
    return fit


def _print_run_summary(summary: dict) -> None:
    """Metrics (mean over replicates) and each expectation, so the terminal shows the verdict."""
    metrics = summary.get("metrics", {})
    width = max((len(name) for name in metrics), default=0)
    for name, values in metrics.items():
        vals = [v for v in values if isinstance(v, (int, float))]
        if vals:
            mean = sum(vals) / len(vals)
            per = "" if len(vals) == 1 else "  [" + ", ".join(f"{v:.4g}" for v in vals) + "]"
            print(f"  {name:<{width}} {mean:.4g}{per}")
    for e in summary.get("expectations", []):
        print(f"  {'PASS' if e['passed'] else 'FAIL'}  {e['text']}  (observed {e['observed']}; needed {e['needed']})")
    for text in problems(summary):
        print(f"  PROBLEM  {text}")
    for path in summary.get("report", []):
        if path.endswith((".md", ".html")):
            print(f"  report: {path}")
    if summary.get("report_error"):
        print(f"  report failed: {summary['report_error']}")


def problems(summary: dict) -> list[str]:
    """The problems a finished run's diagnostics found (summary.json's "diagnostics")."""
    return [d.get("text", "") for d in summary.get("diagnostics") or () if d.get("severity") == "problem"]


def _verdict(summary: dict) -> tuple[str, int]:
    """(the last line's verdict, exit code) of a run: "ok" (0) only if it finished, met its
    expectations and its diagnostics found no problem (a smoke run's problems are only listed);
    else what failed (1)."""
    status = summary.get("status") or "error"
    found = problems(summary)
    said = f"{len(found)} problem{'s' if len(found) != 1 else ''} found by the diagnostics (listed above and in the report)"
    if status == "ok" and summary.get("smoke"):
        return f"ok: a smoke run, not a result ({said if found else 'no problem found by the diagnostics'})", EXIT_OK
    if status == "ok":
        return ("ok", EXIT_OK) if not found else (f"problems ({said}; expectations met)", EXIT_FAILED)
    if status == "expectations_failed":
        exps = summary.get("expectations") or []
        failed = f"{sum(not e.get('passed') for e in exps)} of {len(exps)} expectations failed"
        return f"expectations_failed ({failed}" + (f"; {said})" if found else ")"), EXIT_FAILED
    return status, EXIT_FAILED


def cmd_report(args) -> int:
    if os.path.exists(os.path.join(args.run_dir, "sweep.json")):
        return _report_sweep(args)
    if os.path.isdir(args.run_dir) and not any(
            os.path.exists(os.path.join(args.run_dir, f)) for f in ("summary.json", "spec.json")):
        return _report_index(args)
    if not os.path.isdir(args.run_dir):
        _err(f"apdspec report: '{args.run_dir}' is not a directory; give a run or sweep directory written by "
             "`apdspec run`, or a directory holding some")
        return EXIT_SPEC
    if args.points:
        _err("apdspec report: note: --points applies to sweep directories; this is a single run")
    from runtime.report import render
    for path in render(args.run_dir):
        print(path)
    return EXIT_OK


def _report_index(args) -> int:
    """A directory of runs (and sweeps): index.md and index.html, one row per run (report/pages.py)."""
    from runtime.report.pages import index_page

    try:
        paths = index_page(args.run_dir)
    except ValueError as e:
        _err(f"apdspec report: {e}; give a run or sweep directory written by `apdspec run`, or a directory "
             "holding some")
        return EXIT_SPEC
    if args.points:
        _err("apdspec report: note: --points applies to sweep directories; this is a directory of runs")
    for path in paths:
        print(path)
    return EXIT_OK


def cmd_pick(args) -> int:
    """Restarts as separate runs (runtime/pipeline/pick.py): keep the best run per replicate."""
    from runtime.pipeline.pick import pick_runs
    from runtime.analysis.expectations import choice_against_expectations
    from runtime.pipeline.pick import PickError
    from runtime.store.rundir import RunDirBusy

    if _unusable_out("pick", args.out):
        return EXIT_SPEC
    try:
        summary = pick_runs(args.runs, args.out, report=not args.no_report)
    except PickError as e:
        _err(f"apdspec pick: {e}")
        return EXIT_SPEC
    except RunDirBusy as e:
        _err(f"apdspec pick: {e}")
        return EXIT_FAILED
    sel = summary["restarts"]
    print(f"kept run per replicate: {', '.join(str(c) for c in sel['chosen'])} (of {len(sel['runs'])}: "
          f"{', '.join(sel['runs'])})")
    judged = choice_against_expectations(sel)
    if judged:
        print(judged)
    _print_run_summary(summary)
    verdict, code = _verdict(summary)
    print(f"{args.out}: {verdict}")
    return code


def cmd_compare(args) -> int:
    """APD, SPD and VPD runs in one table (runtime/pipeline/compare.py)."""
    from runtime.pipeline.compare import compare
    from runtime.pipeline.compare import CompareError
    from runtime.store.rundir import write_text

    try:
        text = compare(args.dirs)
    except CompareError as e:
        _err(f"apdspec compare: {e}")
        return EXIT_SPEC
    sys.stdout.write(text)
    if args.out:
        try:
            write_text(args.out, text)
        except OSError as e:
            _err(f"apdspec compare: cannot write --out {args.out}: {e.strerror or e}")
            return EXIT_FAILED
    return EXIT_OK


def _report_sweep(args) -> int:
    """sweep.md from sweep.json; with --points, first every finished point's report."""
    from runtime.pipeline.sweep import render
    from runtime.pipeline.sweep import load_sweep

    try:
        load_sweep(args.run_dir)
    except ValueError as e:  # not JSON, or not a sweep.json this version writes
        _err(f"apdspec report: {e}")
        return EXIT_SPEC
    failed = []

    def on_error(label: str, e: Exception) -> None:
        if args.debug:
            traceback.print_exception(type(e), e, e.__traceback__)
        _err(f"apdspec report: point {label}: the report failed: {type(e).__name__}: {e}")
        failed.append(label)

    for path in render(args.run_dir, point_reports=args.points, on_error=on_error):
        print(path)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_bench(args) -> int:
    from .loader import load

    spec = load(args.spec, args.set)
    from runtime.pipeline.bench import bench
    result = bench(spec.experiment) if args.steps is None else bench(spec.experiment, steps=args.steps)
    if args.jobs_vs_threads:  # a sweep's choice: a second process per core, or a second BLAS thread
        from runtime.pipeline.bench import jobs_vs_threads

        result.update(jobs_vs_threads(spec.experiment, steps=args.steps or 10))
    if args.json:
        print(json.dumps(result, default=str))
    else:
        width = max((len(str(k)) for k in result), default=0)
        for k, v in result.items():
            print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return EXIT_OK


def _suggested_spec(arch) -> str:
    """The shipped spec whose target has `arch`'s shape (its kind says), else a placeholder."""
    from runtime.spec import kind_spec

    return kind_spec(arch.kind).suggested_spec(arch) or "SPEC.apd"


def _declared_target(spec):
    """The target as the spec writes it (before resolve() may swap a network for an equivalent kind)."""
    from .build import build

    return build(spec.state, spec.experiment.name).target


def cmd_import_target(args) -> int:
    from runtime.spec import to_dict
    from runtime.store.importer import TargetImportError, import_file
    from runtime.store.importer import importable

    if args.kind not in importable():
        _err(f"apdspec import-target: --kind {args.kind!r} is not a kind that imports; one of: {', '.join(importable())}")
        return EXIT_SPEC

    arch = None
    if args.spec is not None:
        from .loader import load

        spec = load(args.spec, [])  # a SpecError is reported like any other (exit 2)
        arch = _declared_target(spec)
        if arch.kind != args.kind:
            _err(f"apdspec import-target: --spec {args.spec}: its target is written as target {arch.kind}, not "
                 f"--kind {args.kind}")
            return EXIT_SPEC
        if args.activation or args.output_activation:
            _err("apdspec import-target: --spec declares the network (its activations too): drop --activation and "
                 "--output-activation")
            return EXIT_SPEC
    input_range = None
    if args.input_range is not None:
        try:
            lo, hi = (float(v) for v in args.input_range.split(","))
        except ValueError:
            _err(f"apdspec import-target: --input-range takes LO,HI (two numbers), got {args.input_range!r}")
            return EXIT_SPEC
        input_range = (lo, hi)
    try:
        imp = import_file(args.src, args.kind, args.out, layout=args.layout, ignore=tuple(args.ignore),
                          activation=args.activation, input_range=input_range,
                          output_activation=args.output_activation, arch=arch)
    except (TargetImportError, FileNotFoundError, ValueError) as e:
        _err(f"apdspec import-target: {args.src}: {e}")
        return EXIT_SPEC
    except OSError as e:
        _err(f"apdspec import-target: cannot write {args.out}: {e.strerror or e}")
        return EXIT_FAILED
    fields = ", ".join(f"{k} {str(v).lower() if isinstance(v, bool) else v}" for k, v in to_dict(imp.arch).items()
                       if k != "kind" and not isinstance(v, (list, dict)))
    if any(isinstance(v, (list, dict)) for v in to_dict(imp.arch).values()):  # a network: its kind's own line
        from runtime.spec import kind_spec

        fields = kind_spec(imp.arch.kind).describe(imp.arch)
    reps = f"{imp.replicates} replicates" if imp.replicates else "no replicate axis (shared by every replicate)"
    how = "x @ W as stored" if imp.layout == "rows" else "nn.Linear (d_out, d_in): transposed"
    what = fields if fields.startswith(imp.arch.kind + ":") else f"{imp.arch.kind} target ({fields})"
    print(f"{args.out}: {what}; {reps}; matrices {how}")
    width = max((len(d) for _, d, _ in imp.renames), default=0)
    for src, dst, note in imp.renames:
        if dst:
            shape = "x".join(str(n) for n in imp.params[dst].shape)
            print(f"  {dst:<{width}}  <- {src or '(computed)'} {shape}" + (f"  ({note})" if note else ""))
        else:
            print(f"  {'':<{width}}     {src}: {note}")
    r = f" -s replicates={imp.replicates}" if imp.replicates else ""
    print(f"decompose it: apdspec run {args.spec or _suggested_spec(imp.arch)} -s 'target = file(\"{args.out}\")'{r}")
    return EXIT_OK


def cmd_explain(args) -> int:
    from .explain import explain
    from .loader import load

    spec = load(args.file, args.set)
    print("\n".join(explain(spec, args.key)))
    return EXIT_OK


# ------------------------------------------------------------------------------------------
# Parser


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def _size(text: str) -> int:
    """Bytes of --max-memory: 4G, 4GiB, 512M, 1.5T or 1000000 (K, M, G, T: powers of 1024; a
    trailing B or iB is optional). Parsed without NumPy: --threads must act before it loads."""
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size such as 4G, 512M or 1.5T, got {text!r}")
    n = float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return int(n)


def _with_names_epilog(parser: argparse.ArgumentParser, format_help):
    """`format_help` of import-target with the accepted source names as its epilog."""
    def with_epilog() -> str:
        from runtime.store.importer import importable, rules

        def names(kind: str) -> str:
            r = rules(kind)
            rows = [f"{dst} <- {', '.join(a for a in aliases if a != dst) or dst}" for dst, aliases in r.names.items()]
            rows += [f"{src}: tied to {dst}, checked and dropped" for src, (dst, _) in r.tied.items()]
            rows += [f"{src}: must be zero, dropped" for src in r.zero if src not in r.names]
            return f"  {kind}: " + "; ".join(rows)

        parser.epilog = ("accepted names (apdspec name <- source names; {l} is a layer index):\n"
                         + "\n".join(names(k) for k in importable()) + "\n(docs/outputs.md, 'Importing a target')")
        return format_help()

    return with_epilog


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="apdspec",
        description="Check, format and run .apd specs of Attribution-based Parameter Decomposition experiments.",
        epilog="exit codes: 0 ok; 1 run or report failed, expectations failed or problems found / disk full / out of "
               "memory / files to reformat / runtime missing; 2 spec or usage errors (a spec that does not fit in "
               "memory included); 3 internal error",
    )
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="BLAS/OpenMP threads (sets OPENBLAS/OMP/MKL_NUM_THREADS; default 1)")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def max_memory(sp, scheduler: bool = False):
        sp.add_argument("--max-memory", type=_size, default=None, metavar="SIZE",
                        help="refuse a spec (every sweep point) whose estimated peak memory exceeds SIZE, e.g. 4G, "
                             "512M (K/M/G/T: powers of 1024); default: 90%% of the memory this machine has "
                             "available" + (" (with --scheduler: no limit unless given)" if scheduler else ""))

    def overrides(sp):
        sp.add_argument("-s", "--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override a field after the file is read, e.g. -s decompose.steps=200 "
                             "(a grid(...)/seeds(n)/range(...)/logspace(...) value adds a sweep axis; "
                             "-s 'report.expect = none' drops the spec's expectations); repeatable")

    c = sub.add_parser("check", help="check specs and print a resolved summary",
                       description="Check each spec (syntax, keys, types, ranges, cross-field rules, every sweep point) and "
                                   "print the resolved target, decomposed matrices, C, m, top-k, parameter count, "
                                   "the estimated peak memory (every phase: target training, decomposition, evaluation, "
                                   "report), FLOPs, and the estimated wall time of `apdspec run` (from timing a few "
                                   "real steps, ~1-2 s per spec, on a slice of at most 512 MiB). A spec (any sweep "
                                   "point) whose estimated peak memory exceeds --max-memory, or 90% of what this "
                                   "machine has available, is an error naming the fields that drive it and what "
                                   "fits. Exit 0 if every spec is valid, 2 otherwise.")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--no-estimate", action="store_true",
                   help="skip the wall-time estimate (a ~1-2 s calibration per spec that times real steps, "
                        "on a slice of the spec when the spec is large)")
    max_memory(c)
    overrides(c)
    c.set_defaults(func=cmd_check)

    f = sub.add_parser("fmt", help="rewrite specs in canonical layout",
                       description="Rewrite each file in canonical layout (2-space indent, one statement per line, "
                                   "comments kept), then count the files reformatted and already formatted. With "
                                   "--check, change nothing: list the files that would change and exit 1 if there "
                                   "are any. Exit 2 on syntax errors.")
    f.add_argument("--check", action="store_true", help="only report files that would change")
    f.add_argument("files", nargs="+", metavar="FILE")
    f.set_defaults(func=cmd_fmt)

    r = sub.add_parser("run", help="check a spec and run it (every point of a sweep)",
                       description="Check the spec, then train the target and the decomposition with the runtime, "
                                   "writing a run directory. It prints the output directory first, then the spec and "
                                   "an estimated time; at the end the metrics, each expectation and each problem the "
                                   "run's diagnostics found. A spec with a sweep runs every point into "
                                   "DIR/<point label>/ and writes DIR/sweep.json, DIR/sweep.md and DIR/sweep.html; run "
                                   "it again with the same --out to resume (finished points are reused). Exit 0 if every "
                                   "run finished with every expectation met and no problem found by its diagnostics "
                                   "(a smoke run, report.smoke, only lists its problems), 1 otherwise (a full disk "
                                   "included: 'no space left on DIR' and the resume command; memory that ran out "
                                   "anyway: one 'out of memory' line), 2 on spec errors and an --out that is a file or "
                                   "cannot be written, or a spec that does not fit in memory (refused before anything "
                                   "runs: see check, --max-memory).")
    r.add_argument("spec", metavar="SPEC", nargs="?")
    r.add_argument("-o", "--out", metavar="DIR", help="run (or sweep) directory (default runs/<experiment>/<UTC timestamp>)")
    r.add_argument("--resume", metavar="DIR",
                   help="continue the interrupted run in DIR from its newest checkpoint (bit-identical to an "
                        "uninterrupted run), or the interrupted sweep in DIR (finished points reused)")
    r.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="write a full-state checkpoint every N decomposition steps (default: "
                        "decompose.checkpoint_every, else every 10%% of the steps; 0: none); Ctrl-C / SIGTERM "
                        "stop at the next step with one and exit 130 / 143")
    r.add_argument("--force", action="store_true",
                   help="run even if --out already holds a run (it is replaced); without it that is refused")
    r.add_argument("--quiet", action="store_true",
                   help="no progress output, and of the start banner only the output directory (no estimate)")
    where = r.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                       help="run N sweep points at a time, each in its own process with one BLAS thread "
                            "(default: one per core, at most the number of points); a worker process that dies is "
                            "replaced and its point resumes from its last checkpoint")
    max_memory(r, scheduler=True)
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the sweep points on a dask.distributed scheduler, e.g. tcp://127.0.0.1:8786 "
                            "(needs pip install 'apdspec[distributed]' and workers that share DIR's filesystem; "
                            "start scheduler and workers with --host 127.0.0.1 on one machine, docs/outputs.md); "
                            "a lost scheduler ends the sweep with exit 1 and the resume command")
    overrides(r)
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="re-render the report of a run or sweep, or index a directory of runs",
                         description="Render the report (report.md and report.html: tables and plots) of a finished "
                                     "run directory from its saved outputs and print the paths written. For a sweep "
                                     "directory (one with sweep.json) re-render sweep.md and sweep.html (every "
                                     "metric against every axis), and with --points also the report of every "
                                     "finished point. For any other directory, write DIR/index.md and DIR/index.html: "
                                     "one row per run found below it (method, target, the settings that differ, "
                                     "status, expectations and problems, time; linked to its report) and their loss "
                                     "curves overlaid. The HTML pages are static, images embedded. Exit 0 on "
                                     "success, 1 if a point's report failed, 2 if DIR holds no run.")
    rep.add_argument("run_dir", metavar="DIR")
    rep.add_argument("--points", action="store_true",
                     help="sweep directory: also re-render each finished point's plots and report (slower: "
                          "each redraws its plots)")
    rep.set_defaults(func=cmd_report)

    pk = sub.add_parser("pick", help="keep, per replicate, the best of runs that differ only in decompose.seed",
                        description="Restarts as separate runs: score every replicate of every RUN_DIR by the restarts "
                                    "criterion (held-out top-k MSE; SPD: held-out SPD loss), all on the same held-out "
                                    "batches, keep the lowest per replicate and write --out as a run directory with "
                                    "metrics and report. The runs must decompose the same target arrays with the "
                                    "same settings apart from decompose.seed; a sweep directory stands for its "
                                    "points. Exit 0 ok, 1 expectations failed or problems found by the diagnostics, "
                                    "2 runs that cannot be compared or an --out that cannot be written.")
    pk.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished runs (or sweeps over decompose.seed)")
    pk.add_argument("--out", "-o", required=True, metavar="DIR", help="the run directory to write")
    pk.add_argument("--no-report", action="store_true", help="skip report.md / report.html")
    pk.set_defaults(func=cmd_pick)

    cp = sub.add_parser("compare", help="APD, SPD and VPD runs and sweeps in one table of success rates",
                        description="Read finished run and sweep directories (nothing is re-run; a run met twice "
                                    "counts once), group them by target, method and setting (everything the spec sets "
                                    "but its seeds: seeds pool, sweep points with other settings get rows of their own; "
                                    "best of R inits for restarts or pick), and print one markdown table: runs and "
                                    "seeds, replicates, the share of replicates meeting the method's own paper's bar "
                                    "(APD: MMCS >= 0.99 and ML2R >= 0.89; SPD, VPD: MMCS >= 0.99, ML2R >= 0.97 and "
                                    "identity_ci_error == 0; residual MLP: >= 95% of the features dedicated; each "
                                    "where the run reports it), the metric means, the clean and adversarial "
                                    "reconstruction and the wall time per run. Exit 0 ok, 1 --out not writable, 2 a "
                                    "DIR without a finished run.")
    cp.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep directories")
    cp.add_argument("--out", "-o", metavar="FILE", help="also write the table to this markdown file")
    cp.set_defaults(func=cmd_compare)

    b = sub.add_parser("bench", help="time a few optimiser steps of a spec",
                       description="Check the spec and time a few APD steps with the runtime; print the results as a "
                                   "table, or as one JSON object with --json.")
    b.add_argument("spec", metavar="SPEC")
    b.add_argument("--steps", type=_positive_int, metavar="N", help="steps to time (default: the runtime's)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--jobs-vs-threads", action="store_true",
                   help="also time 1 process x 2 BLAS threads against 2 processes x 1 thread (what a sweep's "
                        "--jobs trades), in fresh subprocesses")
    overrides(b)
    b.set_defaults(func=cmd_bench)

    imp = sub.add_parser(
        "import-target", help="convert a trained target from another implementation into an apdspec target file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read SRC (an .npz of a state dict, e.g. np.savez(SRC, **{k: v.numpy() for k, v in "
                    "model.state_dict().items()}), or a .pt / .pth of one when torch is installed), rename its "
                    "entries to apdspec's names, orient its matrices "
                    "(apdspec: x @ W, (d_in, d_out)), read the architecture off the shapes, check them, and write "
                    "the target file OUT. A leading instance axis becomes the replicate axis. Decompose OUT with "
                    "apdspec run SPEC -s 'target = file(\"OUT\")' (and -s replicates=R for R instances). "
                    "Exit 0 on success, 2 if SRC cannot be imported (the message says which entry and why).",
    )
    # the name table comes from the runtime, which imports NumPy: only build it when help is shown
    # (the BLAS thread count --threads sets must be in the environment before NumPy loads)
    imp.format_help = _with_names_epilog(imp, imp.format_help)
    imp.add_argument("src", metavar="SRC")
    imp.add_argument("--kind", required=True, help="the target's kind (those that import are listed below)")
    imp.add_argument("-o", "--out", required=True, metavar="OUT", help="target file to write (.npz)")
    imp.add_argument("--layout", choices=["auto", "rows", "torch"], default="auto",
                     help="how SRC stores matrices: rows = (d_in, d_out), x @ W (the original APD code, apdspec); "
                          "torch = nn.Linear (d_out, d_in); auto (default) = whichever fits the shapes (square "
                          "matrices that fit both need the flag)")
    imp.add_argument("--ignore", action="append", default=[], metavar="NAME",
                     help="skip SRC entries matching this glob (e.g. buffers); repeatable")
    imp.add_argument("--activation", default=None, metavar="ACT",
                     help="the nonlinearity a state dict does not store: mlp: between its layers (relu, gelu or "
                          "identity; a comma list gives one per gap), required with two or more layers; resid_mlp: "
                          "the hidden one (relu or gelu; default relu)")
    imp.add_argument("--spec", default=None, metavar="SPEC",
                     help="mlp: take the network (its layers' names and activations, decomposed layers, ground "
                          "truth) from SPEC's target mlp { ... } and check the state dict's shapes against it, "
                          "instead of reading the layers off the state dict with --activation")
    imp.add_argument("--output-activation", default=None, metavar="ACT",
                     help="mlp: an activation after the last layer (relu, gelu, identity; default none)")
    imp.add_argument("--input-range", metavar="LO,HI",
                     help="gated: the input range of x (default: read off the network's knots)")
    imp.set_defaults(func=cmd_import_target)

    e = sub.add_parser("explain", help="show field values and where they were set",
                       description="Print the resolved value of KEY (a field or a block, e.g. decompose.optimizer; "
                                   "every field when KEY is omitted) and the file:line:column that set it, or "
                                   "'default'.")
    e.add_argument("file", metavar="FILE")
    e.add_argument("key", nargs="?", metavar="KEY")
    overrides(e)
    e.set_defaults(func=cmd_explain)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    try:
        return args.func(args)
    except SpecError as e:
        _debug_internal(e, args.debug)
        _err(e.render())
        return EXIT_SPEC
    except FloatingPointError as e:  # runtime.engine.decompose.NonFiniteError: the run diverged
        _err(f"apdspec {args.command}: the run diverged: {e}")
        if getattr(e, "hint", None):
            _err(f"hint: {e.hint}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("apdspec: interrupted")
        return 130
    except MemoryError as e:
        return _out_of_memory(args.command, e, None)
    except BrokenPipeError:
        return EXIT_OK
    except OSError as e:
        from runtime.store.files import LinkedDirectory, disk_full

        if isinstance(e, LinkedDirectory):  # e.g. `apdspec report DIR` with DIR/plots a link
            _err(f"apdspec {args.command}: {e}")
            return EXIT_FAILED
        if not disk_full(e):
            return _internal(e, args.debug)
        return _no_space(args.command, os.path.dirname(os.path.abspath(e.filename)) if e.filename else "the device",
                         None)
    except Exception as e:  # a bug in apdspec or the runtime, not a user mistake
        return _internal(e, args.debug)


def _internal(e: Exception, debug: bool) -> int:
    """A bug in apdspec or the runtime, not a user mistake."""
    if debug:
        traceback.print_exc()
    else:
        _err(f"apdspec: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)")
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

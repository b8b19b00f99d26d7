"""Restarts as separate runs: keep, per replicate, the best of several finished runs.

`decompose.restarts = R` trains R inits of every replicate in one process (restarts.py). The same
choice can be made over finished runs that differ only in `decompose.seed`: run the inits in
parallel processes or on other machines, or add inits to a run later. `pick_runs` checks that the
runs decompose the same target arrays with the same settings, scores every replicate of every
run with restarts.scores (the same held-out criterion; all runs on the same batches and mask
noise, drawn from the first run's selection stream), keeps the lowest score per replicate and
writes a run directory of the kept decompositions: metrics, expectations and report as for any
run, and summary.json "restarts" with the scores, the kept run per replicate and the source runs.
No ground truth enters the choice.

    python -m runtime.pipeline.pick RUN_DIR RUN_DIR [...] --out OUT_DIR    (or `apdspec pick`)
    apdspec run SPEC -s 'decompose.seed=grid(1, 2, 3)' --out S && apdspec pick S --out OUT_DIR
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

import numpy as np

from . import restarts
from ..analysis.expectations import choice_against_expectations, replicates_meeting
from .runner import finish, write_finished
from .sweep import load_sweep
from ..store.rundir import RunDirBusy, RunResult, load_run, locked, write_text


class PickError(ValueError):
    """The runs cannot be compared (a user mistake: the message says which run and why)."""


def expand_sweeps(dirs: list[str]) -> list[str]:
    """The run directories: a sweep directory (sweep.json) stands for its points in sweep order, so
    a sweep over decompose.seed is picked from as a whole."""
    out = []
    for d in dirs:
        if not os.path.exists(os.path.join(d, "sweep.json")):
            out.append(d)
            continue
        try:
            out += [os.path.join(d, p["label"]) for p in load_sweep(d)["points"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PickError(f"{d}: its sweep.json cannot be read ({e})") from None
    return out


def _finished(run_dir: str) -> dict:
    path = os.path.join(run_dir, "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except FileNotFoundError:
        raise PickError(f"{run_dir}: no summary.json; give the directory of a finished run (apdspec run --out DIR)") from None
    except (OSError, ValueError) as e:
        raise PickError(f"{path}: cannot be read ({e})") from None
    if summary.get("status") not in ("ok", "expectations_failed"):
        raise PickError(f"{run_dir}: the run is not finished (status {summary.get('status')!r}); "
                        f"resume it first (apdspec run --resume {run_dir})")
    return summary


def _same_problem(base: RunResult, other: RunResult, where: str) -> None:
    """Raise PickError unless `other` decomposes the same target arrays as `base` with the same
    settings (decompose.seed, the name and how the target was obtained may differ)."""
    a, b = base.experiment, other.experiment
    for what, x, y in (("target architecture", base.arch, other.arch), ("replicates", a.replicates, b.replicates),
                       ("dtype", a.dtype, b.dtype), ("data", a.data, b.data),
                       ("decompose (apart from its seed)", dataclasses.replace(a.decompose, seed=None),
                        dataclasses.replace(b.decompose, seed=None))):
        if x != y:
            raise PickError(f"{where}: its {what} differs from the first run's ({_difference(y, x)}); pick "
                            "compares inits of one decomposition (runs that differ only in decompose.seed)")
    for k in base.target:
        if k not in other.target or not np.array_equal(base.target[k], other.target[k]):
            raise PickError(f"{where}: its target array {k!r} differs from the first run's; run every init on the "
                            "same target, e.g. -s 'target = file(\"FIRST_RUN/target.npz\")' (a file per replicate: "
                            "docs/outputs.md)")


def _difference(x: Any, y: Any, path: str = "") -> str:
    """'path: x here, y in the first run' for the first field in which two values differ."""
    if dataclasses.is_dataclass(x) and type(x) is type(y):
        for f in dataclasses.fields(x):
            a, b = getattr(x, f.name), getattr(y, f.name)
            if a != b:
                return _difference(a, b, f"{path}.{f.name}" if path else f.name)
    return f"{path + ': ' if path else ''}{x!r} here, {y!r} in the first run"


def _interleaved_history(results: list[RunResult]) -> list[dict]:
    """The runs' loss histories as one of I*R instances (replicate-major, as restarts.expand lays
    them out), so restarts.take can keep the chosen instance's curves."""
    I, R = results[0].experiment.replicates, len(results)
    hists = [r.decomposition.history for r in results]
    if len({len(h) for h in hists}) != 1:
        raise PickError("the runs logged different numbers of steps; they must share decompose.steps and log_every")
    out = []
    for entries in zip(*hists):
        e = dict(entries[0])
        for k, v in entries[0].items():
            if k.endswith("/replicates"):
                e[k] = [entries[r][k][i] for i in range(I) for r in range(R)]
            elif I == 1 and k not in ("step", "lr") and isinstance(v, (int, float)) and k + "/replicates" not in e:
                e[k + "/replicates"] = [entries[r].get(k) for r in range(R)]
        out.append(e)
    return out


def pick(run_dirs: list[str]) -> RunResult:
    """The RunResult keeping, per replicate, the run with the lowest held-out score (metrics not
    yet computed). Raises PickError for runs that cannot be compared."""
    run_dirs = expand_sweeps(run_dirs)
    return _pick(run_dirs, _summaries(run_dirs))


def _summaries(run_dirs: list[str]) -> list[dict]:
    """summary.json of every run, each checked finished (PickError otherwise)."""
    if len(run_dirs) < 2:
        raise PickError("give at least two run directories to pick from (or a sweep over decompose.seed)")
    return [_finished(d) for d in run_dirs]


def _per_run(exp: Any, summaries: list[dict]) -> list[dict]:
    """Per source run: its values of the metrics the spec's `expect` clauses name and, per
    replicate, whether it meets every per-replicate clause (None without one). Shown to judge the
    choice afterwards (ground truth, where the metrics use it); nothing here enters the choice."""
    names = list(dict.fromkeys(e.metric for e in exp.report.expect))
    out = []
    for s in summaries:
        m = s.get("metrics") or {}
        out.append({"metrics": {k: m[k] for k in names if k in m}, "meets": replicates_meeting(exp, m)})
    return out


def _pick(run_dirs: list[str], summaries: list[dict]) -> RunResult:
    """`pick` of runs already checked finished (their `_summaries`)."""
    results = [load_run(d) for d in run_dirs]
    base = results[0]
    for d, r in zip(run_dirs[1:], results[1:]):
        _same_problem(base, r, d)
    seeds = [r.experiment.decompose.seed for r in results]
    if len(set(seeds)) != len(seeds):
        raise PickError(f"two runs share a decompose.seed ({seeds}): the same init twice; give every run its own "
                        "(-s decompose.seed=N)")
    I, R = base.experiment.replicates, len(results)
    score = np.stack([restarts.scores(r, seed=base.experiment.decompose.seed) for r in results], axis=1)  # (I, R)
    wide = dataclasses.replace(
        base.decomposition,
        comps={k: np.stack([r.decomposition.comps[k] for r in results], axis=1).reshape((I * R,) + v.shape[1:])
               for k, v in base.decomposition.comps.items()},
        history=_interleaved_history(results),
        revivals=[dict(ev, replicate=ev["replicate"] * R + n) for n, r in enumerate(results) for ev in r.decomposition.revivals],
    )
    chosen = restarts.choose(score.reshape(-1), I, R)
    dec = restarts.take(wide, chosen)
    selection = {"restarts": R, "criterion": restarts.criterion(base.experiment),
                 "scores": score.tolist(), "chosen": [int(c) % R for c in chosen],
                 "runs": [os.path.abspath(d) for d in run_dirs], "decompose_seeds": seeds,
                 "per_run": _per_run(base.experiment, summaries)}
    timings = {"target_s": base.timings.get("target_s", 0.0),
               "decompose_s": float(sum(r.timings.get("decompose_s", 0.0) for r in results))}
    run_seeds = {"experiment": base.seeds.get("experiment")}
    run_seeds.update({f"decompose, run {n}": r.seeds.get("decompose") for n, r in enumerate(results)})
    return RunResult(base.experiment, base.arch, base.target, base.extras, dec, base.target_history, {}, [],
                     run_seeds, timings, selection=selection)


def pick_runs(run_dirs: list[str], out_dir: str, report: bool = True) -> dict:
    """Pick (see `pick`), compute metrics and expectations and write `out_dir` as a run directory
    (spec files copied from the first run; metrics.jsonl with its target curve and the kept
    curves). Returns summary.json's content; wall_time_s is the source runs' summed wall time."""
    t0 = time.time()
    run_dirs = expand_sweeps(run_dirs)
    if any(os.path.abspath(d) == os.path.abspath(out_dir) for d in run_dirs):
        raise PickError(f"--out {out_dir} is one of the runs picked from; write the pick to a new directory")
    summaries = _summaries(run_dirs)
    result = _pick(run_dirs, summaries)
    finish(result)
    result.timings["pick_s"] = time.time() - t0
    with locked(out_dir):
        for name in ("spec.apd", "spec.original.apd", "spec.json"):
            src = os.path.join(run_dirs[0], name)
            if os.path.exists(src):
                with open(src) as f:
                    write_text(os.path.join(out_dir, name), f.read())
        lines = [dict(e, phase="target") for e in result.target_history]
        lines += [dict(e, phase="decompose") for e in result.decomposition.history]
        write_text(os.path.join(out_dir, "metrics.jsonl"), "".join(json.dumps(e) + "\n" for e in lines))
        summary: dict[str, Any] = {"experiment": result.experiment.name, "picked_from": result.selection["runs"],
                                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
                                   "wall_time_s": float(sum(x.get("wall_time_s", 0.0) for x in summaries))}
        return write_finished(result, out_dir, summary, report)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.pipeline.pick", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR",
                    help="finished runs that differ only in decompose.seed (a sweep directory: its points)")
    ap.add_argument("--out", "-o", required=True, help="the run directory to write")
    ap.add_argument("--no-report", action="store_true", help="skip report.md / report.html")
    args = ap.parse_args(argv)
    try:
        summary = pick_runs(args.runs, args.out, report=not args.no_report)
    except (PickError, RunDirBusy) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sel = summary["restarts"]
    print(f"{args.out}: kept run per replicate {sel['chosen']} of {len(sel['runs'])}; status {summary['status']}")
    judged = choice_against_expectations(sel)
    if judged:
        print(judged)
    return 0 if summary["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())

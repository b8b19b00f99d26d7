"""Bench every paper experiment and write benchmarks/RESULTS.md.

    PYTHONPATH=. python benchmarks/run_all.py                 # 1 and 2 BLAS threads, 3 repeats
    PYTHONPATH=. python benchmarks/run_all.py --repeats 5 --baseline HEAD

Each measurement runs `runtime.pipeline.bench.bench` in a fresh subprocess (so OPENBLAS_NUM_THREADS takes
effect before NumPy loads, and peak RSS belongs to that experiment alone). Repeats alternate the
thread settings and the table reports the median over repeats of each run's median ms/step: the
2 cores of the machines this is written for are shared with other work, so single runs are noisy.

Experiments come from specs/*.apd via `apdspec.load(path, overrides).experiment`, so the bench
measures exactly what the specs run. TMS 5-2 is also benched with 12 replicates, the original
implementation's instance count (`tms_5_2_spec` is the spec as written, 5 replicates x 4 restarts); ms per
instance-step is what the speed-ups compare.

`--baseline REV` also times the runtime of git revision REV (e.g. the commit before the
performance work) with the same harness, through `decompose()` (older runtimes have no bench).
`--compare REV` times REV's `runtime.pipeline.bench` at 1 thread in every repeat, interleaved with
the current code (medians of the same number of processes: a before/after in one run).
`--jobs-vs-threads` adds `bench.jobs_vs_threads` (2 processes x 1 thread against 1 x 2 threads).
A step profile (`benchmarks/profile_step.py --json benchmarks/profile_after.json`, and
`profile_before.json` for the code before) is rendered when those files exist.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

# original PyTorch implementation on the same kind of 2-core machine (2 threads, float32):
# ms per training step, and the number of model instances (replicates) that step trains.
ORIGINAL_MS = {
    "tms_5_2": (26.0, 12),
    "tms_40_10": (841.0, 3),
    "resid_mlp_1l": (1021.0, 1),
    "resid_mlp_2l": (2460.0, 1),
}

# name -> (spec file, overrides, steps to time)
SUITE = {
    "tms_5_2": ("tms_5_2.apd", ["replicates=12", "decompose.restarts=1"], 100),  # the original's 12 instances
    "tms_5_2_spec": ("tms_5_2.apd", [], 100),
    "tms_40_10": ("tms_40_10.apd", [], 30),
    "resid_mlp_1l": ("resid_mlp_1l.apd", [], 20),
    "resid_mlp_2l": ("resid_mlp_2l.apd", [], 20),
    "resid_mlp_1l_rank1": ("resid_mlp_1l_rank1.apd", [], 40),
    "resid_mlp_2l_rank1": ("resid_mlp_2l_rank1.apd", [], 40),
    "gated": ("gated.apd", [], 100),
}
# the paper suite whose total wall time RESULTS.md projects (TMS 5-2 as its spec: 5 replicates x 4 restarts)
PAPER_SUITE = ("tms_5_2_spec", "tms_40_10", "resid_mlp_1l", "resid_mlp_2l", "gated")
JOBS_VS_THREADS = ("tms_5_2_spec", "tms_40_10", "resid_mlp_1l", "resid_mlp_2l")
TARGET_SPEEDUP = 10.0  # issue 16: >= 10x the original per instance-step at 1 thread
TARGET_PEAK = 0.40  # issue 16: >= 40% of the matmul peak on the residual-MLP steps (1 thread)
ORIGINAL_KEY = {"tms_5_2": "tms_5_2", "tms_5_2_spec": "tms_5_2", "tms_40_10": "tms_40_10",
                "resid_mlp_1l": "resid_mlp_1l", "resid_mlp_2l": "resid_mlp_2l"}


def load_experiment(name: str):
    """(Experiment, source description)."""
    fname, overrides, _ = SUITE[name]
    path = os.path.join(ROOT, "specs", fname)
    import apdspec

    return apdspec.load(path, overrides).experiment, f"specs/{fname}" + (f" {' '.join(overrides)}" if overrides else "")


WORKER = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from runtime.spec import from_dict
exp = from_dict(json.loads({exp_json!r}))
try:
    from runtime.pipeline.bench import bench
except ImportError:
    try:  # the flat layout before runtime/ had subpackages
        from runtime.bench import bench
    except ImportError:
        bench = None
if bench is not None and not {legacy!r}:
    r = bench(exp, steps={steps})
else:  # an older (flat-layout) runtime: time decompose()'s loop through its progress callback
    import dataclasses, resource
    import numpy as np
    from runtime.spec import check
    from runtime.decompose import decompose
    from runtime.data import sample_inputs
    from runtime.models import init_target
    from runtime import seeding
    exp = check(exp)
    dc = exp.decompose
    run = dataclasses.replace(exp, decompose=dataclasses.replace(dc, steps={steps} + 3, log_every=10**9))
    if exp.target.kind == "gated":
        from runtime.gated import build_for_experiment
        target, _ = build_for_experiment(exp)
    else:
        target = init_target(exp.target, exp.replicates, seeding.stream(exp.seed, "target_init"), np.dtype(exp.dtype))
    rng = seeding.stream(dc.seed, "apd_data")
    sample = lambda b: sample_inputs(exp.target, exp.data, exp.replicates, b, rng, np.dtype(exp.dtype))
    ts, cs = [], []
    def progress(step, n, entry):
        ts.append(time.perf_counter()); cs.append(time.process_time())
    decompose(run, exp.target, target, sample, seeding.stream(dc.seed, "apd_init"), progress=progress)
    d = np.diff(ts)[3:] * 1e3
    c = np.diff(cs)[3:] * 1e3
    med = float(np.median(d))
    r = {{"ms_per_step_median": med, "ms_per_step_min": float(d.min()), "ms_per_step_max": float(d.max()),
         "cpu_ms_per_step_median": float(np.median(c)), "ms_per_replicate_step": med / exp.replicates,
         "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, "compute_path": "baseline",
         "projected_full_run_s": dc.steps * med / 1e3}}
print("BENCH-JSON " + json.dumps(r, default=str))
"""


def run_one(exp, steps: int, threads: int, root: str = ROOT, legacy: bool = False) -> dict:
    from runtime.spec import to_json

    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = root
    code = WORKER.format(root=root, exp_json=to_json(exp), steps=steps, legacy=legacy)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            r = json.loads(line[len("BENCH-JSON "):])
            r["load1"] = os.getloadavg()[0]
            return r
    raise RuntimeError(f"bench subprocess failed ({exp.name}, {threads} threads):\n{out.stderr[-3000:]}")


def machine_info() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import importlib.metadata

    import numpy as np

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "autograd": importlib.metadata.version("autograd"), "platform": platform.platform(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load": load}


def numpy_blas() -> str:
    import numpy as np

    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        return f"{b.get('name')} {b.get('version')}"
    except Exception:  # noqa: BLE001
        return "unknown"


def fmt_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def summarise(runs: list[dict]) -> dict:
    """Median over repeats of each run's median (and of the other figures)."""
    keys = ("ms_per_step_median", "ms_per_replicate_step", "cpu_ms_per_step_median", "projected_full_run_s",
            "max_rss_mb", "peak_memory_estimate_mb", "fraction_of_matmul_peak", "achieved_gflops", "gflop_per_step",
            "matmul_peak_gflops", "load1")
    out = {k: statistics.median([r[k] for r in runs]) for k in keys if all(k in r for r in runs)}
    out["runs"] = [round(r["ms_per_step_median"], 2) for r in runs]
    out["compute_path"] = runs[0].get("compute_path")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="comma-separated BLAS thread counts to measure")
    ap.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(SUITE))
    ap.add_argument("--baseline", default=None, metavar="REV", help="also time the runtime of git revision REV")
    ap.add_argument("--compare", default=None, metavar="REV",
                    help="also time REV's runtime.pipeline.bench at 1 thread in every repeat (before/after)")
    ap.add_argument("--jobs-vs-threads", action="store_true",
                    help="also measure 2 jobs x 1 thread against 1 job x 2 threads (bench.jobs_vs_threads)")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--from-json", action="store_true", help="re-render the markdown from --json without measuring")
    ap.add_argument("--merge-note", default=None, help="with --merge: why the rows were re-measured")
    ap.add_argument("--merge", default=None, metavar="JSON",
                    help="with --from-json: take these experiments' rows from JSON (a later --only run) and record "
                         "when and under what load they were measured")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.json) as f:
            data = json.load(f)
        if args.merge:
            with open(args.merge) as f:
                new = json.load(f)
            m = new["machine"]
            for key in ("summary", "raw"):
                data[key].update(new[key])
            data["machine"].setdefault("notes", []).append(
                f"Rows {', '.join(new['summary'])} re-measured on {m['date']} (load {m['load_runs'][0]:.2f}-"
                f"{m['load_runs'][2]:.2f} at the measurements) and merged in: " + (args.merge_note or ""))
            with open(args.json, "w") as f:
                json.dump(data, f, indent=1, default=str)
        info, summary = data["machine"], data["summary"]
        names = list(summary)
        threads = sorted({int(t) for by in summary.values() for t in by if t.isdigit()})
        args.threads = ",".join(map(str, threads))
        args.repeats = data.get("repeats", args.repeats)
        args.baseline = data.get("baseline", args.baseline)
        args.compare = data.get("compare", args.compare)
        exps = {n: load_experiment(n) for n in names}
        write_markdown(args.out, info, exps, summary, threads, args, data.get("jobs_vs_threads"))
        print(f"wrote {args.out}")
        return 0
    names = args.only.split(",") if args.only else list(SUITE)
    threads = [int(t) for t in args.threads.split(",")]
    info = machine_info()
    from runtime.pipeline.restarts import widened

    exps = {n: load_experiment(n) for n in names}
    results: dict = {n: {} for n in names}
    base_root = cmp_root = None
    if args.compare:
        cmp_root = tempfile.mkdtemp(prefix="apdspec-compare-")
        subprocess.run(f"git -C {ROOT} archive {args.compare} runtime | tar -x -C {cmp_root}", shell=True, check=True)
    if args.baseline:
        base_root = tempfile.mkdtemp(prefix="apdspec-baseline-")
        subprocess.run(f"git -C {ROOT} archive {args.baseline} runtime | tar -x -C {base_root}", shell=True, check=True)
        for n in names:
            results[n]["baseline"] = []
    for rep in range(args.repeats):
        order = threads if rep % 2 == 0 else threads[::-1]
        for n in names:
            exp, _ = exps[n]
            steps = SUITE[n][2]
            for t in order:
                r = run_one(exp, steps, t)
                results[n].setdefault(t, []).append(r)
                print(f"[{rep + 1}/{args.repeats}] {n:14s} {t} thr: {r['ms_per_step_median']:9.2f} ms/step "
                      f"({r['cpu_ms_per_step_median']:.1f} cpu-ms, load {r['load1']:.2f})", flush=True)
            if cmp_root is not None:
                r = run_one(exp, steps, 1, root=cmp_root)
                results[n].setdefault("compare", []).append(r)
                print(f"[{rep + 1}/{args.repeats}] {n:14s} {args.compare} 1 thr: {r['ms_per_step_median']:9.2f} ms/step "
                      f"({r['cpu_ms_per_step_median']:.1f} cpu-ms, load {r['load1']:.2f})", flush=True)
            if base_root is not None and rep == 0:
                bsteps = min(steps, 10) if n.startswith("resid") else min(steps, 30)
                # what one step trains (restarts as plain replicates, no report): older runtimes have
                # no restarts and may not know newer metrics
                bexp = widened(exp)
                try:
                    r = run_one(bexp, bsteps, 1, root=base_root, legacy=True)
                except RuntimeError as e:  # e.g. a field the old runtime does not have (restarts)
                    del results[n]["baseline"]
                    print(f"[baseline] {n:14s} the runtime at {args.baseline} cannot run this spec: "
                          f"{str(e).strip().splitlines()[-1]}", flush=True)
                    continue
                results[n]["baseline"].append(r)
                print(f"[baseline] {n:14s} 1 thr: {r['ms_per_step_median']:9.2f} ms/step", flush=True)
    jvt = None
    if args.jobs_vs_threads:
        jvt = {"load_before": os.getloadavg()[0], "specs": {}}
        from runtime.pipeline.bench import jobs_vs_threads

        for name in JOBS_VS_THREADS:
            jvt["specs"][name] = jobs_vs_threads(exps[name][0] if name in exps else load_experiment(name)[0], steps=10)
            print(f"[jobs vs threads] {name}: {jvt['specs'][name]['jobs_over_threads']:.2f}x", flush=True)
        jvt["load_after"] = os.getloadavg()[0]
    info["load_end"] = os.getloadavg()
    loads = [r["load1"] for d in results.values() for v in d.values() for r in v if "load1" in r]
    info["load_runs"] = [min(loads), statistics.median(loads), max(loads)] if loads else None
    summary = {n: {str(k): summarise(v) for k, v in d.items()} for n, d in results.items()}
    with open(args.json, "w") as f:
        json.dump({"machine": info, "repeats": args.repeats, "baseline": args.baseline, "compare": args.compare,
                   "summary": summary, "jobs_vs_threads": jvt,
                   "raw": {n: {str(k): v for k, v in d.items()} for n, d in results.items()}}, f, indent=1, default=str)
    write_markdown(args.out, info, exps, summary, threads, args, jvt)
    print(f"wrote {args.out}")
    return 0


def _pct(x) -> str:
    return f"{100 * x:.0f}%" if x is not None else "—"


def _load_profile(name: str):
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return {r["experiment"]: r for r in json.load(f)}


def _profile_section(L: list, before, after) -> None:
    """Per config: where a 1-thread step's time goes, before and after (benchmarks/profile_step.py)."""
    L.append("## Where a step's time goes (1 thread)\n")
    L.append("`PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python benchmarks/profile_step.py --json benchmarks/profile_after.json` "
             "(and `--root` on a `git archive` of the code before, for `profile_before.json`; its `@` products "
             "rewritten as `np.matmul` so that the census sees them, nothing else changed). Per phase: time "
             "(cProfile, scaled to the untouched step median), the GEMMs in it (every `np.matmul` call: time in place, "
             "and alone on fresh arrays of the same shapes and layouts, best of 3) and the rest. The target's own "
             "forward pass runs through `autograd.numpy` and counts as rest. Profiles are single processes: noisier "
             "than the tables above.\n")
    names = [n for n in (after or before or {}) if (after or {}).get(n) or (before or {}).get(n)]
    for n in names:
        rows = []
        for label, prof in (("before", before), ("after", after)):
            r = (prof or {}).get(n)
            if r is None:
                continue
            g = r["gemm"]
            rows.append((label, r))
            L.append(f"**{n}, {label}**: {r['step_ms']:.2f} ms/step; GEMMs {g['flops'] / 1e9:.2f} GFLOP in {g['calls']:.0f} "
                     f"calls: {g['in_place_ms']:.1f} ms in place, {g['alone_ms']:.1f} ms alone, {r['gemm_at_peak_ms']:.1f} ms "
                     f"at the {r['matmul_peak_gflops']:.0f} GFLOP/s peak; everything else {r['step_ms'] - g['in_place_ms']:.1f} ms.\n")
        phases = []
        for _, r in rows:
            for ph in r["phase_ms"]:
                if ph not in phases:
                    phases.append(ph)
        head = "| phase | " + " | ".join(f"{lab} ms (GEMM in place / alone / rest)" for lab, _ in rows) + " |"
        L.append(head)
        L.append("|---|" + "---|" * len(rows))
        for ph in sorted(phases, key=lambda p: -max(r["phase_ms"].get(p, 0.0) for _, r in rows)):
            cells = []
            for _, r in rows:
                ms = r["phase_ms"].get(ph)
                gp = r["gemm_by_phase"].get(ph, {"in_place_ms": 0.0, "alone_ms": 0.0})
                cells.append("—" if ms is None else
                             f"{ms:.1f} ({gp['in_place_ms']:.1f} / {gp['alone_ms']:.1f} / {max(ms - gp['in_place_ms'], 0.0):.1f})")
            L.append(f"| {ph} | " + " | ".join(cells) + " |")
        L.append("")


def _shortfalls(L: list, exps, summary) -> None:
    """What misses a target at 1 thread, with where its step time goes (profile_after.json)."""
    after = _load_profile("profile_after.json") or {}
    missed = []
    for n, by in summary.items():
        s = by.get("1")
        okey = ORIGINAL_KEY.get(n)
        if s is None:
            continue
        exp, _ = exps[n]
        why = []
        if okey:
            orig = ORIGINAL_MS[okey][0] / ORIGINAL_MS[okey][1]
            if orig / s["ms_per_replicate_step"] < TARGET_SPEEDUP:
                why.append(f"{orig / s['ms_per_replicate_step']:.1f}x the original (10x allows "
                           f"{orig / TARGET_SPEEDUP * exp.replicates * exp.decompose.restarts:.1f} ms/step)")
        frac = s.get("fraction_of_matmul_peak")
        if n.startswith("resid_mlp") and "rank1" not in n and frac is not None and frac < TARGET_PEAK:
            why.append(f"{100 * frac:.0f}% of the matmul peak")
        if why:
            missed.append((n, s, why))
    if not missed:
        return
    L.append("### What falls short, and why\n")
    for n, s, why in missed:
        line = f"- **{n}**: {s['ms_per_step_median']:.1f} ms/step = {' and '.join(why)}."
        r = after.get(n)
        if r is not None:
            g = r["gemm"]
            ph = r["phase_ms"]
            adam = ph.get("adam", 0.0)
            adam_gemm = r["gemm_by_phase"].get("adam", {}).get("in_place_ms", 0.0)
            line += (f" Profile ({r['step_ms']:.0f} ms/step in that process): GEMMs {g['flops'] / 1e9:.1f} GFLOP, "
                     f"{g['in_place_ms']:.0f} ms in place ({g['alone_ms']:.0f} ms when timed alone, "
                     f"{r['gemm_at_peak_ms']:.0f} ms at the peak); Adam's elementwise passes {adam - adam_gemm:.0f} ms; "
                     f"everything else {r['step_ms'] - g['in_place_ms'] - (adam - adam_gemm):.0f} ms.")
        L.append(line)
    L.append(SHORTFALL_WHY)


def write_markdown(path, info, exps, summary, threads, args, jvt=None) -> None:
    L = []
    L.append("# Benchmarks: APD decomposition steps of the paper experiments\n")
    flags = f"--repeats {args.repeats} --threads {args.threads}" + (f" --baseline {args.baseline}" if args.baseline else "")
    flags += (f" --compare {args.compare}" if getattr(args, "compare", None) else "") + (" --jobs-vs-threads" if jvt else "")
    L.append(f"Generated by `benchmarks/run_all.py {flags}` on {info['date']}.\n")
    for note in info.get("notes", []):  # e.g. rows re-measured later and merged in (--merge)
        L.append(f"> {note}\n")
    L.append("## Machine\n")
    L.append(f"- CPU: {info['cpu']}, {info['cores']} cores")
    L.append(f"- Python {info['python']}, NumPy {info['numpy']} ({numpy_blas()}), autograd {info['autograd']}")
    L.append(f"- {info['platform']}")
    lr = info.get("load_runs")
    lr_txt = f"; at the measurements min {lr[0]:.2f} / median {lr[1]:.2f} / max {lr[2]:.2f}" if lr else ""
    L.append(f"- Load average (1 min) at start {info['load'][0]:.2f} / end {info['load_end'][0]:.2f}{lr_txt}: the machine "
             "is shared with other jobs (2 cores), so every figure is the median over repeated processes (each itself the "
             "median of its timed steps); single runs vary by up to ~2x on a busy machine. `cpu ms` (process CPU time "
             "per step) is less sensitive to time-slicing, not to shared caches and memory bandwidth.\n")
    L.append("What is timed: `decompose.Trainer.step()` — one full decomposition step (batch sampling, target "
             "forward, attributions and top-k mask, loss and gradient, unit-norm handling, Adam) on the spec's "
             "exact configuration (C, m, batch, replicates, losses, attribution, float32), with an untrained target "
             "of the right shapes (`models.init_target`; the gated network is hand-coded). Projected full-run "
             "time = decompose.steps x median ms/step (target training not included). % of matmul peak = the "
             "step's analytic FLOPs (`bench.step_flops`: the work of the formulation, the masked pass at its sparse "
             "cost; FLOPs spent to save calls are not counted) per second, over a 1024^3 float32 matmul timed in the "
             "same process at the same thread count (best of 5).\n")
    one = "1"
    L.append("## Results at 1 BLAS thread (float32; the default)\n")
    L.append("| experiment | config | ms/step | cpu ms/step | ms/instance-step | original ms/instance-step | speed-up "
             "| GFLOP/step | % of matmul peak | peak memory (RSS) | projected full run |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, by in summary.items():
        exp, src = exps[n]
        dc = exp.decompose
        s = by.get(one)
        if s is None:
            continue
        okey = ORIGINAL_KEY.get(n)
        orig = ORIGINAL_MS[okey][0] / ORIGINAL_MS[okey][1] if okey else None
        speed = f"{orig / s['ms_per_replicate_step']:.1f}x" if orig else "—"
        inst = f"I {exp.replicates}" + (f" x {dc.restarts} restarts" if dc.restarts > 1 else "")
        cfg = f"B {dc.batch}, C {dc.components}, m {dc.rank}, {inst}, top-k {dc.topk.value:g} ({src})"
        L.append(f"| {n} | {cfg} | {s['ms_per_step_median']:.2f} | {s['cpu_ms_per_step_median']:.2f} | "
                 f"{s['ms_per_replicate_step']:.3f} | {f'{orig:.1f}' if orig else '—'} | {speed} | "
                 f"{s.get('gflop_per_step', 0.0):.3f} | {_pct(s.get('fraction_of_matmul_peak'))} | "
                 f"{s['max_rss_mb']:.0f} MB | {fmt_s(s['projected_full_run_s'])} |")
    L.append("")
    peaks = {t: statistics.median([by[str(t)].get("matmul_peak_gflops") or
                                   by[str(t)]["achieved_gflops"] / by[str(t)]["fraction_of_matmul_peak"]
                                   for by in summary.values() if str(t) in by] or [float("nan")])
             for t in threads}
    L.append("Matmul peak (1024^3 float32, median over the processes): " +
             ", ".join(f"{peaks[t]:.0f} GFLOP/s at {t} thread{'s' if t > 1 else ''}" for t in threads) + ".\n")
    L.append("Original = the PyTorch implementation on the same kind of 2-core machine (2 threads, float32): "
             "TMS 5-2 26 ms/step for 12 instances, TMS 40-10 841 ms for 3, residual MLP 1 layer 1021 ms, "
             "2 layers 2460 ms (peak memory ~0.5 GB TMS, 1.8 GB residual 1-layer). `tms_5_2` is benched with "
             "the original's 12 replicates and one init each to compare like with like; `tms_5_2_spec` and `tms_40_10` "
             "are the specs as written (5 replicates each, TMS 5-2 with 4 restarts: 20 instances per step; the "
             "original's TMS 40-10 step trained 3). ms/instance-step divides by every instance a step trains. "
             "Peak memory is the whole process's peak RSS (interpreter and libraries included).\n")
    # targets
    L.append("## Targets (issue 16), at 1 thread\n")
    L.append(f"| experiment | speed-up over the original (target >= {TARGET_SPEEDUP:g}x) | % of matmul peak "
             f"(target >= {100 * TARGET_PEAK:.0f}% on the residual MLPs) | ms/step the targets allow |")
    L.append("|---|---|---|---|")
    for n, by in summary.items():
        s = by.get(one)
        if s is None:
            continue
        exp, _ = exps[n]
        okey = ORIGINAL_KEY.get(n)
        cells = []
        allow = []
        if okey:
            orig = ORIGINAL_MS[okey][0] / ORIGINAL_MS[okey][1]
            sp = orig / s["ms_per_replicate_step"]
            cells.append(f"{sp:.1f}x **{'met' if sp >= TARGET_SPEEDUP else 'missed'}**")
            allow.append(f"{orig / TARGET_SPEEDUP * exp.decompose.restarts * exp.replicates:.2f} (10x)")
        else:
            cells.append("— (no original figure)")
        frac = s.get("fraction_of_matmul_peak")
        if n.startswith("resid_mlp") and frac is not None and "rank1" not in n:
            cells.append(f"{100 * frac:.0f}% **{'met' if frac >= TARGET_PEAK else 'missed'}**")
            g = s["gflop_per_step"]
            pk = s.get("matmul_peak_gflops") or s["achieved_gflops"] / frac
            allow.append(f"{g / (TARGET_PEAK * pk) * 1e3:.1f} (40% of {pk:.0f} GFLOP/s)")
        else:
            cells.append(f"{_pct(frac)} (no target)")
        L.append(f"| {n} | " + " | ".join(cells) + f" | {', '.join(allow) or '—'} |")
    L.append("")
    _shortfalls(L, exps, summary)
    # threads table
    L.append("## 1 vs 2 BLAS threads\n")
    L.append("| experiment | " + " | ".join(f"{t} thread{'s' if t > 1 else ''} ms/step (runs) [% of peak]" for t in threads)
             + " | faster |")
    L.append("|---|" + "---|" * len(threads) + "---|")
    best = {}
    for n, by in summary.items():
        cands = sorted(t for t in threads if str(t) in by)
        pick = cands[0]
        for t in cands[1:]:
            if by[str(t)]["ms_per_step_median"] < 0.95 * by[str(pick)]["ms_per_step_median"]:
                pick = t
        best[n] = pick
        cells = []
        for t in threads:
            s = by.get(str(t))
            cells.append(f"{s['ms_per_step_median']:.2f} ({', '.join(f'{v:g}' for v in s['runs'])}) "
                         f"[{_pct(s.get('fraction_of_matmul_peak'))}]" if s else "—")
        L.append(f"| {n} | " + " | ".join(cells) + f" | {best[n]} |")
    L.append("\nThe % of peak at 2 threads is against the 2-thread matmul peak. 2-thread OpenBLAS pays only for the "
             "residual MLP's large GEMMs, and only on an otherwise idle machine; with other jobs on the second core it "
             "loses badly (ecosystem notes C.3), hence the 1-thread default.\n")
    if jvt:
        L.append("## A sweep's cores: 2 jobs x 1 thread vs 1 job x 2 threads\n")
        L.append(f"`bench.jobs_vs_threads` in this run (load average {jvt['load_before']:.2f} before, "
                 f"{jvt['load_after']:.2f} after; decomposition steps per second of each spec's own config, summed over "
                 "processes):\n")
        L.append("| spec | 1 job x 2 threads | 2 jobs x 1 thread | ratio |")
        L.append("|---|---|---|---|")
        for name, r in jvt["specs"].items():
            L.append(f"| {name} | {r['steps_per_s_1job_2threads']:.1f} steps/s | {r['steps_per_s_2jobs_1thread']:.1f} "
                     f"steps/s | {r['jobs_over_threads']:.2f}x |")
        L.append("\nA ratio above 1: two 1-thread processes get more steps done per second than one 2-thread "
                 "process, which is why `apdspec run --jobs` defaults to one sweep point per core (on a machine "
                 "busy with other jobs, 2-thread OpenBLAS collapses and the ratios grow).\n")
    # suite projection (1 thread)
    L.append("## Projected wall time of the paper suite (1 thread)\n")
    total = 0.0
    L.append("| experiment | steps | ms/step (wall) | projected (wall) | cpu ms/step | projected (cpu) |")
    L.append("|---|---|---|---|---|---|")
    total_cpu = 0.0
    for n in PAPER_SUITE:
        if n not in summary or one not in summary[n]:
            continue
        s = summary[n][one]
        exp, _ = exps[n]
        total += s["projected_full_run_s"]
        cpu_s = exp.decompose.steps * s["cpu_ms_per_step_median"] / 1e3
        total_cpu += cpu_s
        L.append(f"| {n} | {exp.decompose.steps} | {s['ms_per_step_median']:.2f} | {fmt_s(s['projected_full_run_s'])} "
                 f"| {s['cpu_ms_per_step_median']:.2f} | {fmt_s(cpu_s)} |")
    L.append(f"| **total (one after another)** | | | **{fmt_s(total)}** | | **{fmt_s(total_cpu)}** |")
    L.append("\nWall-clock projections use the median wall time per step measured on the shared machine; the "
             "cpu column projects from process CPU time per step. Runs are single-threaded by default, so two "
             "experiments can run side by side on the 2 cores.")
    if "resid_mlp_1l" in summary and one in summary["resid_mlp_1l"]:
        s = summary["resid_mlp_1l"][one]
        L.append(f"The paper's residual-MLP 1-layer run used 40k steps: {fmt_s(s['ms_per_step_median'] * 40)} "
                 "at the same speed (batch 256; the paper's appendix also mentions batch 2048).\n")
    # before/after in this run
    if any("compare" in by for by in summary.values()):
        L.append(f"## Before and after this round of work (git {args.compare} vs now, same run, 1 thread, medians of "
                 f"{args.repeats} processes each, interleaved)\n")
        L.append("| experiment | before ms/step | now ms/step | gain | before cpu ms | now cpu ms |")
        L.append("|---|---|---|---|---|---|")
        for n, by in summary.items():
            if "compare" not in by or one not in by:
                continue
            b, now = by["compare"], by[one]
            L.append(f"| {n} | {b['ms_per_step_median']:.2f} | {now['ms_per_step_median']:.2f} | "
                     f"{b['ms_per_step_median'] / now['ms_per_step_median']:.2f}x | {b['cpu_ms_per_step_median']:.2f} | "
                     f"{now['cpu_ms_per_step_median']:.2f} |")
        L.append("")
    # baseline
    if any("baseline" in by for by in summary.values()):
        L.append(f"## Before the performance work (git {args.baseline}, same harness, 1 thread, one process)\n")
        L.append("| experiment | before ms/step | now ms/step (1 thread) | gain |")
        L.append("|---|---|---|---|")
        for n, by in summary.items():
            if "baseline" not in by or one not in by:
                continue
            b = by["baseline"]["ms_per_step_median"]
            now = by[one]["ms_per_step_median"]
            L.append(f"| {n} | {b:.2f} | {now:.2f} | {b / now:.1f}x |")
        L.append("")
    before, after = _load_profile("profile_before.json"), _load_profile("profile_after.json")
    if before or after:
        _profile_section(L, before, after)
    L.append(WHAT_CHANGED)
    L.append("## Notes\n")
    L.append("- Thread default: 1 BLAS thread (the CLI's `--threads`, tests' conftest, `kernels.default_blas_threads`).")
    L.append("- Raw numbers: `benchmarks/results.json`; step profiles: `benchmarks/profile_*.json`.")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


SHORTFALL_WHY = """
Why: a residual-MLP step needs ~7.5 GFLOP of GEMMs that are already as few as the formulation allows
(each decomposed matrix's A B, A^T (A B - W) and (A B - W) B^T for faithfulness, W_E A_in and B_out W_U for
the attributions and the masked pass, each fused with another GEMM reading the same factor), on shapes with
one side of 50-150 where OpenBLAS reaches ~145-160 GFLOP/s alone and less in place (operands come from
memory). Adam then streams every parameter, both moments and the gradient: ~0.4 GB per step for the 1-layer
model's 13.65 M parameters, ~12 elementwise NumPy passes per element, bound by one core's memory bandwidth
(~33 ms/step for Adam alone on this machine, whatever the chunking). The benchmark machine changed since the
issue was written: its single-thread matmul peak is ~190 GFLOP/s (AVX-512), twice the ~98 of the machine the
original's 1021 ms and the issue's "70 ms of GEMMs" were measured on, while memory-bound work did not get
faster, so 40% of this peak needs twice the GEMM rate the same code reached there. Left untried (each
estimated at a few % of the 1-layer step): forming A_in's gradient tile by tile inside Adam (as B_out's
already is) and folding the unit-norm division into Adam's pass.
"""


WHAT_CHANGED = """## What the step computes, and where the work went

All in `runtime/engine/` (`fused.py`, `grouped.py`, `kernels.py`, `attributions.py`, `decompose.py`, `optim.py`,
`data.py`); tests: `tests/methods/apd/test_fused.py`, `tests/methods/apd/test_grouped.py`, `tests/runtime/pipeline/test_bench.py`. Every fast path is
checked against the plain autograd path (float64 and float32) and finite differences:

- **Fused top-k loss** (`fused.ResidualLoss`, `fused.TmsLoss` / `TmsSparseLoss`): with a constant top-k mask
  the masked forward pass, minimality, act-recon, faithfulness and Schatten terms are one function of the
  factors with a hand-written backward pass in plain NumPy, registered as an autograd primitive.
- **Masked products, dense or per component** (`grouped.Grouped`): batch top-k switches on ~1.3 of C components
  per sample (residual MLP: 327 of 256 x 130 pairs). Bottleneck values are kept per active (sample, component)
  pair; each product of the masked pass and its backward runs per component over its active rows (one small
  GEMM each; an outer product for a single row) or as one dense GEMM, whichever a cost model fitted to timings
  of both says is cheaper (rank-1 components: dense; m = 25-50: per component).
- **All-zero input rows dropped** where exact (TMS, residual MLP without input biases; batch top-k).
- **Attributions in closed form, sharing GEMMs with the loss** (`fused.ResidualPre`): x (W_E A_in) instead
  of (x W_E) A_in (notes §10.3.2), B_out [W_U | later W_in*] as one GEMM, each fused with the faithfulness
  gradient GEMM that reads the same factor (A_in^T D_in, B_out D_out^T); the output tangent as one batched GEMM
  over all terms (rank-1 products as broadcasts). The loss reuses them: layer 0's bottleneck comes from the
  attribution pass, and the last layer's output is taken through N = B_out W_U (C m x d_L) instead of the
  d_embed-wide B_out.
- **No full-size gradient passes**: gradients are `kernels.GradParts`, summed by FastAdam a row block at a
  time in cache. The d_embed-wide second factors' (B_out) gradients are never formed: A_out^T G
  (`kernels.RowsProduct`) and the masked pass's per-component rows (`grouped.GroupedRows`) are computed per
  block inside Adam's pass. Layer 0's A_in gradient is one GEMM [G | W_E^T] [B_in^T ; x^T g_u]. The Schatten
  term and the unit-norm projection stay a per-column / per-row scale of the factor; the projection's <g, A>
  per column comes from products the loss already has (A^T G, and u . g_u over the active pairs).
- **Squared norms kept across steps**: FastAdam sums the squared column (A) / row (B) norms of the parameters
  in the pass that writes them; the next step's unit-norm and Schatten term use them (recomputed by the same
  blocked sums after a revival or a resume, so resumed runs stay bit-identical).
- **Adam** (`kernels.FastAdam` = `optim.Adam(folded=True)`): in 64K-element (L2-sized) blocks, with
  sqrt(1 - beta2^t) folded into the step size and eps (one elementwise pass fewer; the same update up to
  rounding, tested bitwise against `optim.Adam(folded=True)` and to 1e-13 against the unfolded form).
- **Smaller overheads**: TMS attributions take each layer's component bottlenecks as views of one GEMM;
  data sampling transforms its uniform draws in place (the same values, bit for bit); small scaled adds in
  one pass; `tune_malloc` (glibc keeps freed step temporaries instead of page-faulting fresh ones).
"""


if __name__ == "__main__":
    raise SystemExit(main())

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
            return json.loads(line[len("BENCH-JSON "):])
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
            "max_rss_mb", "peak_memory_estimate_mb", "fraction_of_matmul_peak", "achieved_gflops", "gflop_per_step")
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
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--from-json", action="store_true", help="re-render the markdown from --json without measuring")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.json) as f:
            data = json.load(f)
        info, summary = data["machine"], data["summary"]
        names = list(summary)
        threads = sorted({int(t) for by in summary.values() for t in by if t.isdigit()})
        args.threads = ",".join(map(str, threads))
        args.repeats = data.get("repeats", args.repeats)
        args.baseline = data.get("baseline", args.baseline)
        exps = {n: load_experiment(n) for n in names}
        write_markdown(args.out, info, exps, summary, threads, args)
        print(f"wrote {args.out}")
        return 0
    names = args.only.split(",") if args.only else list(SUITE)
    threads = [int(t) for t in args.threads.split(",")]
    info = machine_info()
    from runtime.pipeline.restarts import widened

    exps = {n: load_experiment(n) for n in names}
    results: dict = {n: {} for n in names}
    base_root = None
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
                      f"({r['cpu_ms_per_step_median']:.1f} cpu-ms)", flush=True)
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
    info["load_end"] = os.getloadavg()
    summary = {n: {str(k): summarise(v) for k, v in d.items()} for n, d in results.items()}
    with open(args.json, "w") as f:
        json.dump({"machine": info, "repeats": args.repeats, "baseline": args.baseline, "summary": summary, "raw": {n: {str(k): v for k, v in d.items()}
                                                                for n, d in results.items()}}, f, indent=1, default=str)
    write_markdown(args.out, info, exps, summary, threads, args)
    print(f"wrote {args.out}")
    return 0


def write_markdown(path, info, exps, summary, threads, args) -> None:
    L = []
    L.append("# Benchmarks: APD decomposition steps of the paper experiments\n")
    flags = f"--repeats {args.repeats} --threads {args.threads}" + (f" --baseline {args.baseline}" if args.baseline else "")
    L.append(f"Generated by `benchmarks/run_all.py {flags}` on {info['date']}.\n")
    L.append("## Machine\n")
    L.append(f"- CPU: {info['cpu']}, {info['cores']} cores")
    L.append(f"- Python {info['python']}, NumPy {info['numpy']} ({numpy_blas()}), autograd {info['autograd']}")
    L.append(f"- {info['platform']}")
    L.append(f"- Load average (1 min) at start {info['load'][0]:.2f} / end {info['load_end'][0]:.2f}: the machine "
             "may be shared with other jobs, so every figure is the median over repeated runs (each itself the median of its timed "
             "steps); single runs vary by up to ~2x on a busy machine. "
             "`cpu ms` (process CPU time per step) is less sensitive to time-slicing.\n")
    L.append("What is timed: `decompose.Trainer.step()` — one full decomposition step (batch sampling, target "
             "forward, attributions and top-k mask, loss and gradient, unit-norm handling, Adam) on the spec's "
             "exact configuration (C, m, batch, replicates, losses, attribution, float32), with an untrained target "
             "of the right shapes (`models.init_target`; the gated network is hand-coded). Projected full-run "
             "time = decompose.steps x median ms/step (target training not included).\n")
    # thread count per experiment: the fewest threads unless more are >5% faster (1 is the default)
    best = {}
    for n, by in summary.items():
        cands = sorted(t for t in threads if str(t) in by)
        pick = cands[0]
        for t in cands[1:]:
            if by[str(t)]["ms_per_step_median"] < 0.95 * by[str(pick)]["ms_per_step_median"]:
                pick = t
        best[n] = pick
    L.append("## Results (float32)\n")
    L.append("| experiment | config | threads | ms/step | cpu ms/step | ms/instance-step | original ms/instance-step "
             "| speed-up | peak memory (RSS) | projected full run |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for n, by in summary.items():
        exp, src = exps[n]
        dc = exp.decompose
        t = best[n]
        s = by[str(t)]
        okey = ORIGINAL_KEY.get(n)
        orig = ORIGINAL_MS[okey][0] / ORIGINAL_MS[okey][1] if okey else None
        speed = f"{orig / s['ms_per_replicate_step']:.1f}x" if orig else "—"
        inst = f"I {exp.replicates}" + (f" x {dc.restarts} restarts" if dc.restarts > 1 else "")
        cfg = f"B {dc.batch}, C {dc.components}, m {dc.rank}, {inst}, top-k {dc.topk.value:g} ({src})"
        L.append(f"| {n} | {cfg} | {t} | {s['ms_per_step_median']:.2f} | {s['cpu_ms_per_step_median']:.2f} | "
                 f"{s['ms_per_replicate_step']:.3f} | {f'{orig:.1f}' if orig else '—'} | "
                 f"{speed} | "
                 f"{s['max_rss_mb']:.0f} MB | {fmt_s(s['projected_full_run_s'])} |")
    L.append("")
    L.append("Original = the PyTorch implementation on the same kind of 2-core machine (2 threads, float32): "
             "TMS 5-2 26 ms/step for 12 instances, TMS 40-10 841 ms for 3, residual MLP 1 layer 1021 ms, "
             "2 layers 2460 ms (peak memory ~0.5 GB TMS, 1.8 GB residual 1-layer). `tms_5_2` is benched with "
             "the original's 12 replicates and one init each to compare like with like; `tms_5_2_spec` and `tms_40_10` "
             "are the specs as written (5 replicates each, TMS 5-2 with 4 restarts: 20 instances per step; the "
             "original's TMS 40-10 step trained 3). ms/instance-step divides by every instance a step trains. "
             "Peak memory is the whole process's peak RSS (interpreter and libraries included).\n")
    # threads table
    L.append("## 1 vs 2 BLAS threads\n")
    L.append("| experiment | " + " | ".join(f"{t} thread{'s' if t > 1 else ''} ms/step (runs)" for t in threads) + " | faster |")
    L.append("|---|" + "---|" * len(threads) + "---|")
    for n, by in summary.items():
        cells = []
        for t in threads:
            s = by.get(str(t))
            cells.append(f"{s['ms_per_step_median']:.2f} ({', '.join(f'{v:g}' for v in s['runs'])})" if s else "—")
        L.append(f"| {n} | " + " | ".join(cells) + f" | {best[n]} |")
    L.append("")
    # suite projection
    L.append("## Projected wall time of the paper suite\n")
    total = 0.0
    L.append("| experiment | steps | threads | ms/step (wall) | projected (wall) | cpu ms/step | projected (cpu) |")
    L.append("|---|---|---|---|---|---|---|")
    total_cpu = 0.0
    for n in PAPER_SUITE:
        if n not in summary:
            continue
        t = best[n]
        s = summary[n][str(t)]
        exp, _ = exps[n]
        total += s["projected_full_run_s"]
        cpu_s = exp.decompose.steps * s["cpu_ms_per_step_median"] / 1e3
        total_cpu += cpu_s
        L.append(f"| {n} | {exp.decompose.steps} | {t} | {s['ms_per_step_median']:.2f} | {fmt_s(s['projected_full_run_s'])} "
                 f"| {s['cpu_ms_per_step_median']:.2f} | {fmt_s(cpu_s)} |")
    L.append(f"| **total (one after another)** | | | | **{fmt_s(total)}** | | **{fmt_s(total_cpu)}** |")
    L.append("\nWall-clock projections use the median wall time per step measured on the shared machine; the "
             "cpu column projects from process CPU time per step, i.e. what a single-threaded run takes when "
             "its core is not shared (the two agree when the machine is quiet).")
    if "resid_mlp_1l" in summary:
        s = summary["resid_mlp_1l"][str(best["resid_mlp_1l"])]
        L.append(f"\nThe paper's residual-MLP 1-layer run used 40k steps: {fmt_s(s['ms_per_step_median'] * 40)} "
                 "at the same speed (batch 256; the paper's appendix also mentions batch 2048).")
    L.append("Runs are single-threaded by default, so two experiments can run side by side on the 2 cores "
             "(roughly halving the suite's wall time when the machine is otherwise idle).\n")
    # baseline
    if any("baseline" in by for by in summary.values()):
        L.append(f"## Before the performance work (git {args.baseline}, same harness, 1 thread)\n")
        L.append("| experiment | before ms/step | now ms/step | gain |")
        L.append("|---|---|---|---|")
        for n, by in summary.items():
            if "baseline" not in by:
                continue
            b = by["baseline"]["ms_per_step_median"]
            now = by[str(best[n])]["ms_per_step_median"]
            L.append(f"| {n} | {b:.2f} | {now:.2f} | {b / now:.1f}x |")
        L.append("")
    L.append("## Where the time went, and what changed\n")
    L.append("""All in `runtime/engine/fused.py`, `runtime/engine/kernels.py`, `runtime/engine/attributions.py`, `runtime/engine/decompose.py`
(tests: `tests/test_fused.py`, `tests/test_bench.py`):

- **Fused top-k loss** (`fused.ResidualLoss`, `fused.TmsLoss` / `TmsSparseLoss`): with a constant top-k mask
  the masked forward pass, minimality, act-recon, faithfulness and Schatten terms are one function of the
  factors with a hand-written backward pass in plain NumPy, registered as an autograd primitive
  (`fused.fused_terms`, checked with `check_grads`, finite differences and against the autograd path).
  Autograd's per-op bookkeeping and its matmul VJPs (which sum the singleton replicate axis of every
  gradient) disappear.
- **Mask sparsity**: batch top-k switches on ~1.3 of C components per sample (residual MLP: 327 of
  256 x 130 pairs). The masked bottleneck is evaluated on the active (sample, component) pairs only,
  grouped by component, which removes every (B x D) @ (D x C m) product from the differentiated pass.
- **All-zero input rows dropped** where exact (TMS, residual MLP without input biases; batch top-k):
  they have exactly zero attributions and contribute nothing, so the whole step runs on the ~23% (TMS 5-2)
  / ~63% (residual MLP) of rows with an active feature; if the top-k choice would involve ties at zero the
  step falls back to the full batch.
- **Attributions in closed form, sharing GEMMs with the loss** (`fused.ResidualPre`): x (W_E A_in) instead
  of (x W_E) A_in (notes §10.3.2), B_out [W_U | later W_in*] as one GEMM, each fused with the faithfulness
  gradient GEMM that reads the same factor (A_in^T D_in, B_out D_out^T); TMS attributions by one blocked pass
  (`attributions._tms_attributions_plain`); the gated network's single output by reverse mode (one backward
  pass instead of C forward tangents).
- **Memory traffic**: `FastAdam` (bitwise-identical Adam in cache-sized chunks, 66-137 -> 25 ms/step for
  13.65 M parameters), column norms and scaled adds without full-size temporaries, the Schatten gradient
  applied inside passes the backward makes anyway, and `tune_malloc` (glibc keeps freed step temporaries
  instead of page-faulting fresh ones: gated 27 -> 10 ms/step, TMS 5-2 4.6 -> 3.5 ms).
- **Threads**: 1 BLAS thread by default (see the table above).
""")
    L.append("## Notes\n")
    L.append("- Thread default: 1 BLAS thread (the CLI's `--threads`, tests' conftest). The table above shows "
             "which count was faster per shape in this session; with other jobs on the second core, 2-thread "
             "OpenBLAS loses badly (ecosystem notes C.3), and it only pays for the residual MLP's large GEMMs on an "
             "idle machine.")
    L.append("- Raw numbers: `benchmarks/results.json`.")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a decomposition step's time goes: GEMMs (counted, timed in place and alone) and the rest, by phase.

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python benchmarks/profile_step.py                # every paper config
    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python benchmarks/profile_step.py resid_mlp_1l --steps 20 --json out.json

For each experiment of `run_all.SUITE` (the spec's exact configuration, an untrained target as in
`runtime.pipeline.bench`):

1. **step**: median wall-clock ms of `Trainer.step()` over `--steps` steps (after warm-up), untouched;
2. **phases**: the same steps under cProfile, split by the functions of `PHASES` (cumulative
   time; the phases do not call each other; "other" is the rest of the step). cProfile adds a
   little per Python call, so the phase times are scaled to sum to the untouched step median;
3. **GEMMs**: one more round of steps with `numpy.matmul` wrapped: every call's FLOPs
   (2 x batch x M x K x N), its time in place, and the phase it ran in (innermost phase function on
   the stack); then every distinct call (shapes, dtype, operand layouts) re-timed alone on fresh
   arrays of the same layout (best of 3): what the same GEMMs cost with nothing else running
   (cache-cold operands excluded). The runtime's hot paths call `np.matmul` (not `@`) so that
   every GEMM is seen; einsum reductions count as "other".

Prints a table per experiment; `--json` writes the numbers (benchmarks/RESULTS.md quotes them).
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import pstats
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if "--root" in sys.argv:  # profile another checkout's runtime (e.g. `git archive REV runtime apdspec specs`)
    ROOT = os.path.abspath(sys.argv[sys.argv.index("--root") + 1])
sys.path.insert(0, HERE)
import run_all  # noqa: E402  (puts this checkout on sys.path: ROOT goes in front of it)

sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

CLOCK = time.perf_counter  # --cpu: time.process_time (CPU time: robust to time-slicing on a shared machine)

# phase -> the functions that make it up ("module:qualname"; names that do not exist are skipped)
PHASES = {
    "unit-norm": ("runtime.methods.apd.train:normalise_columns",),
    "data": ("runtime.engine.data:sample_inputs",),
    "compaction": ("runtime.methods.apd.fused:compact_rows",),
    "target forward": ("runtime.engine.models:target_forward",),
    "attributions": ("runtime.targets.resid_mlp.apd_kernels:ResidualPre.__init__", "runtime.methods.apd.attributions:attributions"),
    "top-k": ("runtime.methods.apd.fused:compact_batch_topk", "runtime.methods.apd.attributions:topk_mask"),
    "loss setup": ("runtime.methods.apd.train:LossProblem.fused_loss",),
    "loss forward": ("runtime.targets.resid_mlp.apd_kernels:ResidualLoss.forward", "runtime.targets.tms.apd_kernels:TmsLoss.forward"),
    "loss backward": ("runtime.targets.resid_mlp.apd_kernels:ResidualLoss.backward", "runtime.targets.resid_mlp.apd_kernels:ResidualLoss.backward_lazy",
                      "runtime.targets.tms.apd_kernels:TmsLoss.backward", "runtime.targets.tms.apd_kernels:TmsSparseLoss.backward"),
    "gradient projection": ("runtime.methods.apd.train:project_gradients",),
    "adam": ("runtime.engine.kernels:FastAdam.step",),
}


def phase_codes() -> dict:
    """{(filename, first line, name): phase} of the PHASES functions that exist (pstats' keys)."""
    import importlib

    out = {}
    for phase, paths in PHASES.items():
        for path in paths:
            mod, qual = path.split(":")
            obj = importlib.import_module(mod)
            for part in qual.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    break
            code = getattr(obj, "__code__", None)
            if code is not None:
                out[(code.co_filename, code.co_firstlineno, code.co_name)] = phase
    return out


def make_trainer(name: str):
    from runtime.engine import seeding
    from runtime.engine.data import sample_inputs
    from runtime.methods.apd.train import Trainer
    from runtime.pipeline import restarts
    from runtime.pipeline.bench import _target_for
    from runtime.spec import check

    exp, _ = run_all.load_experiment(name)
    exp = restarts.widened(check(exp))
    dc = exp.decompose
    arch, target, _ = _target_for(exp)
    run_exp = dataclasses.replace(exp, decompose=dataclasses.replace(dc, steps=max(dc.steps, 10_000)))
    rng = seeding.stream(dc.seed, "apd_data")
    dtype = np.dtype(exp.dtype)

    def sample(b):
        return sample_inputs(arch, exp.data, exp.replicates, b, rng, dtype)

    return exp, Trainer(run_exp, arch, target, sample, seeding.stream(dc.seed, "apd_init"))


def _layout(a: np.ndarray) -> str:
    if a.ndim >= 2 and a.flags.c_contiguous:
        return "C"
    if a.ndim >= 2 and np.swapaxes(a, -1, -2).flags.c_contiguous:
        return "T"  # a transposed view of a C-contiguous array
    return "C" if a.ndim < 2 else "S"  # "S": strided (timed alone as C-contiguous)


class GemmCensus:
    """Wraps numpy.matmul while active; records (phase, shapes, layouts, dtype, FLOPs, seconds)."""

    def __init__(self):
        self.calls: list = []
        self._orig = np.matmul

    def __enter__(self):
        orig = self._orig
        calls = self.calls
        codes = phase_codes()

        def matmul(a, b, *args, **kwargs):
            t0 = CLOCK()
            out = orig(a, b, *args, **kwargs)
            dt = CLOCK() - t0
            a_, b_ = np.asarray(a), np.asarray(b)
            if a_.ndim >= 1 and b_.ndim >= 1:
                M = a_.shape[-2] if a_.ndim >= 2 else 1
                K = a_.shape[-1]
                N = b_.shape[-1] if b_.ndim >= 2 else 1
                batch = int(np.prod(np.broadcast_shapes(a_.shape[:-2], b_.shape[:-2]))) if max(a_.ndim, b_.ndim) > 2 else 1
                f = sys._getframe(1)
                phase = None
                while f is not None and phase is None:
                    c = f.f_code
                    phase = codes.get((c.co_filename, c.co_firstlineno, c.co_name))
                    f = f.f_back
                calls.append((phase or "other", a_.shape, b_.shape, _layout(a_), _layout(b_), a_.dtype.str,
                              2.0 * batch * M * K * N, dt))
            return out

        np.matmul = matmul
        return self

    def __exit__(self, *exc):
        np.matmul = self._orig


def _fresh(shape, layout, dtype, rng):
    if layout == "T":
        a = rng.standard_normal(shape[:-2] + (shape[-1], shape[-2])).astype(dtype)
        return np.swapaxes(a, -1, -2)
    return rng.standard_normal(shape).astype(dtype)


def time_alone(calls) -> dict:
    """{(a shape, b shape, layouts, dtype): best-of-3 seconds} for every distinct call."""
    rng = np.random.default_rng(0)
    out = {}
    for _, sa, sb, la, lb, dt, _, _ in calls:
        key = (sa, sb, la, lb, dt)
        if key in out:
            continue
        a, b = _fresh(sa, la, dt, rng), _fresh(sb, lb, dt, rng)
        np.matmul(a, b)
        best = float("inf")
        for _ in range(3):
            t0 = CLOCK()
            np.matmul(a, b)
            best = min(best, CLOCK() - t0)
        out[key] = best
    return out


def profile(name: str, steps: int, warmup: int = 3) -> dict:
    exp, tr = make_trainer(name)
    for _ in range(warmup):
        tr.step()
    times = []
    for _ in range(steps):
        t0 = CLOCK()
        tr.step()
        times.append(CLOCK() - t0)
    step_ms = statistics.median(times) * 1e3
    # phases under cProfile (on the same clock)
    pr = cProfile.Profile(CLOCK)
    t0 = CLOCK()
    pr.enable()
    for _ in range(steps):
        tr.step()
    pr.disable()
    prof_ms = (CLOCK() - t0) / steps * 1e3
    st = pstats.Stats(pr).stats
    codes = phase_codes()
    phase_ms = {p: 0.0 for p in PHASES}
    for key, (_, _, _, cum, _) in st.items():
        phase = codes.get(key)
        if phase is not None:
            phase_ms[phase] += cum / steps * 1e3
    scale = step_ms / prof_ms
    phase_ms = {p: v * scale for p, v in phase_ms.items() if v > 0}
    phase_ms["other"] = max(step_ms - sum(phase_ms.values()), 0.0)
    # GEMM census
    with GemmCensus() as census:
        for _ in range(steps):
            tr.step()
    calls = census.calls
    alone = time_alone(calls)
    gemm = {"flops": 0.0, "in_place_ms": 0.0, "alone_ms": 0.0, "calls": 0}
    by_phase: dict = {}
    for phase, sa, sb, la, lb, dt, fl, sec in calls:
        a_ms = alone[(sa, sb, la, lb, dt)] * 1e3
        for d in (gemm, by_phase.setdefault(phase, {"flops": 0.0, "in_place_ms": 0.0, "alone_ms": 0.0, "calls": 0})):
            d["flops"] += fl / steps
            d["in_place_ms"] += sec * 1e3 / steps
            d["alone_ms"] += a_ms / steps
            d["calls"] += 1 / steps
    peak = _peak_gflops(exp.dtype)
    import runtime

    return {"experiment": name, "runtime": os.path.dirname(os.path.abspath(runtime.__file__)), "clock": CLOCK.__name__, "load1": os.getloadavg()[0], "step_ms": step_ms, "phase_ms": phase_ms, "gemm": gemm, "gemm_by_phase": by_phase,
            "matmul_peak_gflops": peak, "gemm_at_peak_ms": gemm["flops"] / peak / 1e6}


def _peak_gflops(dtype, n: int = 1024) -> float:
    """Best of 5 n^3 matmuls on CLOCK (as bench.matmul_peak_gflops, which uses wall-clock time)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b
    best = float("inf")
    for _ in range(5):
        t0 = CLOCK()
        a @ b
        best = min(best, CLOCK() - t0)
    return 2.0 * n ** 3 / best / 1e9


def render(r: dict) -> str:
    g = r["gemm"]
    L = [f"## {r['experiment']}: {r['step_ms']:.2f} ms/step ({r.get('clock', 'perf_counter')}, load {r.get('load1', float('nan')):.2f}, {r.get('runtime')})",
         f"GEMMs: {g['calls']:.0f} calls, {g['flops'] / 1e9:.3f} GFLOP; {g['in_place_ms']:.1f} ms in place, "
         f"{g['alone_ms']:.1f} ms alone, {r['gemm_at_peak_ms']:.1f} ms at the {r['matmul_peak_gflops']:.0f} GFLOP/s "
         f"matmul peak; everything else {r['step_ms'] - g['in_place_ms']:.1f} ms",
         "", "| phase | ms | GEMM ms in place | GEMM ms alone | GFLOP | rest ms |", "|---|---|---|---|---|---|"]
    for phase, ms in sorted(r["phase_ms"].items(), key=lambda kv: -kv[1]):
        gp = r["gemm_by_phase"].get(phase, {"in_place_ms": 0.0, "alone_ms": 0.0, "flops": 0.0})
        L.append(f"| {phase} | {ms:.2f} | {gp['in_place_ms']:.2f} | {gp['alone_ms']:.2f} | {gp['flops'] / 1e9:.3f} | "
                 f"{max(ms - gp['in_place_ms'], 0.0):.2f} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="experiments of run_all.SUITE (default: all)")
    ap.add_argument("--steps", type=int, default=None, help="steps per measurement (default: run_all's count)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--root", default=None, help="checkout whose runtime/ and specs/ to profile (default: this one)")
    ap.add_argument("--cpu", action="store_true", help="time with process CPU time instead of wall-clock time")
    args = ap.parse_args(argv)
    global CLOCK
    if args.cpu:
        CLOCK = time.process_time
    names = args.names or list(run_all.SUITE)
    out = []
    for n in names:
        steps = args.steps or run_all.SUITE[n][2]
        r = profile(n, steps)
        out.append(r)
        print(render(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

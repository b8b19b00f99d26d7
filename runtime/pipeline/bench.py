"""Time decomposition steps of an experiment: `bench(exp)` -> a dict of self-explanatory figures.

    from runtime.pipeline.bench import bench
    r = bench(exp, steps=20)          # exp: a spec.Experiment (e.g. apdspec.load(path).experiment)
    r["ms_per_step_median"], r["projected_full_run_s"], r["fraction_of_matmul_peak"]

What is timed: the method's `Trainer.step()`, i.e. exactly one iteration of `decompose()` (for APD:
unit-norm, LR, batch sampling, target forward, attributions and top-k mask, loss and gradient,
gradient projection, Adam update), on the spec's own configuration (C, m, batch, replicates,
losses, attribution, dtype). The target has the right shapes but is not trained (no target training
is timed): trained kinds come from `models.init_target` (their fresh initialisation), hand-coded
ones from their model's `build`, file targets are loaded.
Training the target changes attributions and masks, and so the amount of work per step only
marginally (how the active (sample, component) pairs spread over components and samples).

FLOPs are counted analytically from the shapes (multiply-add = 2 FLOPs, notes §10.2): the method
engine's `step_flops` (APD: methods/apd/cost.py). The achieved rate is reported as a fraction of a float32/float64 1024^3 matmul
timed in the same process (best of 5), so the figure is comparable across noisy, shared machines.

BLAS threads: the runtime uses 1 unless OPENBLAS/OMP/MKL_NUM_THREADS says otherwise
(`kernels.default_blas_threads`; the CLI's --threads sets those variables); `threads=` changes the
count for this call through OpenBLAS's own `openblas_set_num_threads` (ctypes, no threadpoolctl)
and restores it afterwards. `benchmarks/run_all.py` compares 1 and 2 threads in subprocesses.
"""
from __future__ import annotations

import dataclasses
import math
import resource
import time
import tracemalloc

import numpy as np

from ..engine.kernels import blas_info, set_blas_threads  # noqa: F401  (re-exported)
from ..engine.registry import engine_of, model_of
from ..spec import Experiment, FileTarget, check

# ------------------------------------------------------------------------------------------
# BLAS introspection: kernels.blas_info / kernels.set_blas_threads (OpenBLAS's C API via ctypes)


def matmul_peak_gflops(dtype="float32", n: int = 1024, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of an n x n @ n x n matmul in this process (current BLAS threads)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b  # warm up (thread pool start, page faults)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


# ------------------------------------------------------------------------------------------
# FLOP model


def _target_for(exp: Experiment):
    """(arch, params, how): a target of the right shapes without training it."""
    t = exp.target
    dtype = np.dtype(exp.dtype)
    if isinstance(t, FileTarget):
        from .runner import build_target

        arch, params, _, _ = build_target(exp)
        return arch, params, f"loaded from {t.path}"
    built = model_of(t).build(exp, dtype)
    if built is not None:
        return t, built[0], f"hand-coded {t.kind} network (its model's build)"
    from ..engine import seeding
    from ..engine.models import init_target

    params = init_target(t, exp.replicates, seeding.stream(exp.seed, "target_init"), dtype)
    return t, params, "models.init_target (fresh, untrained initialisation; no target training timed)"


def step_runner(exp: Experiment, min_steps: int = 0):
    """(runner, arch, target, how): `runner.step()` runs one optimiser step of `exp`'s decomposition
    (every restart of every replicate: `exp` is widened), on a target of the right shapes (not
    trained: `_target_for`); `how` says where the target came from. `exp.decompose.steps` is raised
    to `min_steps` if needed, so that every timed step is a real update. The one place that builds
    a step to time: `bench` and `estimate` use it (the method's trainer, registry.ENGINES)."""
    from ..engine.data import sample_inputs
    from . import restarts
    from ..engine import seeding

    exp = check(exp)
    arch, target, how = _target_for(exp)
    if exp.decompose.restarts > 1:  # one step trains every restart of every replicate
        exp, target, _ = restarts.expand(exp, target, {})
    dc = exp.decompose
    run_exp = exp if dc.steps > min_steps else dataclasses.replace(exp, decompose=dataclasses.replace(dc, steps=min_steps))
    rng_data = seeding.stream(dc.seed, "apd_data")
    dtype = np.dtype(exp.dtype)

    def sample(batch: int) -> np.ndarray:
        return sample_inputs(arch, exp.data, exp.replicates, batch, rng_data, dtype)

    return engine_of(dc.method).trainer(run_exp, arch, target, sample, seeding.stream(dc.seed, "apd_init")), arch, target, how


KEYS = {
    "experiment": "experiment name",
    "target_kind": "the target kind (registry.KINDS)",
    "config": "what one step computes (batch, components, rank, replicates, top-k, loss terms, attribution, dtype)",
    "target_params": "where the (untrained) target parameters came from",
    "dtype": "float32 | float64",
    "replicates": "independent model instances trained by one vectorised step",
    "batch": "samples per step and replicate",
    "components": "C",
    "rank": "m",
    "compute_path": "the kernels a step runs: a kind's (fused-tms, fused-residual, spd-fused-tms, ...) or the "
                    "generic path (autograd, spd-fused)",
    "steps_timed": "timed steps",
    "warmup_steps": "untimed steps before them",
    "ms_per_step_median": "wall-clock ms per step, median over the timed steps",
    "ms_per_step_min": "fastest timed step",
    "ms_per_step_max": "slowest timed step",
    "ms_per_replicate_step": "median ms per step / replicates",
    "cpu_ms_per_step_median": "process CPU ms per step (robust to time-slicing on a busy machine; "
                              "exceeds wall-clock with several BLAS threads)",
    "steps_per_s": "1000 / median",
    "full_run_steps": "decompose.steps of the spec",
    "projected_full_run_s": "full_run_steps x median (decomposition only; target training excluded)",
    "step_peak_traced_mb": "peak of the memory allocated during one step (tracemalloc: temporaries and outputs)",
    "state_mb": "parameters + Adam moments",
    "peak_memory_estimate_mb": "state + target + step peak",
    "max_rss_mb": "peak resident set size of the whole process (interpreter, libraries and anything run before)",
    "blas": "BLAS library and its configuration",
    "blas_threads": "BLAS threads in effect",
    "gflop_per_step": "analytic FLOPs of one step (step_flops), in 1e9",
    "gflop_per_step_by_term": "the same per term",
    "achieved_gflops": "gflop_per_step / median seconds",
    "matmul_peak_gflops": "best-of-5 1024^3 matmul in this process, same dtype and threads",
    "fraction_of_matmul_peak": "achieved_gflops / matmul_peak_gflops",
}


def bench(exp: Experiment, steps: int = 20, warmup: int = 3, threads: int | None = None) -> dict:
    """Time `steps` decomposition steps (after `warmup` untimed ones) of `exp`'s configuration.

    Returns a flat dict with the keys of `KEYS` (described there); times in ms, memory in MB
    (10^6 bytes)."""
    from . import restarts
    from ..engine.kernels import default_blas_threads

    trained = check(exp)
    exp = restarts.widened(trained)  # what one step trains: every restart of every replicate
    dc = exp.decompose
    default_blas_threads()  # what Trainer would do; an explicit `threads` then overrides it
    old_threads = None
    if threads is not None:
        old_threads = blas_info()["blas_threads"]
        if not set_blas_threads(threads):
            raise RuntimeError("cannot set the BLAS thread count in-process (OpenBLAS not found); "
                               "set OPENBLAS_NUM_THREADS before starting Python instead")
    try:
        # enough scheduled steps that every timed step is a real update (not the final log-only one)
        trainer, arch, target, target_how = step_runner(trained, min_steps=warmup + steps + 2)
        for _ in range(warmup):
            trainer.step()
        times, cpu = [], []
        for _ in range(steps):
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.step()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        # memory: one more step under tracemalloc, which sees NumPy's buffers allocated from then
        # on, i.e. the step's temporaries and outputs (not the parameters that already exist)
        tracemalloc.start()
        trainer.step()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        state_bytes = sum(v.nbytes for v in trainer.comps.values()) * 3  # parameters + Adam m, v
        target_bytes = sum(np.asarray(v).nbytes for v in target.values())
        info = blas_info()
        peak_gflops = matmul_peak_gflops(exp.dtype)
    finally:
        if old_threads is not None:
            set_blas_threads(old_threads)
    t = np.asarray(times) * 1e3
    med = float(np.median(t))
    engine = engine_of(dc.method)
    flops = engine.step_flops(exp, arch)
    achieved = flops["total"] / (med / 1e3) / 1e9
    return {
        "experiment": exp.name,
        "target_kind": arch.kind,
        "config": engine.describe(exp),
        "target_params": target_how,
        "dtype": exp.dtype,
        "replicates": exp.replicates,
        "batch": dc.batch,
        "components": dc.components,
        "rank": engine.decomposition.inner_rank(dc),
        "compute_path": trainer.problem.path,
        "steps_timed": steps,
        "warmup_steps": warmup,
        "ms_per_step_median": med,
        "ms_per_step_min": float(t.min()),
        "ms_per_step_max": float(t.max()),
        "ms_per_replicate_step": med / exp.replicates,
        "cpu_ms_per_step_median": float(np.median(cpu)) * 1e3,
        "steps_per_s": 1e3 / med,
        "full_run_steps": dc.steps,
        "projected_full_run_s": dc.steps * med / 1e3,
        "step_peak_traced_mb": peak / 1e6,
        "state_mb": state_bytes / 1e6,
        "peak_memory_estimate_mb": (peak + state_bytes + target_bytes) / 1e6,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
        "blas": info["blas"],
        "blas_threads": info["blas_threads"],
        "gflop_per_step": flops["total"] / 1e9,
        "gflop_per_step_by_term": {k: v / 1e9 for k, v in flops.items() if k != "total"},
        "achieved_gflops": achieved,
        "matmul_peak_gflops": peak_gflops,
        "fraction_of_matmul_peak": achieved / peak_gflops,
    }


# ------------------------------------------------------------------------------------------
# How to spend the cores on a sweep

_WORKER = """
import json, sys
sys.path[:0] = {path!r}
from runtime.spec import from_dict
from runtime.pipeline.bench import bench
print(json.dumps(bench(from_dict(json.loads(sys.stdin.read())), steps={steps})["ms_per_step_median"]))
"""


def jobs_vs_threads(exp: Experiment, steps: int = 10) -> dict:
    """Decomposition steps/s of `exp` run as 1 process x 2 BLAS threads and as 2 processes x 1 thread
    started together (summed): what `apdspec run --jobs` (default one point per core) trades. Each
    figure comes from a fresh subprocess, since the BLAS thread count is fixed when NumPy loads."""
    import json
    import os
    import subprocess
    import sys

    from ..spec import to_json

    payload = to_json(check(exp))
    path = [p for p in sys.path if p]

    def start(threads: int) -> subprocess.Popen:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        proc = subprocess.Popen([sys.executable, "-c", _WORKER.format(path=path, steps=steps)], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdin.write(payload)
        proc.stdin.close()
        return proc

    def ms(proc: subprocess.Popen) -> float:
        out, err = proc.stdout.read(), proc.stderr.read()
        if proc.wait():
            raise RuntimeError(f"benchmark worker failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
        return float(out.strip().splitlines()[-1])

    one = ms(start(2))
    pair = [start(1), start(1)]
    two = [ms(p) for p in pair]
    thr_one, thr_two = 1e3 / one, sum(1e3 / t for t in two)
    return {"ms_per_step_1job_2threads": one, "ms_per_step_2jobs_1thread": two,
            "steps_per_s_1job_2threads": thr_one, "steps_per_s_2jobs_1thread": thr_two,
            "jobs_over_threads": thr_two / thr_one}

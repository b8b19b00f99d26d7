"""Time decomposition steps of an experiment: `bench(exp)` -> a dict of self-explanatory figures.

    from runtime.pipeline.bench import bench
    r = bench(exp, steps=20)          # exp: a spec.Experiment (e.g. apdspec.load(path).experiment)
    r["ms_per_step_median"], r["projected_full_run_s"], r["fraction_of_matmul_peak"]

What is timed: `decompose.Trainer.step()`, i.e. exactly one iteration of `decompose()` (unit-norm,
LR, batch sampling, target forward, attributions and top-k mask, loss and gradient, gradient
projection, Adam update), on the spec's own configuration (C, m, batch, replicates, losses,
attribution, dtype). The target has the right shapes but is not trained (no target training is
timed): TMS and residual-MLP targets come from `models.init_target` (their fresh initialisation),
gated targets are the hand-coded network (`gated.build_for_experiment`), file targets are loaded.
Training the target changes attributions and masks, and so the amount of work per step only
marginally (how the active (sample, component) pairs spread over components and samples).

FLOPs are counted analytically from the shapes (multiply-add = 2 FLOPs, notes §10.2): see
`step_flops`. The achieved rate is reported as a fraction of a float32/float64 1024^3 matmul
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
from ..spec import Experiment, FileTarget, GatedTarget, TmsTarget, check, resolve

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


def active_pairs(exp: Experiment, arch) -> float:
    """Expected number of (sample, component) pairs switched on per replicate and step."""
    dc = exp.decompose
    B, C = dc.batch, dc.components
    if dc.topk is None:
        return float(B * C)
    if dc.topk.mode == "batch":
        return float(min(int(dc.topk.value * B), B * C))
    if dc.topk.mode == "sample":
        return float(min(dc.topk.value, C) * B)
    from ..engine.models import n_inputs  # exact: the expected number of active input features

    return float(min(B * C, exp.data.probability * n_inputs(arch) * B))


def expected_rows(exp: Experiment, arch) -> float:
    """Rows a step works on: the runtime drops all-zero input rows where that is exact
    (`fused.zero_rows_inert`, batch/exact top-k), so with at_least_zero_active data only
    B (1 - (1 - p)^F) rows are expected to remain."""
    from ..engine.fused import applies, zero_rows_inert

    dc = exp.decompose
    B = dc.batch
    if not (applies(arch, dc.loss, dc.topk) and zero_rows_inert(arch) and dc.topk.mode in ("batch", "exact")):
        return float(B)
    if exp.data.mode != "at_least_zero_active":
        return float(B)
    return float(B * (1.0 - (1.0 - exp.data.probability) ** arch.features))


def spd_step_flops(exp: Experiment, arch) -> dict:
    """SPD's analytic FLOPs per step, all replicates: engine.spd.step_cost by term, and "total"."""
    from ..engine.spd import step_cost

    c = step_cost(exp, arch)
    terms = ("causal_importance", "inner_acts", "masked_passes", "faithfulness", "total")
    return {k: c[k] * exp.replicates for k in terms}


def step_flops(exp: Experiment, arch=None) -> dict:
    """Analytic FLOP count of one step as this runtime computes it (multiply-add = 2 FLOPs, as in
    notes §10.2), per term and in total, for all replicates.

    With B rows per step (`expected_rows`), C components of rank m (Cm = C m), K active
    (sample, component) pairs (`active_pairs`) and each decomposed matrix d_in x d_out:
      faithfulness   3 x 2 d_in Cm d_out per matrix: the sum A @ B and its two gradient GEMMs
      target_forward 2 B d_in d_out per layer use (+ embedding and unembedding of residual nets)
      attributions   the closed-form attributions (`attribution_flops`)
      masked_forward the masked bottleneck on the active pairs only, forward and backward:
                     3 x 2 K m (d_in + d_out) per layer use (+ unembedding of residual nets);
                     TMS with few components uses the dense form, 3 x 2 B Cm (d_in + d_out)
      simplicity     3 x 2 Cm (d_in + d_out) per matrix (norms of A's columns and B's rows)
      optimizer      Adam: ~10 FLOPs per parameter (memory-bound in practice)
    Autograd-path steps (e.g. Lp sparsity) do more work than this model counts."""
    from ..engine.apd import param_shapes
    from ..engine.models import layers_of, n_inputs, n_outputs, residual_dims

    exp = resolve(exp)  # (a widened experiment with a replicated file target would not validate)
    if arch is None:
        arch = exp.target
    dc = exp.decompose
    I, C, m = exp.replicates, dc.components, dc.rank
    Cm, K, rows = C * m, active_pairs(exp, arch), expected_rows(exp, arch)
    L = dc.loss
    layers = layers_of(arch)
    shapes = param_shapes(arch)
    out = {}
    if L.faithfulness is not None:
        out["faithfulness"] = sum(3 * 2 * d_in * Cm * d_out for d_in, d_out in shapes.values())
    fwd = sum(2 * rows * l.d_in * l.d_out for l in layers)
    if not isinstance(arch, TmsTarget):
        D = residual_dims(arch)[0]
        fwd += 2 * rows * n_inputs(arch) * D + 2 * rows * D * n_outputs(arch)
    out["target_forward"] = fwd
    if dc.topk is not None or L.sparsity is not None:
        out["attributions"] = attribution_flops(exp, arch, rows)
    if isinstance(arch, TmsTarget) and _tms_dense(exp, arch, rows):
        out["masked_forward"] = sum(3 * 2 * rows * Cm * (l.d_in + l.d_out) for l in layers)
    else:
        out["masked_forward"] = sum(3 * 2 * K * m * (l.d_in + l.d_out) for l in layers)
    if not isinstance(arch, TmsTarget):
        out["masked_forward"] += 3 * 2 * rows * residual_dims(arch)[0] * n_outputs(arch)
    if L.simplicity is not None:
        out["simplicity"] = sum(3 * 2 * Cm * (d_in + d_out) for d_in, d_out in shapes.values())
    out["optimizer"] = 10 * sum(d_in * Cm + Cm * d_out for d_in, d_out in shapes.values())
    out = {k: float(v) * I for k, v in out.items()}
    out["total"] = sum(out.values())
    return out


def _tms_dense(exp: Experiment, arch, rows: float) -> bool:
    from ..engine.fused import TmsLoss, tms_variant

    dc = exp.decompose
    return tms_variant(exp.replicates, max(int(rows), 1), dc.components, dc.rank, arch) is TmsLoss


def attribution_flops(exp: Experiment, arch, rows: float | None = None) -> float:
    """FLOPs of the closed-form gradient attributions for one replicate on `rows` rows.

    TMS (forward mode, `attributions._tms_attributions_plain`): per layer use j, the bottleneck
    2 B d_in Cm, its map to the output 2 Cm d_out F (with the later weights) and the tangents
    2 C B m F. Residual MLP (forward mode, `fused.ResidualPre`), per layer l with
    n_b = n_in + l d_mlp rows spanning the residual stream and n_l = (L - l - 1) d_mlp + d_L later
    widths: 2 n_b D Cm + 2 B n_b Cm (the layer's bottleneck), 2 C B m d_mlp, 2 Cm D n_l
    (B_out's maps into later layers), 2 B d_mlp Cm, 2 C B (d_mlp + m) n_l (tangents); the GEMMs it
    shares with the faithfulness gradient are counted there. Residual nets with d_L <= 2 (gated)
    use reverse mode: per layer 2 B (D + d_mlp) Cm, plus per output 2 B (D + d_mlp) Cm and the
    backward pass 4 B D d_mlp. Attributions from the APD model add its unmasked forward pass
    2 B Cm (d_in + d_out) per layer use."""
    from ..engine.attributions import REVERSE_MAX_OUTPUTS
    from ..engine.models import layers_of, n_inputs, n_outputs, residual_dims

    dc = exp.decompose
    B = float(dc.batch if rows is None else rows)
    C, m = dc.components, dc.rank
    Cm = C * m
    layers = layers_of(arch)
    total = 0.0
    if isinstance(arch, TmsTarget):
        F = arch.features
        for l in layers:
            total += 2 * B * l.d_in * Cm + 2 * Cm * l.d_out * F + 2 * C * B * m * F
    else:
        D, d_mlp, n_layers = residual_dims(arch)
        d_L = n_outputs(arch)
        if d_L <= REVERSE_MAX_OUTPUTS:
            for _ in range(n_layers):
                total += 2 * B * (D + d_mlp) * Cm + d_L * (2 * B * (D + d_mlp) * Cm + 4 * B * D * d_mlp)
        else:
            for l in range(n_layers):
                n_b = n_inputs(arch) + l * d_mlp
                n_l = (n_layers - l - 1) * d_mlp + d_L
                total += 2 * n_b * D * Cm + 2 * B * n_b * Cm + 2 * C * B * m * d_mlp
                total += 2 * Cm * D * n_l + 2 * B * d_mlp * Cm + 2 * C * B * (d_mlp + m) * n_l
    if dc.attribution.kind != "gradient" or dc.attribution.source != "target":
        total += sum(2 * B * Cm * (l.d_in + l.d_out) for l in layers)
    return float(total)


# ------------------------------------------------------------------------------------------
# The benchmark


def _target_for(exp: Experiment):
    """(arch, params, how): a target of the right shapes without training it."""
    t = exp.target
    dtype = np.dtype(exp.dtype)
    if isinstance(t, FileTarget):
        from .runner import build_target

        arch, params, _, _ = build_target(exp)
        return arch, params, f"loaded from {t.path}"
    if isinstance(t, GatedTarget):
        from ..engine.gated import build_for_experiment

        params, _ = build_for_experiment(exp, dtype)
        return t, params, "hand-coded gated network (gated.build_for_experiment)"
    from ..engine import seeding
    from ..engine.models import init_target

    params = init_target(t, exp.replicates, seeding.stream(exp.seed, "target_init"), dtype)
    return t, params, "models.init_target (fresh, untrained initialisation; no target training timed)"


def step_runner(exp: Experiment, min_steps: int = 0):
    """(runner, arch, target, how): `runner.step()` runs one optimiser step of `exp`'s decomposition
    (every restart of every replicate: `exp` is widened), on a target of the right shapes (not
    trained: `_target_for`); `how` says where the target came from. `exp.decompose.steps` is raised
    to `min_steps` if needed, so that every timed step is a real update. The one place that builds
    a step to time: `bench` and `estimate` use it, so a new decomposition method adds its own
    step here and both follow."""
    from ..engine.data import sample_inputs
    from ..engine.decompose import Trainer
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

    if dc.method == "spd":
        from ..engine.spd_train import SpdTrainer as Trainer  # noqa: N813  (the same interface)
    return Trainer(run_exp, arch, target, sample, seeding.stream(dc.seed, "apd_init")), arch, target, how


def describe_config(exp: Experiment) -> str:
    """One-line summary of what a step computes."""
    dc = exp.decompose
    if dc.method == "spd":
        L, ci = dc.loss, dc.causal_importance
        terms = ", ".join(f"{n} {getattr(L, n):g}" for n in ("faithfulness", "stochastic_recon",
                                                            "stochastic_recon_layerwise", "importance_minimality")
                          if getattr(L, n) is not None)
        return (f"SPD; B {dc.batch}; C {dc.components} per matrix; I {exp.replicates}; causal importance "
                f"{ci.hidden} {ci.activation}; S {dc.mask_samples}; {terms} (p {L.importance_minimality_p:g}); {exp.dtype}")
    L = dc.loss
    parts = [f"B {dc.batch}", f"C {dc.components}", f"m {dc.rank}", f"I {exp.replicates}"]
    if dc.topk is not None:
        parts.append(f"top-k {dc.topk.mode} {dc.topk.value:g}")
    terms = []
    for name in ("faithfulness", "minimality", "act_recon", "simplicity", "sparsity", "output_recon"):
        v = getattr(L, name)
        if v is not None:
            extra = f" p {L.simplicity_p:g}" if name == "simplicity" else (f" p {L.sparsity_p:g}" if name == "sparsity" else "")
            terms.append(f"{name} {v:g}{extra}")
    parts.append(", ".join(terms))
    a = dc.attribution
    parts.append(f"attribution {a.kind}/{a.source}")
    if dc.unit_norm:
        parts.append("unit_norm")
    parts.append(exp.dtype)
    return "; ".join(parts)


KEYS = {
    "experiment": "experiment name",
    "target_kind": "tms | resid_mlp | gated",
    "config": "what one step computes (batch, components, rank, replicates, top-k, loss terms, attribution, dtype)",
    "target_params": "where the (untrained) target parameters came from",
    "dtype": "float32 | float64",
    "replicates": "independent model instances trained by one vectorised step",
    "batch": "samples per step and replicate",
    "components": "C",
    "rank": "m",
    "compute_path": "fused-tms | fused-residual (runtime/engine/fused.py) | autograd (LossProblem.loss)",
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
    flops = spd_step_flops(exp, arch) if dc.method == "spd" else step_flops(exp, arch)
    achieved = flops["total"] / (med / 1e3) / 1e9
    return {
        "experiment": exp.name,
        "target_kind": arch.kind,
        "config": describe_config(exp),
        "target_params": target_how,
        "dtype": exp.dtype,
        "replicates": exp.replicates,
        "batch": dc.batch,
        "components": dc.components,
        "rank": dc.rank,
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

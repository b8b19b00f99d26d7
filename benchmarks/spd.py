"""SPD speed: the causal-importance kernel and the SPD step against their autograd definitions, and
the SPD specs' steps. Writes benchmarks/SPD_RESULTS.md (and spd_results.json).

    PYTHONPATH=. python benchmarks/spd.py            # ~10 min on a 2-core machine
    PYTHONPATH=. python benchmarks/spd.py --quick    # fewer repeats

Every figure is process CPU time (robust to time-slicing on a shared machine), the median over
repeats; BLAS is pinned to 1 thread. Nothing here is asserted: tests/methods/spd/test_spd.py checks that every
fast path computes the same numbers as its definition.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_ms(fn, repeats: int, inner: int = 1) -> float:
    """Median over `repeats` of the process CPU time of `inner` calls of fn, per call, in ms."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(inner):
            fn()
        times.append((time.process_time() - t0) / inner)
    return float(np.median(times)) * 1e3


def gelu_blocks(repeats: int) -> list[dict]:
    """ns per element of the value and derivative of GELU on a 64K-element float32 block."""
    from scipy.special import erf

    from runtime.methods.spd import ci

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 1 << 16).astype(np.float32)
    g, p, a, t = (np.empty_like(z) for _ in range(4))

    def scipy_erf():
        Phi = 0.5 * (1.0 + erf(z * np.float32(1 / np.sqrt(2))))
        return z * Phi, Phi + z * np.exp(-0.5 * z * z) * np.float32(1 / np.sqrt(2 * np.pi))

    rows = []
    for name, fn in (("scipy.special.erf (value + derivative, numpy temporaries)", scipy_erf),
                     ("ci.gelu_block_fast: exact GELU, A&S 7.1.26 erf, in place", lambda: ci.gelu_block_fast(z, g, p, a, t)),
                     ("ci.gelu_tanh_block: tanh approximation, in place", lambda: ci.gelu_tanh_block(z, g, p, a, t))):
        rows.append({"what": name, "ns_per_element": cpu_ms(fn, repeats, 20) * 1e6 / z.size})
    return rows


CI_SHAPES = (("TMS 40-10, one matrix (R 3600 rows kept of 4096, C 200, K 16), 1 replicate", 1, 3600, 200, 16),
             ("TMS 5-2, one matrix (R 950, C 20, K 16), 5 replicates", 5, 950, 20, 16),
             ("residual MLP 1 layer, one matrix (R 1300 of 2048, C 100, K 16), 1 replicate", 1, 1300, 100, 16))


def ci_kernel(repeats: int) -> list[dict]:
    """Forward + backward of the causal-importance MLPs of one matrix: CIKernel vs the autograd
    definition (ci_mlp_plain, exact erf)."""
    from autograd import grad

    from runtime.methods.spd import ci

    rows = []
    for label, I, B, C, K in CI_SHAPES:
        rng = np.random.default_rng(0)
        h = rng.normal(0, 1, (I, B, C)).astype(np.float32)
        p = ci.init_ci(C, K, I, rng, np.float32)
        args = (h, p["w_in"], p["b_in"], p["w_out"], p["b_out"])
        w = rng.normal(size=h.shape).astype(np.float32)
        k = ci.CIKernel("gelu")
        fused = grad(lambda *a: np.sum(ci.ci_mlp(k, *a) * w), argnum=[0, 1, 2, 3, 4])
        plain = grad(lambda *a: np.sum(ci.ci_mlp_plain(*a) * w), argnum=[0, 1, 2, 3, 4])
        units = I * B * C * K
        t_f = cpu_ms(lambda: fused(*args), repeats)
        t_p = cpu_ms(lambda: plain(*args), max(2, repeats // 2))
        rows.append({"shape": label, "units": units, "kernel_ms": t_f, "autograd_ms": t_p,
                     "kernel_ns_per_unit": t_f * 1e6 / units, "speedup": t_p / t_f})
    return rows


def _trainer(spec_path: str, overrides=()):
    import apdspec
    from runtime.engine import seeding
    from runtime.engine.data import sample_inputs
    from runtime.engine.models import init_target
    from runtime.methods.spd.train import SpdTrainer

    exp = apdspec.load(os.path.join(ROOT, spec_path), overrides).experiment
    arch, I = exp.target, exp.replicates
    target = init_target(arch, I, seeding.stream(exp.seed, "target_init"), np.float32)
    rng = seeding.stream(0, "bench")
    return SpdTrainer(exp, arch, target, lambda b: sample_inputs(arch, exp.data, I, b, rng, np.float32),
                      seeding.stream(0, "init")), exp


def steps(repeats: int) -> list[dict]:
    """One SPD step (SpdTrainer.step: batch, mask noise, target forward, loss, gradient, Adam) by
    implementation."""
    from runtime.methods.spd import model as spd_mod

    rows = []
    cases = [("specs/spd_tms_5_2.apd", ()), ("specs/spd_tms_40_10.apd", ()), ("specs/spd_resid_mlp_1l.apd", ())]
    for path, ov in cases:
        tr, exp = _trainer(path, ov)
        problem = tr.problem
        variants = []
        if problem.tms is not None:
            hand = problem.tms
            variants.append(("hand-written TMS loss + CI kernel (spd_fused)", lambda: setattr(problem, "tms", hand)))
            variants.append(("autograd + CI kernel", lambda: setattr(problem, "tms", None)))
        if isinstance(problem.loss.view, spd_mod.Resid1View):
            folded, chain = problem.loss.view, spd_mod.ChainView(exp.target, tr.target)
            variants.append(("folded residual stream (Resid1View) + CI kernel", lambda: setattr(problem.loss, "view", folded)))
            variants.append(("models.forward (ChainView) + CI kernel", lambda: setattr(problem.loss, "view", chain)))
        for label, setup in variants:
            setup()
            ms = cpu_ms(tr.step, repeats)
            rows.append({"spec": path, "replicates": exp.replicates, "implementation": label, "cpu_ms_per_step": ms,
                         "projected_h": ms * exp.decompose.steps / 3.6e6, "steps": exp.decompose.steps})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else 7
    load0 = os.getloadavg()[0]
    out = {"gelu": gelu_blocks(reps), "ci_kernel": ci_kernel(reps), "steps": steps(max(3, reps // 2))}
    from runtime.engine.kernels import blas_info

    out["machine"] = {"platform": platform.platform(), "python": sys.version.split()[0], "numpy": np.__version__,
                      "cpus": os.cpu_count(), "blas": blas_info(), "load_start": load0, "load_end": os.getloadavg()[0],
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with open(os.path.join(ROOT, "benchmarks", "spd_results.json"), "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(ROOT, "benchmarks", "SPD_RESULTS.md"), "w") as f:
        f.write(render(out, " ".join(["benchmarks/spd.py"] + (argv or sys.argv[1:]))))
    print(render(out, ""))
    return 0


def render(r: dict, command: str) -> str:
    m = r["machine"]
    lines = ["# Benchmarks: SPD (Stochastic Parameter Decomposition)", "",
             f"Generated by `PYTHONPATH=. python {command or 'benchmarks/spd.py'}` on {m['date']}. "
             f"{m['cpus']} cores, {m['platform']}, Python {m['python']}, NumPy {m['numpy']}, 1 BLAS thread. Load "
             f"average (1 min) {m['load_start']:.2f} at the start, {m['load_end']:.2f} at the end: the machine is shared, so "
             "every figure is process CPU time (median of repeats), which time-slicing affects less than wall time "
             "(cache and memory-bandwidth contention still inflate it).", "",
             "## GELU and its derivative (what the causal-importance MLPs spend their time on)", "",
             "| implementation | ns per element |", "|---|---|"]
    lines += [f"| {g['what']} | {g['ns_per_element']:.2f} |" for g in r["gelu"]]
    lines += ["", "## Causal-importance MLPs of one matrix, forward + backward", "",
              "`ci.CIKernel` (the primitive training uses) against `ci.ci_mlp_plain` (the definition, autograd, "
              "exact erf), float32.", "",
              "| shape | hidden units | kernel ms | autograd ms | kernel ns/unit | speed-up |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['shape']} | {c['units']:,} | {c['kernel_ms']:.1f} | {c['autograd_ms']:.1f} | "
              f"{c['kernel_ns_per_unit']:.2f} | {c['speedup']:.1f}x |" for c in r["ci_kernel"]]
    lines += ["", "## One SPD step of the specs", "",
              "`SpdTrainer.step()` on the spec's configuration (untrained target of the right shapes), by implementation; "
              "projected = decompose.steps x the median (decomposition only).", "",
              "| spec | replicates | implementation | cpu ms/step | projected |", "|---|---|---|---|---|"]
    lines += [f"| `{s['spec']}` | {s['replicates']} | {s['implementation']} | {s['cpu_ms_per_step']:.1f} | "
              f"{s['projected_h']:.2f} h ({s['steps']:,} steps) |" for s in r["steps"]]
    lines += ["", "The first row of each spec is what `apdspec run` uses. `apdspec bench SPEC` times a spec the same "
              "way (wall time too); the validation runs in docs/results/ give the wall times of whole runs.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

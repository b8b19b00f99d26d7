"""How to spend 2 cores on a sweep: 2 jobs x 1 BLAS thread, or 1 job x 2 threads?

    PYTHONPATH=. python benchmarks/jobs_vs_threads.py [--steps 10] [--specs tms_5_2,resid_mlp_1l]

Per spec, `runtime.pipeline.bench.jobs_vs_threads` times the spec's decomposition steps in one
process with 2 BLAS threads and in two processes started together with 1 thread each, and this
prints the throughput (decomposition steps/s, summed over processes): what `apdspec run --jobs`
(default: one point per core) trades. Also `apdspec bench SPEC --jobs-vs-threads`. The load average
is printed: on a shared machine the figures are only as good as the quiet it had.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv: list[str] | None = None) -> int:
    import apdspec
    from runtime.pipeline.bench import jobs_vs_threads

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--specs", default="tms_5_2,tms_40_10,resid_mlp_1l,resid_mlp_2l")
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    print(f"{'spec':<16} {'1 job x 2 threads':>20} {'2 jobs x 1 thread':>20} {'ratio':>7}")
    for name in args.specs.split(","):
        r = jobs_vs_threads(apdspec.load(os.path.join(ROOT, "specs", name + ".apd")).experiment, steps=args.steps)
        two = r["ms_per_step_2jobs_1thread"]
        print(f"{name:<16} {r['steps_per_s_1job_2threads']:>12.1f} steps/s {r['steps_per_s_2jobs_1thread']:>12.1f} "
              f"steps/s {r['jobs_over_threads']:>6.2f}x   (ms/step: {r['ms_per_step_1job_2threads']:.1f} | "
              f"{two[0]:.1f}, {two[1]:.1f})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

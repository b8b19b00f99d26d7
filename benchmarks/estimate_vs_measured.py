"""Estimated (`apdspec check`) against measured (`apdspec run`) wall time, for every spec in specs/.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python benchmarks/estimate_vs_measured.py [--full] [NAME ...]

Each case is estimated (runtime.pipeline.estimate, what `apdspec check` prints) immediately before
it is run as `apdspec run SPEC -s ... --quiet` in a fresh process, timed from the outside (the whole
command: start-up, target training, decomposition, metrics, plots, report). Long specs run
shortened (fewer decomposition and target-training steps, as `-s` overrides) so that the table
takes about an hour; `--full` runs the specs as written. Results are appended to
benchmarks/estimates.json; the table is docs/results.md, "Run time estimates".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHORT_RESID = ["-s", "target.train.steps=1000", "-s", "decompose.steps=600"]
CASES = {  # name -> (spec, overrides of the shortened run)
    "quickstart": ("quickstart", []),
    "tms_5_2": ("tms_5_2", []),
    "tms_5_2_p09": ("tms_5_2_p09", []),
    "tms_5_2_lp": ("tms_5_2_lp", ["-s", "decompose.steps=4000"]),
    "tms_40_10": ("tms_40_10", ["-s", "decompose.steps=4000"]),
    "tms_40_10_paper": ("tms_40_10_paper", ["-s", "decompose.steps=4000"]),
    "tms_40_10_revive": ("tms_40_10_revive", ["-s", "decompose.steps=4000"]),
    "resid_mlp_1l": ("resid_mlp_1l", SHORT_RESID),
    "resid_mlp_1l_topk1": ("resid_mlp_1l_topk1", SHORT_RESID),
    "resid_mlp_1l_rank1": ("resid_mlp_1l_rank1", ["-s", "target.train.steps=1000", "-s", "decompose.steps=3000"]),
    "resid_mlp_2l": ("resid_mlp_2l", SHORT_RESID),
    "resid_mlp_2l_topk1": ("resid_mlp_2l_topk1", SHORT_RESID),
    "resid_mlp_2l_rank1": ("resid_mlp_2l_rank1", ["-s", "target.train.steps=1000", "-s", "decompose.steps=3000"]),
    "gated": ("gated", ["-s", "decompose.steps=20000"]),
}


def measure(name: str, spec: str, overrides: list[str]) -> dict:
    import apdspec
    from runtime.pipeline.estimate import estimate

    path = os.path.join(ROOT, "specs", spec + ".apd")
    sets = [o for o in overrides if o != "-s"]
    est = estimate(apdspec.load(path, sets).experiment)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "apdspec", "run", path, *overrides, "--out", out, "--quiet"],
                              cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        with open(os.path.join(out, "summary.json")) as f:
            timings = json.load(f).get("timings", {})
    return {"name": name, "spec": f"specs/{spec}.apd", "overrides": sets, "exit": proc.returncode,
            "estimate_s": est.total_s, "estimate_parts": est.parts, "estimate_step_ms": est.step_ms,
            "estimate_target_step_ms": est.target_step_ms, "calibration_s": est.calibration_s,
            "measured_s": wall, "measured_timings": timings, "ratio": wall / est.total_s,
            "load_avg": os.getloadavg()[0], "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv: list[str]) -> None:
    full = "--full" in argv
    names = [a for a in argv if not a.startswith("--")] or list(CASES)
    log = os.path.join(ROOT, "benchmarks", "estimates.json")
    rows = json.load(open(log)) if os.path.exists(log) else []
    for name in names:
        spec, overrides = CASES[name]
        row = measure(name + (" (full)" if full else ""), spec, [] if full else overrides)
        rows.append(row)
        with open(log + ".tmp", "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(log + ".tmp", log)
        print(f"{row['name']:<24} estimate {row['estimate_s']:8.1f} s  measured {row['measured_s']:8.1f} s  "
              f"ratio {row['ratio']:.2f}  (exit {row['exit']}, load {row['load_avg']:.1f})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

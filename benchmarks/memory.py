"""The memory estimate (runtime/pipeline/resources.py) against measured runs, phase by phase.

    python benchmarks/memory.py              # ~15 min on 2 shared cores; writes benchmarks/memory.json
    python benchmarks/memory.py --quick      # three cases
    python benchmarks/memory.py --table      # the table of the last full run (memory.json)

Each case runs in a fresh process: target training, the decomposition (a few steps: memory does
not grow with steps), the metrics and the report, each phase under tracemalloc (NumPy reports its
arrays to it), plus the process's peak RSS (ru_maxrss) at the end. The table puts the estimate of
each phase (parts of that phase, without the process itself) beside the traced peak of the phase,
and the estimated peak (with the process) beside the peak RSS. The estimate should never be below
what was measured (below 1 MiB, Python's own objects dominate and are not counted); by how much it
is above says how conservative it is.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["-s", "decompose.steps=4", "-s", "decompose.log_every=2", "-s", "decompose.checkpoint_every=0"]
TRAINED = ["-s", "target.train.steps=4"]

CASES = [
    ("specs/quickstart.apd", TRAINED),
    ("specs/quickstart.apd", TRAINED + ["-s", "decompose.batch=200000", "-s", "target.train.batch=200000"]),
    ("specs/quickstart.apd", TRAINED + ["-s", "replicates=2000"]),
    ("specs/quickstart.apd", TRAINED + ["-s", "report.eval_batches=4000"]),
    ("specs/tms_40_10.apd", TRAINED),
    ("specs/tms_5_2_lp.apd", TRAINED),
    ("specs/resid_mlp_1l.apd", TRAINED),
    ("specs/resid_mlp_1l.apd", TRAINED + ["-s", "decompose.components=520"]),
    ("specs/resid_mlp_1l.apd", TRAINED + ["-s", "decompose.batch=1024", "-s", "target.train.batch=8192"]),
    ("specs/resid_mlp_1l.apd", TRAINED + ["-s", "target.features=4000", "-s", "report.plots=[losses]"]),
    ("specs/resid_mlp_2l.apd", TRAINED),
    ("specs/gated.apd", []),
    ("specs/deep_linear.apd", TRAINED),
    ("specs/spd_smoke.apd", TRAINED),
    ("specs/spd_tms_40_10_laptop.apd", TRAINED),
    ("specs/spd_resid_mlp_1l.apd", TRAINED),
    ("specs/spd_tms_5_2_robust.apd", TRAINED),
]
QUICK = [0, 6, 14]

MiB = 2 ** 20


def one(spec: str, sets: list[str]) -> dict:
    """Run one case in this process; its figures (bytes)."""
    import resource
    import tempfile
    import tracemalloc

    sys.path.insert(0, ROOT)
    from apdspec.loader import load
    from runtime.pipeline.resources import PROCESS_BYTES, estimate_memory
    from runtime.pipeline.runner import build_target, finish, run
    from runtime.report.document import render
    from runtime.store.rundir import save_arrays, write_text
    from runtime.spec import to_json

    exp = load(os.path.join(ROOT, spec), sets).experiment
    est = estimate_memory(exp)
    out = {"estimate": {p: est.phase_bytes(p) - PROCESS_BYTES for p in
                        ("target training", "decomposition", "evaluation", "report")},
           "estimate_peak": est.peak, "measured": {}}
    tracemalloc.start()

    def phase(name, fn):
        tracemalloc.reset_peak()
        value = fn()
        out["measured"][name] = tracemalloc.get_traced_memory()[1]
        return value

    built = phase("target training", lambda: build_target(exp))
    result = phase("decomposition", lambda: run(exp, built_target=built, with_metrics=False))
    del built
    phase("evaluation", lambda: finish(result))
    d = tempfile.mkdtemp()
    save_arrays(result, d)
    write_text(os.path.join(d, "spec.json"), to_json(exp))
    phase("report", lambda: render(d, result=result))
    out["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


SLACK = 2 ** 20  # below 1 MiB, Python's own objects (autograd's tape nodes) are not what is estimated


def table(rows: list[dict]) -> int:
    """Print the table of `rows`; returns how many figures the estimate is below."""
    low = 0
    print("| case | phase: estimate / traced peak (MiB) | peak: estimate / RSS (MiB) |")
    print("|---|---|---|")
    for r in rows:
        cells = []
        for ph, m in r["measured"].items():
            e = r["estimate"][ph]
            low += e + SLACK < m
            cells.append(f"{ph} {e / MiB:.0f} / {m / MiB:.0f}" + (" **LOW**" if e + SLACK < m else ""))
        low += r["estimate_peak"] < r["maxrss"]
        name = r["spec"].split("/")[-1] + " " + " ".join(s for s in r["sets"] if s != "-s"
                                                         and not s.startswith("target.train.steps"))
        print(f"| {name} | {'; '.join(cells)} | {r['estimate_peak'] / MiB:.0f} / {r['maxrss'] / MiB:.0f}"
              + (" **LOW**" if r["estimate_peak"] < r["maxrss"] else "") + " |", flush=True)
    print(f"{low} figures where the estimate is below the measurement")
    return low


def main() -> int:
    if sys.argv[1:2] == ["--one"]:
        spec, sets = sys.argv[2], [a for a in sys.argv[3:]]
        print(json.dumps(one(spec, [sets[i + 1] for i, a in enumerate(sets) if a == "-s"])))
        return 0
    path = os.path.join(ROOT, "benchmarks", "memory.json")
    if "--table" in sys.argv:  # the last full run's table
        with open(path) as f:
            return 1 if table(json.load(f)) else 0
    cases = [CASES[i] for i in QUICK] if "--quick" in sys.argv else CASES
    rows = []
    for spec, sets in cases:
        p = subprocess.run([sys.executable, __file__, "--one", spec, *sets, *SHORT], capture_output=True, text=True,
                           cwd=ROOT, env={**os.environ, "APDSPEC_PROGRESS": "0"})
        if p.returncode != 0:
            print(f"{spec} {' '.join(sets)}: failed: {p.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        rows.append({"spec": spec, "sets": sets, **json.loads(p.stdout.strip().splitlines()[-1])})
        print(f"{spec} {' '.join(sets)}: done", flush=True)
    if "--quick" not in sys.argv:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if table(rows) else 0


if __name__ == "__main__":
    sys.exit(main())

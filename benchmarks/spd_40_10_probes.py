"""SPD on TMS 40-10: the settings probed before choosing specs/spd_tms_40_10_laptop.apd, re-measured
from the runs' saved decompositions (nothing is trained here).

    PYTHONPATH=. python benchmarks/spd_40_10_probes.py RUN_DIR [RUN_DIR ...] [--out benchmarks/SPD_40_10_PROBES.md]

Per run: C, batch, steps, Adam lr and, per replicate, MMCS, ML2R and matched_rows (columns of W
whose best subcomponent has cosine >= 0.99), with the decomposition's wall time from summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from runtime.analysis.core import analysis_for
from runtime.analysis.metrics import COMPUTED
from runtime.store.rundir import load_run


def row(run_dir: str) -> dict:
    r = load_run(run_dir)
    dc = r.experiment.decompose
    an = analysis_for(r)
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    parts = os.path.normpath(run_dir).split(os.sep)
    label = "/".join(parts[-2:]) if parts[-1].startswith("seed=") else parts[-1]  # a sweep point: sweep/point
    # the run's own metric definitions (analysis/metrics.py), recomputed for runs older than matched_rows
    return {"run": label, "C": dc.components, "batch": dc.batch, "steps": dc.steps, "lr": dc.optimizer.lr,
            **{k: COMPUTED[k](an) for k in ("mmcs", "ml2r", "matched_rows")}, "F": an.arch.features,
            "minutes": summary.get("timings", {}).get("decompose_s", float("nan")) / 60}


def table(rows: list[dict]) -> str:
    out = ["| run | C | batch | steps | Adam lr | MMCS | ML2R | columns matched (cos >= 0.99) | decomposition min |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda a, d: ", ".join(f"{v:.{d}f}" for v in a)  # noqa: E731
        matched = ", ".join(f"{int(v)}/{r['F']}" for v in r["matched_rows"])
        out.append(f"| {r['run']} | {r['C']} | {r['batch']} | {r['steps']:,} | {r['lr']:g} | {f(r['mmcs'], 4)} | "
                   f"{f(r['ml2r'], 3)} | {matched} | {r['minutes']:.1f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    text = table([row(d) for d in a.runs])
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""SPD on TMS 40-10: the settings probed before choosing specs/spd_tms_40_10_laptop.apd, re-measured
from the runs' saved decompositions (nothing is trained here).

    PYTHONPATH=. python benchmarks/spd_40_10_probes.py RUN_DIR [RUN_DIR ...] [--out benchmarks/SPD_40_10_PROBES.md]

Per run: C, batch, steps, Adam lr and, per replicate, MMCS, ML2R and matched_rows (columns of W
whose best subcomponent has cosine >= 0.99), with the decomposition's wall time from summary.json.
With --ci, per replicate and decomposed matrix (W, W^T) also the subcomponents causally important
(g > CI_ACTIVE, SpdAnalysis.represents) on some one-hot input and how many are important per one-hot input on average
(the ground truth: F subcomponents, 1 per input, in both matrices; MMCS and ML2R look at W only).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from runtime.analysis.core import analysis_for
from runtime.analysis.diagnostics import onehot_ci_use
from runtime.analysis.metrics import COMPUTED
from runtime.store.rundir import load_run


def row(run_dir: str, ci: bool = False) -> dict:
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
            "minutes": summary.get("timings", {}).get("decompose_s", float("nan")) / 60,
            **({"onehot": onehot_ci_use(an.represents())} if ci else {})}


def table(rows: list[dict]) -> str:
    ci = all("onehot" in r for r in rows)
    head = ["run", "C", "batch", "steps", "Adam lr", "MMCS", "ML2R", "columns matched (cos >= 0.99)"]
    head += ["W: used / per input", "W^T: used / per input"] if ci else []
    out = ["| " + " | ".join(head + ["decomposition min"]) + " |", "|" + "---|" * (len(head) + 1)]
    for r in rows:
        f = lambda a, d: ", ".join(f"{v:.{d}f}" for v in a)  # noqa: E731
        matched = ", ".join(f"{int(v)}/{r['F']}" for v in r["matched_rows"])
        use = [", ".join(f"{n} / {k:.2f}" for n, k in zip(*r["onehot"][m])) for m in ("W", "W.T")] if ci else []
        out.append(f"| {r['run']} | {r['C']} | {r['batch']} | {r['steps']:,} | {r['lr']:g} | {f(r['mmcs'], 4)} | "
                   f"{f(r['ml2r'], 3)} | {matched} | " + "".join(u + " | " for u in use) + f"{r['minutes']:.1f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out")
    ap.add_argument("--ci", action="store_true", help="also the one-hot causal-importance use of W and W^T")
    a = ap.parse_args(argv)
    text = table([row(d, a.ci) for d in a.runs])
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One table comparing decomposition methods (APD, SPD) over finished runs and sweeps.

    apdspec compare runs/apd_tms_5_2_seeds runs/spd_tms_5_2_seeds ... [--out table.md]
    (or python -m runtime.pipeline.compare)

Every argument is a run directory (summary.json + spec.json) or a sweep directory (sweep.json: every
finished point). Runs are grouped by target (kind and sizes), method and variant (the experiment's
name, and the inits per replicate of restarts or `apdspec pick`); per group the table gives
the runs and replicates, the share of replicates that reach each bar (TMS: MMCS >= 0.99, and MMCS >=
0.99 with ML2R >= 0.97; residual MLP: dedicated features >= 95 of 100 scaled to F), the metric means
and the wall time per run. Nothing is re-run: the numbers are the runs' own summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..spec import KINDS, target_from_dict
from ..spec.target_file import read_target_meta
from ..store.rundir import write_text

MMCS_BAR, ML2R_BAR, DEDICATED_SHARE = 0.99, 0.97, 0.95


class CompareError(ValueError):
    """A path holds no finished run (a user mistake: the message names it)."""


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def runs_in(path: str) -> list[dict]:
    """[{spec, summary}] of the finished runs under `path` (a run or a sweep directory)."""
    sweep = _read(os.path.join(path, "sweep.json"))
    dirs = [os.path.join(path, p["label"]) for p in sweep.get("points", [])] if sweep else [path]
    out = []
    for d in dirs:
        summary, spec = _read(os.path.join(d, "summary.json")), _read(os.path.join(d, "spec.json"))
        if summary and spec and summary.get("status") in ("ok", "expectations_failed"):
            out.append({"dir": d, "spec": spec, "summary": summary})
    return out


def target_label(spec: dict, run_dir: str | None = None) -> str:
    """"TMS 40-10", "residual MLP, 1 layer, 100 features", ...; a target loaded from a file is
    labelled by the architecture its run saved (run_dir/target.npz), so it groups with trained ones."""
    t = spec.get("target", {})
    kind = t.get("kind")
    if kind == "file" and run_dir is not None:
        try:
            return target_label({"target": read_target_meta(os.path.join(run_dir, "target.npz"))["target"]})
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no readable target file: the file's name below
    if kind == "file":
        return f"target file {os.path.basename(os.path.dirname(t.get('path', '')))}"
    try:
        arch = target_from_dict(t)
    except (KeyError, TypeError, ValueError):
        return str(kind)
    return KINDS[arch.kind].label(arch)


def variant(run: dict) -> str:
    """The experiment's name and, for restarts or `apdspec pick`, the inits per replicate: runs of
    different configurations (a spec and its `use` variants) or selections get rows of their own."""
    name = run["spec"].get("name") or "experiment"
    inits = (run["summary"].get("restarts") or {}).get("restarts") or 1
    return f"{name}, best of {inits} inits" if inits > 1 else name


def group(runs: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Runs by (target, method, variant)."""
    out: dict[tuple[str, str, str], list[dict]] = {}
    for r in runs:
        key = (target_label(r["spec"], r["dir"]), r["spec"].get("decompose", {}).get("method", "apd"), variant(r))
        out.setdefault(key, []).append(r)
    return out


def _per_replicate(runs: list[dict], name: str) -> list[float]:
    vals: list[float] = []
    for r in runs:
        vals += [float(v) for v in (r["summary"].get("metrics", {}).get(name) or [])]
    return vals


def row(label: str, method: str, runs: list[dict], variant: str = "") -> dict[str, Any]:
    mmcs, ml2r = _per_replicate(runs, "mmcs"), _per_replicate(runs, "ml2r")
    ded = _per_replicate(runs, "dedicated_features")
    n = max(len(mmcs), len(ded), sum(int(r["summary"].get("replicates", 1)) for r in runs))
    out: dict[str, Any] = {"target": label, "method": method, "variant": variant, "runs": len(runs), "replicates": n,
                           "seeds": sorted({r["spec"].get("seed") for r in runs}),
                           "wall_min": sum(float(r["summary"].get("wall_time_s", 0)) for r in runs) / 60 / max(len(runs), 1)}
    if mmcs:
        both = [a >= MMCS_BAR and b >= ML2R_BAR for a, b in zip(mmcs, ml2r)]
        out.update(mmcs_rate=sum(a >= MMCS_BAR for a in mmcs) / len(mmcs), both_rate=sum(both) / len(both),
                   mmcs_mean=sum(mmcs) / len(mmcs), ml2r_mean=sum(ml2r) / len(ml2r) if ml2r else None)
    if ded:
        F = runs[0]["spec"].get("target", {}).get("features") or 100
        out.update(dedicated_rate=sum(d >= DEDICATED_SHARE * F for d in ded) / len(ded), dedicated_mean=sum(ded) / len(ded))
    return out


def table(rows: list[dict]) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.0f}%"

    def num(v, f="{:.4f}"):
        return "-" if v is None else f.format(v)

    lines = [f"| target | method | runs (seeds) | replicates | MMCS >= {MMCS_BAR} | MMCS >= {MMCS_BAR} and ML2R >= "
             f"{ML2R_BAR} | mean MMCS | mean ML2R | dedicated >= {DEDICATED_SHARE:.0%} of F | mean dedicated | "
             "wall time per run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["target"], r["method"], r.get("variant", ""))):
        seeds = ", ".join(str(s) for s in r["seeds"])
        method = r["method"].upper() + (f" ({r['variant']})" if r.get("variant") else "")
        lines.append(f"| {r['target']} | {method} | {r['runs']} ({seeds}) | {r['replicates']} | "
                     f"{pct(r.get('mmcs_rate'))} | {pct(r.get('both_rate'))} | {num(r.get('mmcs_mean'))} | "
                     f"{num(r.get('ml2r_mean'), '{:.3f}')} | {pct(r.get('dedicated_rate'))} | "
                     f"{num(r.get('dedicated_mean'), '{:.1f}')} | {r['wall_min']:.1f} min |")
    return "\n".join(lines) + "\n"


def compare(paths: list[str]) -> str:
    """The table over every finished run under `paths`; CompareError for a path without one."""
    runs = []
    for p in paths:
        found = runs_in(p)
        if not found:
            raise CompareError(f"{p}: no finished run here (a run directory with summary.json and spec.json, status ok "
                               "or expectations_failed, or a sweep directory with sweep.json and finished points)")
        runs += found
    return table([row(label, method, rs, var) for (label, method, var), rs in group(runs).items()])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compare APD and SPD runs in one table (runtime/pipeline/compare.py)")
    ap.add_argument("dirs", nargs="+", help="run or sweep directories")
    ap.add_argument("--out", help="write the table to this markdown file too")
    a = ap.parse_args(argv)
    try:
        text = compare(a.dirs)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    if a.out:
        write_text(a.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

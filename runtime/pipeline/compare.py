"""One table comparing decomposition methods (APD, SPD, VPD) over finished runs and sweeps.

    apdspec compare runs/apd_tms_5_2_seeds runs/spd_tms_5_2_seeds runs/vpd_tms_5_2_seeds [--out table.md]
    (or python -m runtime.pipeline.compare)

Every argument is a run directory (summary.json + spec.json) or a sweep directory (sweep.json: every
finished point); a run met twice (a sweep and one of its points) counts once. Runs are grouped by
target (kind and sizes), method and *setting*: everything the spec sets except its seeds, so the
seeds of one configuration pool and sweep points with different settings never do (the row names
the experiment and what its points set; restarts or `apdspec pick` are part of the setting). Per
group the table gives the runs and replicates, the share of replicates that meet the method's own
paper's bar (MethodSpec.bars: APD MMCS >= 0.99 and ML2R >= 0.89; SPD and VPD MMCS >= 0.99, ML2R >=
0.97 and identity_ci_error == 0; each where the run reports the metric) and the kind's
(KindSpec.bars: residual MLP dedicated features >= 95 % of F), the metric means, the evaluation
adversary's reconstruction beside the clean one, and the wall time per run. Nothing is re-run: the
numbers are the runs' own summary.json.
"""
from __future__ import annotations

import argparse
import json
import operator
import os
import sys
from typing import Any

from ..spec import KINDS, METHODS, target_from_dict
from ..spec.serial import from_dict, to_json
from ..spec.target_file import read_target_meta
from ..store.rundir import write_text

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
SEED_PATHS = (("seed",), ("decompose", "seed"), ("train", "seed"))  # what pools: runs differing only in these
MEANS = ("mmcs", "ml2r", "identity_ci_error", "dedicated_features", "clean_recon", "adv_recon")


class CompareError(ValueError):
    """A path holds no finished run (a user mistake: the message names it)."""


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def runs_in(path: str) -> list[dict]:
    """[{dir, spec, summary, point}] of the finished runs under `path` (a run or a sweep directory);
    `point`: the sweep point's values (runtime path -> value), {} for a plain run."""
    sweep = _read(os.path.join(path, "sweep.json"))
    points = [(os.path.join(path, p["label"]), p.get("values") or {}) for p in sweep.get("points", [])] if sweep \
        else [(path, {})]
    out = []
    for d, values in points:
        summary, spec = _read(os.path.join(d, "summary.json")), _read(os.path.join(d, "spec.json"))
        if summary and spec and summary.get("status") in ("ok", "expectations_failed"):
            out.append({"dir": d, "spec": spec, "summary": summary, "point": values})
    return out


def target_label(spec: dict, run_dir: str | None = None) -> str:
    """"TMS 40-10", "residual MLP, 1 layer, 100 features", ...; a target loaded from a file is
    labelled by the architecture its run saved (run_dir/target.npz), so it groups with trained ones."""
    arch = _arch(spec, run_dir)
    if arch is not None:
        return KINDS[arch.kind].label(arch)
    t = spec.get("target", {})
    if t.get("kind") == "file":
        return f"target file {os.path.basename(os.path.dirname(t.get('path', '')))}"
    return str(t.get("kind"))


def _arch(spec: dict, run_dir: str | None) -> Any:
    t = spec.get("target", {})
    try:
        if t.get("kind") == "file":
            if run_dir is None:
                return None
            t = read_target_meta(os.path.join(run_dir, "target.npz"))["target"]
        return target_from_dict(t)
    except (OSError, KeyError, TypeError, ValueError):
        return None


def setting_key(spec: dict) -> str:
    """The spec without its seeds, as canonical JSON: runs of one configuration share it. The spec
    is read and written back first, so a field added since a run was written counts at its default."""
    try:
        s = json.loads(to_json(from_dict(spec)))
    except (KeyError, TypeError, ValueError, AttributeError):  # a spec.json this version cannot read: as saved
        s = json.loads(json.dumps(spec))
    for path in SEED_PATHS:
        node = s
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return json.dumps(s, sort_keys=True)


def setting_label(run: dict) -> str:
    """The experiment's name, what its sweep point sets besides seeds, and restarts or picks."""
    name = run["spec"].get("name") or "experiment"
    seeds = {".".join(p) for p in SEED_PATHS}
    sets = ", ".join(f"{k}={v}" for k, v in run["point"].items() if k not in seeds)
    inits = (run["summary"].get("restarts") or {}).get("restarts") or 1
    return name + (f" ({sets})" if sets else "") + (f", best of {inits} inits" if inits > 1 else "")


def group(runs: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Runs by (target, method, setting); a run directory met twice counts once."""
    out: dict[tuple[str, str, str], list[dict]] = {}
    labels: dict[tuple[str, str, str], str] = {}  # (target, method, setting key) -> its row's label
    seen: set[str] = set()
    for r in runs:
        real = os.path.realpath(r["dir"])
        if real in seen:
            continue
        seen.add(real)
        method = r["spec"].get("decompose", {}).get("method", "apd")
        inits = (r["summary"].get("restarts") or {}).get("restarts") or 1  # `apdspec pick` is in the summary only
        key = (target_label(r["spec"], r["dir"]), method, f"{inits} {setting_key(r['spec'])}")
        if key not in labels:
            label, taken = setting_label(r), {v for k, v in labels.items() if k[:2] == key[:2]}
            n = 2
            while label in taken:  # another setting under the same name (e.g. -s overrides): number it
                label, n = f"{setting_label(r)} [setting {n}]", n + 1
            labels[key] = label
        out.setdefault((key[0], method, labels[key]), []).append(r)
    return out


def _per_replicate(runs: list[dict], name: str) -> list[float]:
    vals: list[float] = []
    for r in runs:
        vals += [float(v) for v in (r["summary"].get("metrics", {}).get(name) or [])]
    return vals


def bars_of(run: dict) -> tuple[tuple[str, str, float], ...]:
    """The method's and the kind's bars, as `compare` applies them to `run`."""
    method = METHODS.get(run["spec"].get("decompose", {}).get("method", "apd"))
    arch = _arch(run["spec"], run["dir"])
    return (method.bars if method else ()) + (KINDS[arch.kind].bars(arch) if arch is not None else ())


def successes(run: dict) -> list[bool] | None:
    """Per replicate: every bar whose metric the run reports holds (None: it reports none)."""
    metrics = run["summary"].get("metrics", {})
    used = [(m, op, v) for m, op, v in bars_of(run) if metrics.get(m)]
    if not used:
        return None
    n = min(len(metrics[m]) for m, _, _ in used)
    return [all(_OPS[op](float(metrics[m][i]), v) for m, op, v in used) for i in range(n)]


def bars_text(run: dict) -> str:
    metrics = run["summary"].get("metrics", {})
    return " and ".join(f"{m} {op} {v:g}" for m, op, v in bars_of(run) if metrics.get(m)) or "-"


def row(label: str, method: str, runs: list[dict], setting: str = "") -> dict[str, Any]:
    ok: list[bool] = []
    for r in runs:
        ok += successes(r) or []
    n = sum(int(r["summary"].get("replicates", 1)) for r in runs)
    out: dict[str, Any] = {"target": label, "method": method, "setting": setting, "runs": len(runs), "replicates": n,
                           "seeds": sorted({r["spec"].get("seed") for r in runs}, key=str),
                           "success": sum(ok) / len(ok) if ok else None, "judged": len(ok), "bar": bars_text(runs[0]),
                           "wall_min": _wall_minutes(runs)}
    for name in MEANS:
        vals = _per_replicate(runs, name)
        out[name] = sum(vals) / len(vals) if vals else None
    return out


def _wall_minutes(runs: list[dict]) -> float | None:
    """Mean wall time of the runs that ran in one go: a resumed run's summary times only its last
    segment, so it is left out (None when every run was resumed)."""
    whole = [float(r["summary"].get("wall_time_s", 0)) for r in runs if not r["summary"].get("resumed_from")]
    return sum(whole) / 60 / len(whole) if whole else None


def table(rows: list[dict]) -> str:
    def pct(r):
        return "-" if r["success"] is None else f"{100 * r['success']:.0f}% ({round(r['success'] * r['judged'])}/{r['judged']})"

    def num(v, f="{:.4f}"):
        return "-" if v is None else f.format(v)

    lines = ["| target | method | setting | runs (seeds) | replicates | success | bar | mean MMCS | mean ML2R | "
             "mean identity CI error | mean dedicated | clean / adversarial recon | wall time per run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["target"], r["method"], r["setting"])):
        seeds = ", ".join(str(s) for s in r["seeds"])
        recon = "-" if r["adv_recon"] is None else f"{num(r['clean_recon'], '{:.3g}')} / {num(r['adv_recon'], '{:.3g}')}"
        lines.append(f"| {r['target']} | {r['method'].upper()} | {r['setting']} | {r['runs']} ({seeds}) | "
                     f"{r['replicates']} | {pct(r)} | {r['bar']} | {num(r['mmcs'])} | {num(r['ml2r'], '{:.3f}')} | "
                     f"{num(r['identity_ci_error'], '{:.2f}')} | {num(r['dedicated_features'], '{:.1f}')} | {recon} | "
                     f"{'- (resumed)' if r['wall_min'] is None else format(r['wall_min'], '.1f') + ' min'} |")
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
    return table([row(label, method, rs, setting) for (label, method, setting), rs in group(runs).items()])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compare APD, SPD and VPD runs in one table (runtime/pipeline/compare.py)")
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

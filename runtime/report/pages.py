"""Pages over several runs, as markdown and as static HTML with the images embedded (the report's
document model, document.py):

    sweep_page(sweep_dir, sweep)   # sweep.html: each metric against each axis, then the points' table
    index_page(root)               # index.md / index.html: one row per run under root, loss curves overlaid

A sweep's own table stays sweep.md (pipeline/sweep.py); its page adds the figure. The index finds
runs under `root` (run directories, and the points of sweep directories), up to MAX_DEPTH levels
down, and links each row to the run's report.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

from ..spec import KINDS, from_dict, target_from_dict
from ..spec.target_file import read_target_meta
from ..store.rundir import write_text
from .document import Block, Section, _p, fmt, to_html, to_markdown
from .plots_runs import plot_loss_curves, plot_sweep, seed_like

MAX_DEPTH = 3  # directory levels below the index's root searched for runs
MAX_SETTINGS = 4  # differing fields named per row


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def _link(text: str, target: str, base: str) -> str:
    """A markdown link to `target` relative to `base` (the page's directory), if it exists."""
    if not os.path.exists(target):
        return text
    return f"[{text}]({os.path.relpath(target, base)})"


def problems_of(summary: dict) -> list[str]:
    """The problems a run's diagnostics found (summary.json "diagnostics")."""
    return [d.get("text", "") for d in summary.get("diagnostics") or () if d.get("severity") == "problem"]


def verdict(summary: dict) -> str:
    """ok | problems | expectations_failed | error | interrupted | unknown (what `apdspec run` ends with)."""
    status = summary.get("status") or "unknown"
    if status == "ok" and summary.get("smoke"):
        return "ok (smoke run)"
    return "problems" if status == "ok" and problems_of(summary) else status


# ------------------------------------------------------------------------------------------
# A sweep's page


def sweep_page(sweep_dir: str, sweep: dict) -> list[str]:
    """Write sweep_dir/plots/sweep.png (every metric against every axis) and sweep_dir/sweep.html
    (that figure, the points' table linked to their reports, the expectations); returns the paths."""
    written = []
    fig = plot_sweep(sweep, os.path.join(sweep_dir, "plots", "sweep.png"))
    if fig is not None:
        written.append(fig)
    pts = sweep["points"]
    paths = list(dict.fromkeys(a["path"] for a in sweep["axes"]))
    counts: dict[str, int] = {}
    for r in pts:
        s = "problems" if r.get("status") == "ok" and r.get("problems") else r.get("status", "pending")
        counts[s] = counts.get(s, 0) + 1
    head = Section("", [_p(f"**Status: {sweep.get('status')}** · {len(pts)} points over "
                           + (", ".join(paths) or "no axes") + " · "
                           + ", ".join(f"{n} {s}" for s, n in counts.items())
                           + (f" · wall time {fmt(sweep['wall_time_s'])} s" if sweep.get("wall_time_s") else ""))])
    sections = [head]
    if fig is not None:
        sections.append(Section("Metrics against the sweep axes", [Block(
            "image", path=fig, text="Each metric against each axis: the mean over the replicates of every point "
                                   "with that value (seed axes pooled) with +-1 std error bars, the min-max band and "
                                   "each replicate as a dot; points that differ on another axis are separate lines; "
                                   "dashed: the expectation's bound.")]))
    metrics = [m for m in sweep.get("table_metrics", []) if any(m in (r.get("metrics") or {}) for r in pts)]
    rows = []
    for r in pts:
        report = os.path.join(sweep_dir, r["label"], "report.html")
        status = "problems" if r.get("status") == "ok" and r.get("problems") else r.get("status", "")
        rows.append([_link(r["label"], report, sweep_dir)] + [_cell(r["values"].get(p)) for p in paths]
                    + [status + (" (reused)" if r.get("resumed") else "")]
                    + [fmt((r.get("metrics") or {}).get(m)) for m in metrics]
                    + [str(len(r.get("problems") or ())), fmt(r.get("wall_time_s"))])
    sections.append(Section("Points", [
        _p("Metrics are means over replicates (summary.json and sweep.json hold every replicate's value); "
           "problems: found by the point's diagnostics (its report lists them)."),
        Block("table", header=["point"] + paths + ["status"] + metrics + ["problems", "wall time (s)"], items=rows)]))
    if sweep.get("expectations"):
        sections.append(Section("Expectations", [Block(
            "table", header=["expectation", "points where it passed"],
            items=[[f"`{e['text']}`", f"{e['passed_points']} of {e['points']}"] for e in sweep["expectations"]])]))
    errors = [r for r in pts if r.get("status") == "error"]
    if errors:
        sections.append(Section("Errors", [Block("list", items=[f"`{r['label']}`: {r.get('error', '')}" for r in errors])]))
    html = os.path.join(sweep_dir, "sweep.html")
    write_text(html, to_html(f"Sweep: {sweep.get('experiment', '')}", sections))
    return written + [html]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_cell(x) for x in v) + "]"
    return "" if v is None else str(v)


# ------------------------------------------------------------------------------------------
# The index of a directory of runs


def find_runs(root: str) -> list[dict]:
    """[{dir, spec, summary, point}] of every run under `root`, in path order: run directories
    (spec.json and summary.json) and the points of sweep directories (sweep.json; `point` is the
    point's label), at most MAX_DEPTH levels down. A run or sweep directory is not searched further."""
    out: list[dict] = []

    def visit(d: str, depth: int) -> None:
        sweep = _read(os.path.join(d, "sweep.json"))
        if sweep is not None:
            for p in sweep.get("points", []):
                pd = os.path.join(d, p.get("label", ""))
                spec, summary = _read(os.path.join(pd, "spec.json")), _read(os.path.join(pd, "summary.json"))
                if spec is not None:
                    out.append({"dir": pd, "spec": spec, "summary": summary or {"status": p.get("status")},
                                "point": p.get("label")})
            return
        spec = _read(os.path.join(d, "spec.json"))
        if spec is not None and not spec.get("sweep"):
            out.append({"dir": d, "spec": spec, "summary": _read(os.path.join(d, "summary.json")) or {}, "point": None})
            return
        if depth >= MAX_DEPTH:
            return
        try:
            names = sorted(os.listdir(d))
        except OSError:
            return
        for name in names:
            sub = os.path.join(d, name)
            if os.path.isdir(sub) and not os.path.islink(sub) and name not in ("plots", "checkpoints", "replicates"):
                visit(sub, depth + 1)

    visit(root, 0)
    return out


def target_label(spec: dict, run_dir: str) -> str:
    """"TMS 5-2", "residual MLP, 1 layer, 100 features", ...: the kind's label of the run's target
    (a target file's by the architecture the run saved)."""
    t = spec.get("target") or {}
    try:
        if t.get("kind") == "file":
            t = read_target_meta(os.path.join(run_dir, "target.npz"))["target"]
        arch = target_from_dict(t)
        return KINDS[arch.kind].label(arch)
    except (OSError, ValueError, KeyError, TypeError):
        return str(t.get("kind", "?"))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: json.dumps(d, sort_keys=True)}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def settings(runs: list[dict]) -> list[str]:
    """Per run: the fields of its spec that every run has and that differ between the runs (at most
    MAX_SETTINGS, seeds and steps first), as `path=value`. Fields only some runs have belong to one
    method or kind (the method and target columns say which); a stream's seed that follows `seed`
    in every run is `seed` again."""
    flats = [_flat(r["spec"]) for r in runs]
    keys = sorted(set.intersection(*(set(f) for f in flats)))
    differ = [k for k in keys if len({f[k] for f in flats}) > 1 and k != "name" and not k.startswith("sweep")]
    if "seed" in differ:
        differ = [k for k in differ if k == "seed" or not seed_like(k) or any(f[k] != f["seed"] for f in flats)]
    rank = lambda k: (not seed_like(k), "steps" not in k, k.count("."), k)  # noqa: E731
    differ.sort(key=rank)
    out = []
    for f in flats:
        shown = [f"{k}={_value(f.get(k))}" for k in differ[:MAX_SETTINGS]]
        out.append(", ".join(shown) + (f", +{len(differ) - MAX_SETTINGS} more" if len(differ) > MAX_SETTINGS else ""))
    return out


def _value(v: Any) -> str:
    if v is None:
        return "-"
    try:
        x = json.loads(v)
    except (TypeError, ValueError):
        return str(v)
    if isinstance(x, float) and math.isfinite(x):
        return f"{x:g}"
    return json.dumps(x) if isinstance(x, (dict, list)) else str(x)


def success(summary: dict) -> str:
    """Expectations met and problems found, e.g. "2 of 2 expectations; 1 problem"."""
    exps = summary.get("expectations") or []
    parts = [f"{sum(bool(e.get('passed')) for e in exps)} of {len(exps)} expectations met" if exps else "no expectations"]
    n = len(problems_of(summary))
    if summary.get("status") in ("ok", "expectations_failed"):
        if "diagnostics" not in summary:
            parts.append("not diagnosed (written before runs recorded their diagnostics)")
        else:
            parts.append(f"{n} problem{'s' if n != 1 else ''}" if n else "no problems")
    return "; ".join(parts)


def _history(run_dir: str) -> list[dict]:
    from ..store.files import log_entries

    out = []
    try:
        for phase, e in log_entries(os.path.join(run_dir, "metrics.jsonl")):
            if phase == "decompose":
                out.append(e)
    except (OSError, ValueError):
        pass
    return out


def index_page(root: str) -> list[str]:
    """Write root/index.md and root/index.html (and root/plots/index_losses.png): one row per run
    under `root` (number, run linked to its report, method, target, the settings that differ,
    status, expectations and problems, wall time) and the total loss of every run overlaid.
    ValueError if there is no run under root."""
    runs = find_runs(root)
    if not runs:
        raise ValueError(f"no run directories under {root} (a run has spec.json; a sweep sweep.json)")
    sets = settings(runs)
    rows, curves = [], []
    for n, (r, setting) in enumerate(zip(runs, sets), 1):
        spec, summary = r["spec"], r["summary"]
        try:
            method = from_dict(spec).decompose.method
        except Exception:  # a spec this version cannot read: the row still says what it can
            method = str((spec.get("decompose") or {}).get("method", "?"))
        name = os.path.relpath(r["dir"], root)
        report = os.path.join(r["dir"], "report.html")
        rows.append([str(n), _link(name, report, root), method, target_label(spec, r["dir"]),
                     setting or spec.get("name", ""), verdict(summary), success(summary),
                     fmt(summary.get("wall_time_s")) + (" s" if summary.get("wall_time_s") is not None else "")])
        curves.append((f"#{n}", _history(r["dir"])))
    fig = plot_loss_curves(curves, os.path.join(root, "plots", "index_losses.png"),
                           "total loss of the decomposition, every run (numbered as in the table)")
    title = f"Runs under {os.path.basename(os.path.abspath(root)) or root}"
    sections = [Section("", [_p(f"{len(runs)} runs under `{root}`; "
                                + ", ".join(f"{sum(verdict(r['summary']) == v for r in runs)} {v}"
                                            for v in dict.fromkeys(verdict(r['summary']) for r in runs)) + ".")]),
                Section("Runs", [
                    _p("setting: the spec fields that differ between these runs; status: ok, problems (expectations "
                       "met, but the run's diagnostics found a problem), expectations_failed, error or interrupted."),
                    Block("table", header=["#", "run", "method", "target", "setting", "status", "success", "time"],
                          items=rows)])]
    if fig is not None:
        sections.append(Section("Loss curves", [Block("image", path=fig, text="The total loss of every run's "
                                                                              "decomposition (numbered as in the table).")]))
    md, html = os.path.join(root, "index.md"), os.path.join(root, "index.html")
    write_text(md, to_markdown(title, sections, root))
    write_text(html, to_html(title, sections))
    return ([fig] if fig else []) + [md, html]

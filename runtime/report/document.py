"""The run report: run_dir/report.md and a self-contained run_dir/report.html (plots embedded as
base64 PNG, inline CSS, no external assets), plus the plots in run_dir/plots/.

    paths = render(run_dir)                 # re-render from the saved outputs (store.rundir.load_run)
    paths = render(run_dir, result=result)  # right after a run (reuses its cached analyses)

Both files are generated from one document model (a list of sections of blocks), so they always
carry the same content: status, expectations, metrics next to the paper's values, diagnostics,
figures, the paper's qualitative results, provenance and the resolved spec. A run whose arrays
cannot be loaded still gets a report (without figures), as does one with missing metrics.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..analysis.diagnostics import METHOD_DIAGNOSTICS, diagnose, weight_scale
from ..analysis.expectations import choice_against_expectations, describe
from ..spec.paper import PaperResult, lookup
from ..spec import METRICS, PLOTS, Experiment, architecture, from_dict, kind_spec, method_spec
from ..store.rundir import write_text

# ------------------------------------------------------------------------------------------
# Document model


def _doc(registry: dict, name: str, default: str = "") -> str:
    """The declared description of a metric or plot (`default` for a name nobody declared)."""
    entry = registry.get(name)
    return entry.doc if entry is not None else default


@dataclass
class Block:
    kind: str  # p | list | table | image | code
    text: str = ""
    items: list = field(default_factory=list)  # list items, or table rows
    header: list = field(default_factory=list)
    path: str = ""  # image file


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def _p(text: str) -> Block:
    return Block("p", text)


# ------------------------------------------------------------------------------------------
# Formatting


def fmt(v: Any) -> str:
    """Compact number formatting (integers stay integers)."""
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not np.isfinite(f):
        return str(f)
    if f == int(f) and abs(f) < 1e6:
        return str(int(f))
    return f"{f:.4g}"


def mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return "-"
    if a.size == 1:
        return fmt(a[0])
    fin = a[np.isfinite(a)]
    if fin.size == 0:
        return fmt(a[0])
    return f"{fmt(np.mean(fin))} ± {fmt(np.std(fin))}"


def per_replicate(values: list[float], limit: int = 8) -> str:
    if len(values) <= limit:
        return ", ".join(fmt(v) for v in values)
    a = np.asarray(values, dtype=float)
    return f"{len(values)} values, min {fmt(np.nanmin(a))}, max {fmt(np.nanmax(a))}"


# ------------------------------------------------------------------------------------------
# Building the document


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _experiment(run_dir: str, result: Any) -> Experiment | None:
    if result is not None:
        return result.experiment
    d = _read_json(os.path.join(run_dir, "spec.json"))
    try:
        return from_dict(d) if d else None
    except Exception:
        return None


def _history(run_dir: str, result: Any) -> list[dict]:
    if result is not None:
        return result.decomposition.history
    from ..store.files import log_entries

    out = []
    try:
        for phase, e in log_entries(os.path.join(run_dir, "metrics.jsonl")):
            if phase == "decompose":  # not target training, not every restart
                out.append(e)
    except (OSError, ValueError):  # a missing or truncated log: what was read so far
        pass
    return out


def metrics_section(metrics: dict, paper: PaperResult | None) -> Section:
    sec = Section("Metrics")
    if not metrics:
        sec.blocks.append(_p("No metrics were computed for this run."))
        return sec
    header = ["metric", "meaning", "mean ± std over replicates", "per replicate"]
    if paper is not None:
        header += ["paper", "agrees"]
    rows = []
    for name, vals in metrics.items():
        row = [f"`{name}`", _doc(METRICS, name), mean_std(vals), per_replicate(vals)]
        if paper is not None:
            pv = paper.value(name)
            if pv is None:
                row += ["", ""]
            else:
                ok = pv.agrees(float(np.mean(vals)) if vals else None)
                row += [pv.shown(), {True: "yes", False: "**no**", None: "-"}[ok]]
        rows.append(row)
    if paper is not None:  # paper values for metrics this run lacks
        for pv in paper.values:
            if pv.metric not in metrics:
                rows.append([f"`{pv.metric}`", _doc(METRICS, pv.metric), "not computed", "", pv.shown(), "-"])
    sec.blocks.append(Block("table", header=header, items=rows))
    if paper is not None:
        notes = [f"`{v.metric}`: {v.text}" for v in paper.values if v.text]
        sec.blocks.append(_p(f"Paper values: {paper.title} ({paper.source}). \"agrees\" compares the mean over "
                             "replicates with the paper's value (within the stated tolerance, or the stated bound)."))
        if notes:
            sec.blocks.append(Block("list", items=notes))
    return sec


def expectations_section(expectations: list[dict], exp: Experiment | None = None, status: str = "") -> Section:
    """The expectations' verdicts; those of a run that did not finish (interrupted, failed) are
    listed as not evaluated."""
    sec = Section("Expectations")
    stated = list(exp.report.expect) if exp is not None else []
    if not expectations and stated:
        why = {"interrupted": "the run was interrupted before its metrics were computed",
               "error": "the run failed before its metrics were computed"}.get(status, "summary.json holds no verdict on them")
        sec.blocks.append(_p(f"{len(stated)} expectation{'s' if len(stated) != 1 else ''}, not evaluated: {why}."))
        sec.blocks.append(Block("table", header=["result", "clause"],
                                items=[["not evaluated", f"`{e.text or describe(e)}`"] for e in stated]))
        return sec
    if not expectations:
        sec.blocks.append(_p("The spec states no expectations."))
        return sec
    rows = [["**PASS**" if e.get("passed") else "**FAIL**", f"`{e.get('text', '')}`", fmt(e.get("observed")),
             str(e.get("needed", "")), per_replicate(e.get("values", []))] for e in expectations]
    n_ok = sum(bool(e.get("passed")) for e in expectations)
    sec.blocks.append(_p(f"{n_ok} of {len(expectations)} expectations pass."))
    sec.blocks.append(Block("table", header=["result", "clause", "observed", "needed", "values"], items=rows))
    return sec


def _steps(steps: list[str]) -> str:
    return ("step " if len(steps) == 1 else "steps ") + ", ".join(steps)


def revivals_text(events: list[dict]) -> str:
    """Per replicate: how many dead components took over part of a live one, how many adopted an
    input no component served (revive adopt), at which steps, and how many were left dead at the
    last revival step."""
    if not events:
        return "none (no component was dead at a revival step)"
    per: dict[int, list[dict]] = {}
    for e in events:
        per.setdefault(e["replicate"], []).append(e)
    parts = []
    for r, evs in sorted(per.items()):
        steps = [str(e["step"]) for e in evs if e["dead"]]
        text = f"replicate {r}: {sum(len(e['dead']) for e in evs)} revived"
        text += f" ({_steps(steps)})" if steps else ""
        adopted = [str(e["step"]) for e in evs if e.get("adopted")]
        if adopted:
            text += (f", {sum(len(e.get('adopted', ())) for e in evs)} adopted an unserved input"
                     f" ({_steps(adopted)})")
        still = evs[-1].get("still_dead", [])
        parts.append(text + (f", {len(still)} left dead at step {evs[-1]['step']}" if still else ""))
    return "; ".join(parts)


def picked_section(sel: dict) -> Section | None:
    """`apdspec pick`: per replicate, every source run's held-out score and its values of the
    metrics the spec's expectations name, the kept run marked (None for other runs)."""
    per_run = sel.get("per_run")
    if not per_run:
        return None
    seeds = sel.get("decompose_seeds") or [None] * len(per_run)
    header = ["replicate"] + [f"run {n} (decompose.seed {s})" for n, s in enumerate(seeds)]
    rows = []
    for i, (scores, c) in enumerate(zip(sel["scores"], sel["chosen"])):
        row = [str(i)]
        for n, run in enumerate(per_run):
            cell = [f"score {fmt(scores[n])}"] + [f"{k} {fmt(v[i])}" for k, v in run["metrics"].items()]
            if run.get("meets") is not None:
                cell.append("meets the expectations" if run["meets"][i] else "misses them")
            text = ", ".join(cell)
            row.append(f"**kept: {text}**" if n == c else text)
        rows.append(row)
    blocks = [_p(f"The run kept per replicate has the lowest {sel.get('criterion')}; no ground truth enters the choice. "
                 "The metrics the spec's expectations name are shown to judge that choice; they did not enter it."),
              Block("table", header=header, items=rows)]
    judged = choice_against_expectations(sel)
    if judged:
        blocks.append(_p(judged + "."))
    return Section("Runs picked from", blocks)


def provenance_section(run_dir: str, summary: dict, exp: Experiment | None) -> Section:
    rows = []
    for rec in summary.get("spec_files", []) or []:
        rows.append(["spec file", f"`{rec.get('path')}`", f"sha256 `{rec.get('sha256')}`"])
    data = summary.get("data_file")
    if data:
        shapes = f"inputs {tuple(data['inputs']['shape'])}" + (
            f", labels {tuple(data['labels']['shape'])}" if data.get("labels") else ", no labels")
        rows.append(["data file", f"`{data.get('path')}` ({shapes})", f"sha256 `{data.get('sha256')}`"])
    sj = _sha256(os.path.join(run_dir, "spec.json"))
    if sj:
        rows.append(["resolved spec", "`spec.json`", f"sha256 `{sj}`"])
    seeds = summary.get("seeds", {})
    for k, v in seeds.items():
        rows.append(["seed", k, fmt(v.get("seed") if isinstance(v, dict) else v)])
    if exp is not None:
        rows.append(["replicates / dtype", fmt(exp.replicates), exp.dtype])
    sel = summary.get("restarts")
    if sel:
        scores = "; ".join("[" + ", ".join(fmt(v) for v in row) + "]" for row in sel.get("scores", []))
        kept = ", ".join(str(c) for c in sel.get("chosen", []))
        what = f"{sel.get('restarts')} inits per replicate; kept restart per replicate: {kept}"
        if sel.get("runs"):  # pipeline/pick.py: the inits are separate runs
            runs = ", ".join(f"{n}: `{d}` (decompose.seed {s})"
                             for n, (d, s) in enumerate(zip(sel["runs"], sel.get("decompose_seeds", []))))
            what = f"{sel.get('restarts')} runs picked from ({runs}); kept run per replicate: {kept}"
        rows.append(["restarts", what, f"lowest {sel.get('criterion')}: {scores}"])
    if "revivals" in summary:
        rows.append(["revived components", revivals_text(summary["revivals"]), "decompose.revive (not part of APD)"])
    ver = summary.get("versions", {})
    if ver:
        rows.append(["packages", ", ".join(f"{k} {v}" for k, v in ver.items() if k != "platform"), ""])
        rows.append(["machine", ver.get("platform", "-"), f"{os.cpu_count()} CPUs on the rendering machine"])
    if "started" in summary:
        rows.append(["started", summary["started"], ""])
    if "wall_time_s" in summary:
        rows.append(["wall time", f"{fmt(summary['wall_time_s'])} s", ""])
    for k, v in (summary.get("timings") or {}).items():
        rows.append(["timing", k, fmt(v)])
    if "steps_per_s" in summary:
        rows.append(["decomposition speed", f"{fmt(summary['steps_per_s'])} steps/s", ""])
    try:
        import matplotlib

        mpl = matplotlib.__version__
    except ImportError:
        mpl = "not installed"
    rows.append(["report", f"rendered {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", f"matplotlib {mpl}"])
    return Section("Provenance", [Block("table", header=["what", "value", "detail"], items=rows)])


SPEC_FILES = (
    ("spec.original.apd", "apd", "The spec file as written (`spec.original.apd`, comments kept; its `use` base and "
                                 "any `-s` overrides are not applied here)."),
    ("spec.apd", "apd", "The resolved spec the run used (`spec.apd`): every `use`, `-s` override and default applied, "
                        "in canonical form; `spec.json` holds the same as JSON."),
)


def spec_section(run_dir: str) -> Section:
    blocks = []
    for name, lang, note in SPEC_FILES:
        p = os.path.join(run_dir, name)
        if os.path.exists(p):
            with open(p) as f:
                blocks += [_p(note), Block("code", text=f.read(), header=[lang])]
    if not blocks and os.path.exists(os.path.join(run_dir, "spec.json")):
        with open(os.path.join(run_dir, "spec.json")) as f:
            blocks = [_p("The resolved spec (`spec.json`), every default filled in."),
                      Block("code", text=f.read(), header=["json"])]
    return Section("Spec", blocks or [_p("No spec file in the run directory.")])


def run_diagnostics(summary: dict, result: Any, exp: Experiment | None, history: list[dict], metrics: dict,
                    expectations: list[dict], status: str) -> list[tuple[str, str]]:
    """The diagnostics (severity, text) of a run (analysis.diagnostics.diagnose), with what they need
    from its analysis when `result` is there (the analysis' and plots' errors among them)."""
    if exp is None:
        return []
    errors: dict = {}
    ws = op = prepared = an = None
    if result is not None:
        from ..analysis.core import analysis_for

        an = analysis_for(result)
        errors = dict(an.errors)
        try:
            ws = weight_scale(result.arch, result.target)
            s = an.sampled()
            op = float(np.mean(s["zero"])) if "zero" in s else None
        except Exception as e:  # diagnostics degrade, the report still renders
            errors["output scale"] = f"{type(e).__name__}: {e}"
    own = METHOD_DIAGNOSTICS.get(exp.decompose.method)
    if an is not None and own is not None:
        try:
            prepared = own.prepare(an, metrics)
        except Exception as e:  # diagnostics degrade, the report still renders
            errors[own.label] = f"{type(e).__name__}: {e}"
    arch = result.arch if result is not None else exp.target
    return diagnose(exp, arch, metrics, history, status=status, error=summary.get("error"), expectations=expectations,
                    weight_scale=ws, output_power=op, errors=errors, prepared=prepared)


def diagnostics_of(run_dir: str, summary: dict, result: Any) -> list[tuple[str, str]]:
    """The diagnostics of the finished run `result` written to `run_dir` (what its report lists)."""
    return run_diagnostics(summary, result, result.experiment, _history(run_dir, result), result.metrics or {},
                           result.expectations or [], summary.get("status") or result.status)


def _truth_note(result: Any, exp: Experiment | None) -> str | None:
    """What the target's kind says of its ground truth (e.g. that a network states none)."""
    try:
        arch = result.arch if result is not None else architecture(exp) if exp is not None else None
        return kind_spec(arch.kind).truth_note(arch) if arch is not None else None
    except Exception:  # an unreadable target file: the report says so elsewhere
        return None


def build_document(run_dir: str, summary: dict, result: Any, exp: Experiment | None, plot_paths: dict,
                   plot_errors: dict, load_error: str | None) -> tuple[str, list[Section]]:
    """(title, sections) of the report."""
    name = summary.get("experiment") or (exp.name if exp else os.path.basename(os.path.abspath(run_dir)))
    status = summary.get("status") or (getattr(result, "status", None)) or "unknown"
    metrics = (result.metrics if result is not None and result.metrics else summary.get("metrics")) or {}
    expectations = (result.expectations if result is not None and result.expectations else summary.get("expectations")) or []
    paper = lookup(exp.report.paper) if exp is not None else None
    history = _history(run_dir, result)
    diags = run_diagnostics(summary, result, exp, history, metrics, expectations, status)
    problems = sum(sev == "problem" for sev, _ in diags)

    head = Section("")
    line = f"**Status: {status}**"
    if problems:
        line += f" · **{problems} problem{'s' if problems != 1 else ''} found** (Diagnostics below)"
    if exp is not None:
        kind = result.arch.kind if result is not None else getattr(exp.target, "kind", "?")
        line += f" · target `{kind}` · {exp.replicates} replicate(s) · " \
                f"{method_spec(exp.decompose.method).components_text(exp.decompose)} · {exp.decompose.steps} steps"
    head.blocks.append(_p(line))
    if exp is not None and exp.report.smoke:
        head.blocks.append(_p("**A smoke run**: it checks that everything runs end to end; its numbers are not a result "
                              "(the problems below do not fail it)."))
    note = _truth_note(result, exp)
    if note:
        head.blocks.append(_p(note))
    if paper is not None:
        head.blocks.append(_p(f"Reproduces: {paper.title} ({paper.source})."))
    if summary.get("error"):
        head.blocks.append(_p(f"Error: `{summary['error']}`"))
    if status == "interrupted":
        where = "target training" if summary.get("phase") == "target" else "the decomposition"
        saved = ("the trained target is not saved yet" if summary.get("phase") == "target"
                 else "a full-state checkpoint is in `checkpoints/`")
        head.blocks.append(_p(f"Interrupted by signal {summary.get('signal')} before step {summary.get('next_step')} "
                              f"of {where}; {saved}. Continue it (bit-identical to an uninterrupted run) with "
                              f"`{summary.get('resume', 'apdspec run --resume RUN_DIR')}`."))
    elif load_error:
        head.blocks.append(_p(f"The run's arrays could not be loaded, so this report has no figures: `{load_error}`"))

    dsec = Section("Diagnostics")
    if diags:
        dsec.blocks.append(Block("list", items=[f"**{sev}**: {text}" for sev, text in diags]))
    else:
        dsec.blocks.append(_p("No known failure mode detected (dead or shared components, shrinkage, unconverged "
                              "faithfulness, poor reconstruction, unspecialised components)."))

    sections = [head, expectations_section(expectations, exp, status), metrics_section(metrics, paper), dsec]
    picked = picked_section(summary.get("restarts") or {})
    if picked is not None:
        sections.append(picked)
    if "losses" in plot_paths:
        sections.append(Section("Training curves", [Block("image", text=_doc(PLOTS, "losses"), path=plot_paths["losses"])]))
    figs = Section("Figures")
    for pname, path in plot_paths.items():
        if pname != "losses":
            figs.blocks.append(Block("image", text=f"`{pname}`: {_doc(PLOTS, pname, pname)}", path=path))
    for pname, msg in plot_errors.items():
        figs.blocks.append(_p(f"Plot `{pname}` was not drawn: {msg}"))
    if figs.blocks:
        sections.append(figs)
    if paper is not None and (paper.claims or paper.setup_notes):
        ps = Section("The paper's results for this experiment")
        if paper.claims:
            ps.blocks.append(_p("Qualitative results to compare with the figures above:"))
            ps.blocks.append(Block("list", items=list(paper.claims)))
        if paper.setup_notes:
            ps.blocks.append(_p("Setup notes:"))
            ps.blocks.append(Block("list", items=list(paper.setup_notes)))
        sections.append(ps)
    sections += [provenance_section(run_dir, summary, exp), spec_section(run_dir)]
    return name, sections


# ------------------------------------------------------------------------------------------
# Rendering


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, sections: list[Section], run_dir: str) -> str:
    out = [f"# {title}", ""]
    for sec in sections:
        if sec.title:
            out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if b.kind == "p":
                out += [b.text, ""]
            elif b.kind == "list":
                out += [f"- {it}" for it in b.items] + [""]
            elif b.kind == "table":
                out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
                out.append("|" + "---|" * len(b.header))
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.items]
                out.append("")
            elif b.kind == "image":
                rel = os.path.relpath(b.path, run_dir)
                out += [f"![{b.text}]({rel})", "", f"*{b.text}*", ""]
            elif b.kind == "code":
                fence = "````" if "```" in b.text else "```"
                out += [fence + (b.header[0] if b.header else ""), b.text.rstrip("\n"), fence, ""]
    return "\n".join(out)


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #cf222e; font-weight: bold; }
"""


def _inline(text: str) -> str:
    """Escape, then the markdown inline forms the document uses: `code`, **bold** and [text](link)."""
    import re

    s = html.escape(str(text))
    s = re.sub(r"`([^`]*)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]*)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', s)  # [text](relative link)
    s = s.replace("<strong>PASS</strong>", '<span class="pass">PASS</span>')
    return s.replace("<strong>FAIL</strong>", '<span class="fail">FAIL</span>')


def _data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def to_html(title: str, sections: list[Section]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        if sec.title:
            out.append(f"<h2>{html.escape(sec.title)}</h2>")
        for b in sec.blocks:
            if b.kind == "p":
                out.append(f"<p>{_inline(b.text)}</p>")
            elif b.kind == "list":
                out.append("<ul>" + "".join(f"<li>{_inline(it)}</li>" for it in b.items) + "</ul>")
            elif b.kind == "table":
                out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in b.header) + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.items]
                out.append("</tbody></table>")
            elif b.kind == "image":
                out.append(f'<figure><img alt="{html.escape(b.text.replace("`", ""))}" src="{_data_uri(b.path)}">'
                           f"<figcaption>{_inline(b.text)}</figcaption></figure>")
            elif b.kind == "code":
                out.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
    out.append("</body></html>")
    return "\n".join(out)


def render(run_dir: str, result: Any = None) -> list[str]:
    """Write run_dir/plots/*.png, report.md and report.html; returns every path written.

    With `result` None the run is rebuilt from disk (`store.rundir.load_run`); if that fails, the
    report is written from summary.json / spec.json alone, without figures."""
    summary = _read_json(os.path.join(run_dir, "summary.json"))
    load_error = None
    if result is None and summary.get("status") != "interrupted":  # an interrupted run has no arrays yet
        try:
            from ..store.rundir import load_run

            result = load_run(run_dir)
        except Exception as e:
            load_error = f"{type(e).__name__}: {e}"
    exp = _experiment(run_dir, result)
    plot_paths, plot_errors = {}, {}
    if result is not None:
        from ..store.files import own_subdir
        from .plots import make_plots

        plot_paths, plot_errors = make_plots(result, own_subdir(run_dir, "plots"))  # never a link out of run_dir
    title, sections = build_document(run_dir, summary, result, exp, plot_paths, plot_errors, load_error)
    md_path, html_path = os.path.join(run_dir, "report.md"), os.path.join(run_dir, "report.html")
    write_text(md_path, to_markdown(title, sections, run_dir))
    write_text(html_path, to_html(title, sections))
    return list(plot_paths.values()) + [md_path, html_path]

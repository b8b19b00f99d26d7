"""Report rendering (placeholder until the analysis module lands): writes report.md."""
from __future__ import annotations

import json
import os


def render(run_dir: str, result=None) -> list[str]:
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    lines = [f"# {summary['experiment']}", "", f"status: {summary['status']}", "", "## Metrics", ""]
    for k, v in summary.get("metrics", {}).items():
        lines.append(f"- {k}: {v}")
    lines += ["", "## Expectations", ""]
    for e in summary.get("expectations", []):
        lines.append(f"- {'PASS' if e['passed'] else 'FAIL'} `{e['text']}` ({e['observed']}; {e['needed']})")
    path = os.path.join(run_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return [path]

"""The key tables of docs/language.md, generated from the schema and the runtime's defaults.

    python -m apdspec.reference docs/language.md    # rewrite the tables between the markers

A test checks that the document's tables equal what this module generates, so the reference
cannot drift from the code.
"""
from __future__ import annotations

import re
import sys
from typing import Any

from runtime import spec as S

from .fmt import render_value
from .schema import (ATTRIBUTION, CAUSAL_IMPORTANCE, DATA, DECOMPOSE, EXPERIMENT, FAITHFULNESS_WARMUP, LOSSES, REPORT,
                     REVIVE, TARGETS, TOPK, TRAIN, Leaf, Obj, optimizer, schedule)
from .unparse import _as_call, value_node
from .values import Bool, Enum, Float, Groups, Int, Key, Kind, Names, Optional, Range, Str

# (marker, language path shown in the title, schema, default instance)
TABLES: list[tuple[str, str, Obj, Any]] = [
    ("experiment", "experiment NAME { ... }", EXPERIMENT, S.Experiment()),
    ("tms", "target tms { ... }", TARGETS["tms"], S.TmsTarget()),
    ("resid_mlp", "target resid_mlp { ... }", TARGETS["resid_mlp"], S.ResidMlpTarget()),
    ("gated", "target gated { ... }", TARGETS["gated"], S.GatedTarget()),
    ("train", "target KIND { train { ... } }", TRAIN, S.Experiment().train),
    ("data", "data { ... }", DATA, S.Data()),
    ("decompose", "decompose { ... }", DECOMPOSE, S.Decompose()),
    ("loss", "decompose { loss { ... } }", LOSSES, S.Losses()),
    ("topk", "topk = batch(...) | sample(...) | exact | none", TOPK, S.TopK()),
    ("attribution", "attribution = gradient(...) | activation | ablation", ATTRIBUTION, S.Attribution()),
    ("optimizer", "optimizer = adam(...) | adamw(...)", optimizer(""), S.Optimizer()),
    ("schedule", "schedule = constant(...) | linear(...) | cosine(...) | exponential(...)", schedule(""), S.Schedule()),
    ("revive", "revive = split(...) | none", REVIVE, S.Revive()),
    ("causal_importance", "causal_importance = mlp(...)", CAUSAL_IMPORTANCE, S.CausalImportance()),
    ("faithfulness_warmup", "faithfulness_warmup = adamw(...) | none", FAITHFULNESS_WARMUP, S.FaithfulnessWarmup()),
    ("report", "report { ... }", REPORT, S.Report()),
]


def type_name(kind: Kind) -> str:
    if isinstance(kind, Optional):
        return type_name(kind.inner) + " / `none`"
    if isinstance(kind, Int):
        return "integer"
    if isinstance(kind, Float):
        return "number"
    if isinstance(kind, Bool):
        return "`true` / `false`"
    if isinstance(kind, Enum):
        return " / ".join(f"`{c}`" for c in kind.choices)
    if isinstance(kind, Range):
        return "`uniform(low, high)` or `[low, high]`" if kind.style == "uniform" else "`[low, high]`"
    if isinstance(kind, Groups):
        return "list of index lists"
    if isinstance(kind, Names):
        return f"list of {kind.noun} names / `all`"
    if isinstance(kind, Key):
        return "name"
    if isinstance(kind, Str):
        return "string"
    raise TypeError(kind)


def _call_type(obj: Obj) -> str:
    names = [f"`{n}(...)`" if (f.positional or f.keywords) else f"`{n}`" for n, f in obj.forms.items()]
    return " / ".join(names + (["`none`"] if obj.optional else []))


def _default(node: Leaf | Obj, value: Any, name: str) -> str:
    if isinstance(node, Obj):
        if not node.forms:
            return "(block)"
        call = _as_call(node, value)
        return f"`{render_value(call)}`" if call is not None else "(block)"
    if value is None and isinstance(node.kind, Optional):
        return "`none`"
    return f"`{render_value(value_node(node.kind, value, percent=name == 'warmup'))}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(schema: Obj, default: Any) -> str:
    """The key table of one block; a block whose keys belong to different decomposition methods gets
    a `method` column (apd, spd, or both)."""
    by_method = any(getattr(node, "method", "") for node in schema.fields.values())
    rows = ["| key | type | default | valid | meaning | paper |", "|---|---|---|---|---|---|"]
    if by_method:
        rows = ["| key | method | type | default | valid | meaning | paper |", "|---|---|---|---|---|---|---|"]

    def add(cells: list[str], method: str) -> None:
        if by_method:
            cells.insert(1, method or "both")
        rows.append("| " + " | ".join(cells) + " |")

    for name, node in schema.fields.items():
        value = getattr(default, name, None)  # None for train, which the runtime keeps outside the target
        if isinstance(node, Obj):
            kind = _call_type(node) if node.forms else "block"
            add([f"`{name}`", _cell(kind), _cell(_default(node, value, name)), "", _cell(node.doc), ""], node.method)
            continue
        kind = type_name(node.kind)
        forms = ", ".join(f"`{f}({', '.join(list(form.positional) + [k + ' = ...' for k in form.keywords])})`"
                          for f, form in node.forms.items())
        if forms:
            kind += " / " + forms
        add([f"`{name}`", _cell(kind), _cell(_default(node, value, name)), _cell(node.valid), _cell(node.doc),
             _cell(node.paper)], node.method)
    return "\n".join(rows)


def tables() -> dict[str, str]:
    return {marker: f"**`{title}`**\n\n" + table(schema, default) for marker, title, schema, default in TABLES}


_BLOCK = re.compile(r"(<!-- BEGIN keys (\w+) -->\n)(.*?)(<!-- END keys \2 -->)", re.S)


def update(text: str) -> str:
    """`text` with every marked table replaced by the generated one."""
    generated = tables()

    def repl(m: re.Match) -> str:
        return m.group(1) + generated[m.group(2)] + "\n" + m.group(4)

    return _BLOCK.sub(repl, text)


def markers(text: str) -> list[str]:
    return [m.group(2) for m in _BLOCK.finditer(text)]


if __name__ == "__main__":  # pragma: no cover
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
        new = update(old)
        if new != old:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(new)
            print(f"updated {path}")

"""The key tables of docs/language.md, generated from the schema and the runtime's defaults.

    python -m apdspec.reference docs/language.md    # rewrite the tables between the markers

A test checks that the document's tables equal what this module generates, so the reference
cannot drift from the code.
"""
from __future__ import annotations

import dataclasses
import re
import sys
from .fmt import render_value
from .schema import DATA, DECOMPOSE, EXPERIMENT, LOSSES, REPORT, TARGETS, TRAIN, Leaf, Obj
from .unparse import _as_call, value_node
from .values import Bool, Enum, Float, Groups, Int, Ints, Items, Key, Kind, Names, Optional, Path, PerFeature, Range, Scheduled, Str


def _call_title(name: str, obj: Obj) -> str:
    forms = [f"{n}(...)" if (f.positional or f.keywords) else n for n, f in obj.forms.items()]
    return f"{name} = " + " | ".join(forms + (["none"] if obj.optional else []))


def _tables() -> list[tuple[str, str, Obj | None]]:
    """(marker, language path shown in the title, schema) of every table; "targets" holds one table
    per target kind (so a new kind appears when the document is regenerated)."""
    out: list[tuple[str, str, Obj | None]] = [("experiment", "experiment NAME { ... }", EXPERIMENT),
                                              ("targets", "", None), ("layers", "", None),
                                              ("train", "target KIND { train { ... } }", TRAIN),
                                              ("data", "data { ... }", DATA), ("decompose", "decompose { ... }", DECOMPOSE),
                                              ("loss", "decompose { loss { ... } }", LOSSES)]
    out += [(name, _call_title(name, node), node) for name, node in DECOMPOSE.fields.items()
            if isinstance(node, Obj) and node.forms]
    return out + [("report", "report { ... }", REPORT)]


TABLES = _tables()


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
        return f"list of {kind.noun} names" + (" / `all`" if kind.all_ok else "")
    if isinstance(kind, Items):
        return f"list of {kind.noun}s: " + ", ".join(f"`{n}`" for n in kind.forms)
    if isinstance(kind, Key):
        return "name"
    if isinstance(kind, Path):
        return "path (string)"
    if isinstance(kind, Str):
        return "string"
    if isinstance(kind, Ints):
        return "list of integers"
    if isinstance(kind, Scheduled):
        return type_name(kind.inner) + " or schedule: `linear(a, b)` / `cosine(a, b)` / `knots([t, v], ...)`"
    if isinstance(kind, PerFeature):
        return "number / list of numbers / `zipf(first, exponent = ...)` / `geometric(first, ratio = ...)`"
    raise TypeError(kind)


def _call_type(obj: Obj) -> str:
    names = [f"`{n}(...)`" if (f.positional or f.keywords) else f"`{n}`" for n, f in obj.forms.items()]
    return " / ".join(names + (["`none`"] if obj.optional else []))


def _default(node: Leaf | Obj, name: str) -> str:
    value = node.default
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


def table(schema: Obj) -> str:
    """The key table of one block; a block whose keys belong to different decomposition methods gets
    a `method` column (the methods that read a key, or all)."""
    by_method = any(node.methods for node in schema.fields.values())  # a merged block (decompose, loss)
    rows = ["| key | type | default | valid | meaning | paper |", "|---|---|---|---|---|---|"]
    if by_method:
        rows = ["| key | method | type | default | valid | meaning | paper |", "|---|---|---|---|---|---|---|"]

    def add(cells: list[str], methods: tuple[str, ...]) -> None:
        if by_method:
            cells.insert(1, ", ".join(methods) or "all")
        rows.append("| " + " | ".join(cells) + " |")

    for name, node in schema.fields.items():
        if isinstance(node, Obj):
            kind = ("block / " if node.call_blocks else "") + _call_type(node) if node.forms else "block"
            add([f"`{name}`", _cell(kind), _cell(_default(node, name)), "", _cell(node.doc), ""], node.methods)
            continue
        kind = type_name(node.kind)
        forms = ", ".join(f"`{f}({', '.join(list(form.positional) + [k + ' = ...' for k in form.keywords])})`"
                          for f, form in node.forms.items())
        if forms:
            kind += " / " + forms
        add([f"`{name}`", _cell(kind), _cell(_default(node, name)), _cell(node.valid), _cell(node.doc),
             _cell(node.paper)], node.methods)
    return "\n".join(rows)


def _item_tables() -> str:
    """One table per layer call of the network vocabulary (runtime/spec/layers.py)."""
    from runtime.spec.layers import ITEMS

    from .schema import obj

    out = []
    for cls in ITEMS:
        for name, form in cls.FORMS.items():
            if form.fixed and not (form.positional or form.keywords):
                continue  # the bare activations: listed with their class below
            args = list(form.positional) + [f"{k} = ..." for k in form.keywords if k not in form.positional]
            node = obj(cls, (cls.__doc__ or "").strip())
            fields = {k: v for k, v in node.fields.items() if k not in form.fixed}
            out.append(f"**`{name}({', '.join(args)})`**: {node.doc}\n\n"
                       + table(dataclasses.replace(node, fields=fields)))
        bare = [n for n, f in cls.FORMS.items() if f.fixed and not (f.positional or f.keywords)]
        if bare:
            out.append(f"**{' / '.join(f'`{n}`' for n in bare)}**: {(cls.__doc__ or '').strip()}")
    return "\n\n".join(out)


def tables() -> dict[str, str]:
    out = {marker: f"**`{title}`**\n\n" + table(schema) for marker, title, schema in TABLES if schema is not None}
    out["layers"] = _item_tables()
    parts = []
    for kind, node in TARGETS.items():
        if kind == "file":
            continue
        parts.append(f"**`target {kind} {{ ... }}`**: {node.doc}\n\n" + table(node))
        parts += [f"**`target {kind} {{ {name} {{ ... }} }}`**: {sub.doc}\n\n" + table(sub)
                  for name, sub in node.fields.items() if isinstance(sub, Obj) and sub.rt is None]
    out["targets"] = "\n\n".join(parts)
    return out


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

"""`apdspec explain`: the value of each field and the file:line that set it (or "default")."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from runtime import spec as S

from .state import lang_path
from .checker import ALIASES
from .errors import Diagnostic, SpecError, did_you_mean, safety_net
from .fmt import render_value
from .loader import LoadedSpec
from .unparse import leaf_at, value_node


def _leaves(obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(runtime path, value) of every plain field under a dataclass value."""
    for f in dataclasses.fields(obj):
        if (f.name == "kind" and isinstance(obj, S.Target)) or f.name in ("expect", "sweep"):
            continue
        v = getattr(obj, f.name)
        path = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(v):
            yield from _leaves(v, path)
        else:
            yield path, v


def _default(rt: str, exp: S.Experiment) -> Any:
    """The default of runtime field `rt` (for the experiment's decomposition method)."""
    obj: Any = dataclasses.replace(S.Experiment(), decompose=S.Decompose(method=exp.decompose.method))
    for part in rt.split("."):
        if obj is None or not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


_EXPECT_KEYS = ("report", "report.expect", "expect")


def unknown_key_hint(key: str, paths: list[str]) -> str:
    """The hint `check` gives for an unknown key, for the language path `key` among `paths`
    (every field): each segment is matched in its block, so a typo in a block name is found too."""
    known = {".".join(p.split(".")[:i]) for p in paths for i in range(1, p.count(".") + 2)}
    fixed: list[str] = []
    for seg in key.split("."):
        if ".".join(fixed + [seg]) in known:
            fixed.append(seg)
            continue
        prefix = ".".join(fixed)
        children = sorted({k.split(".")[len(fixed)] for k in known
                           if k.count(".") >= len(fixed) and (not fixed or k.startswith(prefix + "."))})
        near = did_you_mean(seg, children)
        if near is None:
            if seg.lower() in ALIASES:
                return ALIASES[seg.lower()]
            return f"no key '{seg}' in block '{prefix or 'experiment'}'; known here: " + ", ".join(children)
        fixed.append(near)
    return f"did you mean '{'.'.join(fixed)}'?"


def explain(spec: LoadedSpec, key: str | None = None) -> list[str]:
    """One line per field under `key` (a language path such as decompose.optimizer). Raises SpecError (only)."""
    with safety_net(next(iter(spec.sources), "<spec>")):
        return _explain(spec, key)


def _explain(spec: LoadedSpec, key: str | None) -> list[str]:
    """One line per field under `key` (a language path such as decompose.optimizer)."""
    exp = spec.experiment
    kind = exp.target.kind
    rows = [(rt, v) for rt, v in _leaves(exp, "") if rt != "name"]  # only the method's own fields exist
    if key:
        wanted = [r for r in rows if lang_path(r[0]) == key or lang_path(r[0]).startswith(key + ".")]
        if not wanted and key not in _EXPECT_KEYS:
            file = next(iter(spec.sources), "") or (spec.files[0] if spec.files else "<spec>")
            raise SpecError([Diagnostic(f"no field '{key}' in this spec", None, file=file,
                                        hint=unknown_key_hint(key, [lang_path(r) for r, _ in rows]))], spec.sources)
        rows = wanted
    written = spec.state.kind  # a network that resolve() ran as another kind: its fields come from the network
    net = spec.state.values.get("target") if written not in (None, "file", kind) else None
    out = []
    for rt, v in rows:
        leaf = leaf_at(rt, kind)
        if leaf:
            text = render_value(value_node(leaf.kind, v, percent=rt.endswith(".warmup")))
        else:  # an optional object that is off (decompose.topk, decompose.revive): the language's none
            text = "none" if v is None else repr(v)
        span = spec.where(rt)
        if net is not None and rt.startswith("target."):
            origin = (f"the target {written} network of {net.span.file}:{net.span.line}:{net.span.column}, which is "
                      f"a {kind} target")
        elif span is not None:
            origin = f"{span.file}:{span.line}:{span.column}"
        elif v != _default(rt, exp):
            origin = "default, resolved for this target"
        else:
            origin = "default"
        out.append(f"{lang_path(rt)} = {text}  ({origin})")
    if key is None or key in _EXPECT_KEYS:
        for e in exp.report.expect:
            out.append(f"expect {e.text}")
    return out

"""Import a trained target made elsewhere (a state dict saved as .npz) into an apdspec target file.

    from runtime.store.importer import import_file
    imported = import_file("state_dict.npz", "tms", "T.npz")   # -> Imported (arch, params, renames, ...)

Names: every entry of the source is renamed to its apdspec name (`NAMES`, docs/outputs.md): the
original APD implementation's (`linear1.weight`, `b_final`, `layers.N.mlp_in.weight`, ...),
PyTorch `nn.Linear`-style ones, and apdspec's own. An entry no rule names is an error (drop it with
`ignore`).

Layout: apdspec stores every matrix row-vector style, (d_in, d_out) for h = a @ W, as the original
implementation's instance-axis Linear does; `nn.Linear.weight` is (d_out, d_in). `layout="auto"`
tries both for the whole file and keeps the one whose shapes fit the architecture; a file whose
matrices fit both (square ones, e.g. TMS with features == hidden) needs `layout="rows"` or
`"torch"`. The architecture (features, widths, layers, biases) is read off the shapes.

Replicates: arrays may carry a leading instance axis (the original's `n_instances`); it becomes the
target file's replicate axis (docs/outputs.md), all entries with the same length or none.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import re
import numpy as np

from ..spec import KINDS, Target
from ..spec.import_rules import LINEAR_ENTRY, ImportRules
from ..spec.target_file import META_KEY, stored_replicates
from .files import load_npz, save_target


def importable() -> tuple[str, ...]:
    """The kinds a state dict can be imported as (those with import rules)."""
    return tuple(k for k, spec in KINDS.items() if spec.importer is not None)


def rules(kind: str) -> ImportRules:
    spec = KINDS.get(kind)
    if spec is None or spec.importer is None:
        raise TargetImportError(f"unknown kind {kind!r}; one of: {', '.join(importable())}")
    return spec.importer

LAYOUTS = ("auto", "rows", "torch")


class TargetImportError(ValueError):
    """A source file that cannot be imported; the message says which entry and why."""


def _is_matrix(name: str) -> bool:
    """Whether an apdspec entry is a weight matrix (transposed in the torch layout)."""
    return not (name == "b" or ".b_" in name or name.endswith(".bias"))


def _pattern(alias: str) -> re.Pattern:
    return re.compile("^" + re.escape(alias).replace(re.escape("{l}"), r"(\d+)") + "$")


def _match(alias: str, name: str) -> str | None:
    """The layer index `name` matches `alias` with ("" if the alias has none), or None."""
    m = _pattern(alias).match(name)
    if m is None:
        return None
    return m.group(1) if m.groups() else ""


def known_names(kind: str) -> list[str]:
    """Every accepted source name of a kind (with {l} placeholders), for messages and --help."""
    r = rules(kind)
    return [a for aliases in r.names.values() for a in aliases] + list(r.tied) + list(r.zero)


@dataclasses.dataclass
class Imported:
    arch: Target
    params: dict  # apdspec name -> array (with the leading replicate axis when `replicates` is set)
    replicates: int | None  # R of a leading instance axis, None without one
    layout: str  # "rows" or "torch": how the source stored its matrices
    renames: list  # (source name, apdspec name or "", what was done)


def _rename(arrays: dict[str, np.ndarray], kind: str, ignore: tuple[str, ...]) -> tuple[dict, list, dict]:
    """(apdspec name -> array, renames, checks): source entries renamed; tied / zero entries kept
    aside in `checks` (source name -> (rule, array))."""
    out: dict[str, np.ndarray] = {}
    source_of: dict[str, str] = {}
    renames: list = []
    checks: dict[str, tuple[str, np.ndarray]] = {}
    unknown = []
    r = rules(kind)
    for name, a in arrays.items():
        if any(fnmatch.fnmatchcase(name, g) for g in ignore):
            renames.append((name, "", "ignored"))
            continue
        a = np.asarray(a)
        target = r.rename(name) if r.rename is not None else None
        for dst, aliases in ({} if r.rename is not None else r.names).items():
            for alias in aliases:
                l = _match(alias, name)
                if l is not None:
                    target = dst.replace("{l}", l)
                    break
            if target is not None:
                break
        if target is None:
            if name in r.tied:
                checks[name] = ("tied", a)
                continue
            zero = next((alias for alias in r.zero if _match(alias, name) is not None), None)
            if zero is not None:
                checks[name] = ("zero", a, zero)
                continue
            unknown.append(name)
            continue
        if target in out:
            raise TargetImportError(f"{source_of[target]!r} and {name!r} both name the {kind} parameter {target!r}; "
                               f"keep one (ignore the other)")
        if a.dtype.kind != "f":
            raise TargetImportError(f"{name!r} holds {a.dtype} values; a target's parameters are floating point")
        out[target], source_of[target] = a, name
        renames.append((name, target, ""))
    if unknown:
        if r.function and all(LINEAR_ENTRY.fullmatch(n) for n in unknown) and not out:
            raise TargetImportError(
                f"{', '.join(repr(n) for n in unknown[:4])}{', ...' if len(unknown) > 4 else ''} are the layers of a "
                f"network of nn.Linear layers; a {kind} target computes {r.function}, which is not that network's "
                "function, so it is not imported as one: import it as what it is, --kind mlp --activation relu (the "
                "activations between its layers; gelu, identity, or a comma list, one per gap)")
        raise TargetImportError(f"no {kind} parameter is named {', '.join(repr(n) for n in unknown)}; known names: "
                           f"{', '.join(known_names(kind))} (skip an entry with --ignore NAME)")
    if not out:
        raise TargetImportError(f"the source holds no {kind} parameters (known names: {', '.join(known_names(kind))})")
    return out, renames, checks


def _oriented(params: dict, layout: str) -> dict:
    if layout == "rows":
        return dict(params)
    return {k: (np.swapaxes(v, -1, -2) if _is_matrix(k) and v.ndim >= 2 else v) for k, v in params.items()}


def _candidate(params: dict, kind: str, layout: str, options: dict) -> tuple[Target, dict, int | None]:
    p = _oriented(params, layout)
    r = rules(kind)
    for name, (_, derive) in r.derived.items():
        if name not in p:
            try:
                p[name] = derive(p)
            except KeyError:
                pass  # what it is derived from is missing too: the architecture says so
    try:
        arch = options["arch"] if options.get("arch") is not None else r.arch(p, options)
    except ValueError as e:
        raise TargetImportError(str(e)) from None
    try:
        R = stored_replicates(arch, {k: v.shape for k, v in p.items()}, "the source")
    except ValueError as e:
        raise TargetImportError(str(e)) from None
    return arch, p, R


def import_arrays(arrays: dict[str, np.ndarray], kind: str, layout: str = "auto", ignore: tuple[str, ...] = (),
                  activation: str | None = None, input_range: tuple[float, float] | None = None,
                  output_activation: str | None = None, arch: Target | None = None) -> Imported:
    """Rename, orient and check a state dict's arrays as an apdspec target of `kind`; with `arch`
    (a network declared in a spec), as that architecture: its shapes are checked, not read off.

    Raises TargetImportError (a ValueError) naming the entry and what is wrong."""
    rules(kind)  # an unknown kind is an error naming the known ones
    if arch is not None and arch.kind != kind:
        raise TargetImportError(f"the spec's target is a {arch.kind} target, not {kind}")
    if layout not in LAYOUTS:
        raise TargetImportError(f"unknown layout {layout!r}; one of: {', '.join(LAYOUTS)}")
    if META_KEY in arrays:
        raise TargetImportError("this is already an apdspec target file: use it directly, target file(\"...\")")
    params, renames, checks = _rename(arrays, kind, tuple(ignore))
    options = {"activation": activation, "input_range": input_range, "output_activation": output_activation,
               "arch": arch}
    tried: dict[str, tuple | str] = {}
    for lay in (("rows", "torch") if layout == "auto" else (layout,)):
        try:
            tried[lay] = _candidate(params, kind, lay, options)
        except TargetImportError as e:
            tried[lay] = str(e)
    fits = {lay: c for lay, c in tried.items() if not isinstance(c, str)}
    if not fits:
        if len(set(tried.values())) == 1 and len(tried) > 1:  # not about the layout (a missing option)
            raise TargetImportError(next(iter(tried.values())))
        if len(tried) == 1:
            (lay, why), = tried.items()
            raise TargetImportError(f"{why} (reading matrices as {_LAYOUT_TEXT[lay]})")
        raise TargetImportError("the shapes fit neither layout: " + "; ".join(f"as {_LAYOUT_TEXT[l]}: {why}"
                                                                         for l, why in tried.items()))
    if len(fits) == 2:
        a, b = fits["rows"], fits["torch"]
        same = a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
        if not same:
            square = [k for k, v in params.items() if _is_matrix(k) and v.shape[-1] == v.shape[-2]]
            why = f"square: {', '.join(square)}" if square else "their shapes chain either way"
            raise TargetImportError(f"the matrices fit both layouts ({why}): say which "
                               "the source uses, --layout rows (x @ W: the original implementation, apdspec) or "
                               "--layout torch (nn.Linear: W @ x)")
        fits = {"rows": a}
    lay, (arch, p, R) = next(iter(fits.items()))
    _check_aside(checks, arrays, params, kind, renames)
    if lay == "torch":
        renames = [(s, d, "transposed" if d and _is_matrix(d) else note) for s, d, note in renames]
    for name, (what, _) in rules(kind).derived.items():
        if name not in params:
            renames.append(("", name, what))
    return Imported(arch, p, R, lay, renames)


TORCH_SUFFIXES = (".pt", ".pth")


def load_state_dict(src: str) -> dict[str, np.ndarray]:
    """The arrays of a state dict: an .npz (no pickle), or a torch file (.pt / .pth) read with
    torch.load(weights_only=True) when torch is importable (it is not a dependency of apdspec)."""
    if not src.lower().endswith(TORCH_SUFFIXES):
        return load_npz(src)
    if not os.path.exists(src):
        raise FileNotFoundError(f"no such file: {src!r}")
    try:
        import torch  # noqa: PLC0415  (optional: only for .pt / .pth sources)
    except ImportError:
        raise TargetImportError("reading a .pt / .pth file needs torch, which is not installed here; save the state "
                                "dict as .npz instead: np.savez(\"sd.npz\", **{k: v.numpy() for k, v in "
                                "model.state_dict().items()})") from None
    try:
        sd = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own errors for a file it cannot read
        raise TargetImportError(f"torch cannot read it as a state dict: {e}") from None
    if hasattr(sd, "state_dict") and not isinstance(sd, dict):
        sd = sd.state_dict()
    if not isinstance(sd, dict) or not all(hasattr(v, "detach") for v in sd.values()):
        raise TargetImportError("it does not hold a state dict (a dict of tensors): save model.state_dict()")
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


_LAYOUT_TEXT = {"rows": "stored (d_in, d_out), x @ W", "torch": "nn.Linear (d_out, d_in), W @ x"}


def _check_aside(checks: dict, arrays: dict, params: dict, kind: str, renames: list) -> None:
    r = rules(kind)
    for name, (rule, a, *zero) in checks.items():
        if rule == "tied":
            src, why = r.tied[name]
            W_src = next(s for s, d, _ in renames if d == src)
            W = np.asarray(arrays[W_src])
            if not (a.shape == W.shape and np.array_equal(a, W)) and not (
                    a.shape == np.swapaxes(W, -1, -2).shape and np.array_equal(a, np.swapaxes(W, -1, -2))):
                raise TargetImportError(f"{name!r} differs from {W_src!r}: {why}")
            renames.append((name, "", f"tied to {W_src}: checked equal, dropped"))
        else:
            if np.any(a != 0):
                raise TargetImportError(f"{name!r} is not zero: {r.zero[zero[0]]}")
            renames.append((name, "", "zero output bias: dropped"))


def import_file(src: str | os.PathLike, kind: str, out: str | os.PathLike, layout: str = "auto",
                ignore: tuple[str, ...] = (), activation: str | None = None,
                input_range: tuple[float, float] | None = None, output_activation: str | None = None,
                arch: Target | None = None) -> Imported:
    """Import `src` (.npz of a state dict; .pt / .pth when torch is installed) and write the
    apdspec target file `out` (atomically)."""
    src = os.fspath(src)
    imported = import_arrays(load_state_dict(src), kind, layout, ignore, activation, input_range, output_activation,
                             arch)
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    meta = {"imported": {"source": os.path.abspath(src), "sha256": digest, "layout": imported.layout,
                         "names": {d: s for s, d, _ in imported.renames if d and s}},
            "replicates": imported.replicates}
    save_target(out, imported.arch, imported.params, meta=meta)
    return imported

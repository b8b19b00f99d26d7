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
from typing import Callable

import numpy as np

from ..spec import GatedTarget, ResidMlpTarget, Target, TmsTarget
from ..spec.target_file import META_KEY, stored_replicates
from .files import load_npz, save_target

KINDS = ("tms", "resid_mlp", "gated")
LAYOUTS = ("auto", "rows", "torch")


class TargetImportError(ValueError):
    """A source file that cannot be imported; the message says which entry and why."""


# apdspec name -> accepted source names ("{l}" is a layer / hidden-layer index). Entries under
# TIED / ZERO are checked and dropped: the TMS output layer reuses W; the gated network's output
# biases must be zero (apdspec's gated network has none).
NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "tms": {
        "W": ("W", "linear1.weight"),
        "hidden.{l}": ("hidden.{l}", "hidden_layers.{l}.weight"),
        "b": ("b", "b_final"),
    },
    "resid_mlp": {
        "W_E": ("W_E",),
        "W_U": ("W_U",),
        "layers.{l}.W_in": ("layers.{l}.W_in", "layers.{l}.mlp_in.weight"),
        "layers.{l}.b_in": ("layers.{l}.b_in", "layers.{l}.bias1", "layers.{l}.mlp_in.bias"),
        "layers.{l}.W_out": ("layers.{l}.W_out", "layers.{l}.mlp_out.weight"),
        "layers.{l}.b_out": ("layers.{l}.b_out", "layers.{l}.bias2", "layers.{l}.mlp_out.bias"),
    },
    "gated": {
        "W_E": ("W_E", "W_E.weight"),
        "W_U": ("W_U", "W_U.weight"),
        "layers.{l}.W_in": ("layers.{l}.W_in", "mlps.{l}.input_layer.weight", "mlp_{l}.input_layer.weight"),
        "layers.{l}.b_in": ("layers.{l}.b_in", "mlps.{l}.input_layer.bias", "mlp_{l}.input_layer.bias"),
        "layers.{l}.W_out": ("layers.{l}.W_out", "mlps.{l}.output_layer.weight", "mlp_{l}.output_layer.weight"),
    },
}
TIED = {"tms": {"linear2.weight": "W"}}
ZERO = {"gated": ("layers.{l}.b_out", "mlps.{l}.output_layer.bias", "mlp_{l}.output_layer.bias")}
OPTIONAL = {"resid_mlp": {"W_U": "W_E transposed (the original ties W_U = W_E^T)"}}


def _is_matrix(name: str) -> bool:
    """Whether an apdspec entry is a weight matrix (transposed in the torch layout)."""
    return not (name == "b" or ".b_" in name)


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
    out = [a for aliases in NAMES[kind].values() for a in aliases]
    return out + list(TIED.get(kind, {})) + list(ZERO.get(kind, ()))


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
    for name, a in arrays.items():
        if any(fnmatch.fnmatchcase(name, g) for g in ignore):
            renames.append((name, "", "ignored"))
            continue
        a = np.asarray(a)
        target = None
        for dst, aliases in NAMES[kind].items():
            for alias in aliases:
                l = _match(alias, name)
                if l is not None:
                    target = dst.replace("{l}", l)
                    break
            if target is not None:
                break
        if target is None:
            if name in TIED.get(kind, {}):
                checks[name] = ("tied", a)
                continue
            if any(_match(alias, name) is not None for alias in ZERO.get(kind, ())):
                checks[name] = ("zero", a)
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
        raise TargetImportError(f"no {kind} parameter is named {', '.join(repr(n) for n in unknown)}; known names: "
                           f"{', '.join(known_names(kind))} (skip an entry with --ignore NAME)")
    if not out:
        raise TargetImportError(f"the source holds no {kind} parameters (known names: {', '.join(known_names(kind))})")
    return out, renames, checks


def _layer_count(params: dict, prefix: str, suffix: str) -> int:
    """Number of indices 0..n-1 of `prefix{l}suffix` entries; gaps are an error."""
    idx = sorted(int(m.group(1)) for k in params if (m := re.fullmatch(re.escape(prefix) + r"(\d+)" + re.escape(suffix), k)))
    if idx != list(range(len(idx))):
        raise TargetImportError(f"{prefix}N{suffix} entries have indices {idx}; expected 0..{len(idx) - 1} without gaps")
    return len(idx)


def _dims(a: np.ndarray, n: int, name: str) -> tuple[int, ...]:
    if a.ndim not in (n, n + 1):
        raise TargetImportError(f"{name!r} has shape {a.shape}: expected {n} axes, or {n + 1} with a leading replicate axis")
    return tuple(int(s) for s in a.shape[-n:])


def _require(params: dict, name: str, kind: str) -> np.ndarray:
    if name not in params:
        raise TargetImportError(f"a {kind} target needs {name!r} (source names: {', '.join(NAMES[kind][name])})")
    return params[name]


def _arch_tms(params: dict, options: dict) -> TmsTarget:
    F, H = _dims(_require(params, "W", "tms"), 2, "W")
    hidden = _layer_count(params, "hidden.", "")
    return TmsTarget(features=F, hidden=H, hidden_layers=hidden, bias="b" in params)


def _arch_resid(params: dict, options: dict) -> ResidMlpTarget:
    F, D = _dims(_require(params, "W_E", "resid_mlp"), 2, "W_E")
    layers = _layer_count(params, "layers.", ".W_in")
    if layers == 0:
        raise TargetImportError("a resid_mlp target needs layers.0.W_in (source name: layers.0.mlp_in.weight)")
    d_mlp = _dims(params["layers.0.W_in"], 2, "layers.0.W_in")[1]
    return ResidMlpTarget(features=F, d_embed=D, d_mlp=d_mlp, layers=layers,
                          activation=options.get("activation") or "relu",
                          in_bias=any(".b_in" in k for k in params), out_bias=any(".b_out" in k for k in params))


def _arch_gated(params: dict, options: dict) -> GatedTarget:
    n_in, D = _dims(_require(params, "W_E", "gated"), 2, "W_E")
    n = n_in - 1
    if n < 1 or D != n + 2:
        raise TargetImportError(f"W_E is {n_in} x {D} (inputs x residual width); a gated network of n functions has "
                           f"n + 1 inputs [x, alpha_0..] and width n + 2 [x, alpha_0.., y]")
    layers = _layer_count(params, "layers.", ".W_in")
    if layers == 0:
        raise TargetImportError("a gated target needs layers.0.W_in (source name: mlps.0.input_layer.weight)")
    d_mlp = _dims(params["layers.0.W_in"], 2, "layers.0.W_in")[1]
    if (d_mlp * layers) % n:
        raise TargetImportError(f"{layers} layers of {d_mlp} neurons cannot hold the same number of neurons for each of "
                           f"the {n} functions")
    neurons = d_mlp * layers // n
    arch = GatedTarget(functions=n, neurons=neurons, layers=layers)
    given = options.get("input_range")
    if given is not None:
        return dataclasses.replace(arch, input_range=(float(given[0]), float(given[1])))
    start, end, simple = _gated_grid(params, arch)
    return dataclasses.replace(arch, input_range=(start, end), simple_bias=simple)


def _gated_grid(params: dict, arch: GatedTarget) -> tuple[float, float, bool]:
    """(start, end, simple_bias) of a hand-coded gated network, read off its first replicate's
    input weights and biases (notes §1.3): neuron k of function i has bias -t_k - S and control
    weight S (or bias -S and control weight S - t_k), with S = 2 (end - start) and knots
    t_k = start + (k - 1) (end - start) / (neurons - 1)."""
    n, L = arch.functions, arch.layers
    ctrl, bias, func = [], [], []
    for l in range(L):
        W = np.asarray(params[f"layers.{l}.W_in"], dtype=np.float64)
        b = np.asarray(params.get(f"layers.{l}.b_in", np.zeros(W.shape[-1])), dtype=np.float64)
        W, b = (W[0], b[0]) if W.ndim == 3 else (W, b)
        c = W[1:n + 1]  # (n, d_mlp): control-bit weights
        func.append(np.argmax(np.abs(c), axis=0))
        ctrl.append(c[func[-1], np.arange(c.shape[1])])
        bias.append(b)
    ctrl, bias, func = np.concatenate(ctrl), np.concatenate(bias), np.concatenate(func)
    hint = "this does not look like the hand-coded gated network; give --input-range LO,HI"
    tol = 1e-4 * max(1.0, float(np.max(np.abs(ctrl))))
    if np.ptp(ctrl) <= tol:
        S, simple = float(np.mean(ctrl)), False
        knots = -bias - S
    elif np.ptp(bias) <= tol:
        S, simple = float(-np.mean(bias)), True
        knots = S - ctrl
    else:
        raise TargetImportError(f"the input biases and control weights vary together: {hint}")
    length = S / 2.0
    if not length > 0:
        raise TargetImportError(f"control weight S = {S:g} is not positive: {hint}")
    delta = length / (arch.neurons - 1)
    start = float(np.min(knots)) + delta
    want = start + (np.arange(arch.neurons) - 1) * delta
    for i in range(n):
        got = np.sort(knots[func == i])
        if got.size != arch.neurons or not np.allclose(got, want, atol=1e-4 * max(1.0, length)):
            raise TargetImportError(f"function {i}'s neurons do not sit on one grid of {arch.neurons} knots: {hint}")
    start = float(np.round(start, 5)) + 0.0  # undo float32 noise (+ 0.0: no -0.0)
    return start, float(np.round(start + length, 5)) + 0.0, simple


ARCHS: dict[str, Callable[[dict, dict], Target]] = {"tms": _arch_tms, "resid_mlp": _arch_resid, "gated": _arch_gated}


def _oriented(params: dict, layout: str) -> dict:
    if layout == "rows":
        return dict(params)
    return {k: (np.swapaxes(v, -1, -2) if _is_matrix(k) and v.ndim >= 2 else v) for k, v in params.items()}


def _candidate(params: dict, kind: str, layout: str, options: dict) -> tuple[Target, dict, int | None]:
    p = _oriented(params, layout)
    if kind == "resid_mlp" and "W_U" not in p and "W_E" in p:
        p["W_U"] = np.swapaxes(p["W_E"], -1, -2).copy()
    arch = ARCHS[kind](p, options)
    try:
        R = stored_replicates(arch, {k: v.shape for k, v in p.items()}, "the source")
    except ValueError as e:
        raise TargetImportError(str(e)) from None
    return arch, p, R


def import_arrays(arrays: dict[str, np.ndarray], kind: str, layout: str = "auto", ignore: tuple[str, ...] = (),
                  activation: str | None = None, input_range: tuple[float, float] | None = None) -> Imported:
    """Rename, orient and check a state dict's arrays as an apdspec target of `kind`.

    Raises TargetImportError (a ValueError) naming the entry and what is wrong."""
    if kind not in KINDS:
        raise TargetImportError(f"unknown kind {kind!r}; one of: {', '.join(KINDS)}")
    if layout not in LAYOUTS:
        raise TargetImportError(f"unknown layout {layout!r}; one of: {', '.join(LAYOUTS)}")
    if META_KEY in arrays:
        raise TargetImportError("this is already an apdspec target file: use it directly, target file(\"...\")")
    params, renames, checks = _rename(arrays, kind, tuple(ignore))
    options = {"activation": activation, "input_range": input_range}
    tried: dict[str, tuple | str] = {}
    for lay in (("rows", "torch") if layout == "auto" else (layout,)):
        try:
            tried[lay] = _candidate(params, kind, lay, options)
        except TargetImportError as e:
            tried[lay] = str(e)
    fits = {lay: c for lay, c in tried.items() if not isinstance(c, str)}
    if not fits:
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
            raise TargetImportError(f"the matrices fit both layouts ({', '.join(square) or 'square shapes'}): say which "
                               "the source uses, --layout rows (x @ W: the original implementation, apdspec) or "
                               "--layout torch (nn.Linear: W @ x)")
        fits = {"rows": a}
    lay, (arch, p, R) = next(iter(fits.items()))
    _check_aside(checks, arrays, params, kind, renames)
    if lay == "torch":
        renames = [(s, d, "transposed" if d and _is_matrix(d) else note) for s, d, note in renames]
    if kind == "resid_mlp" and "W_U" not in params:
        renames.append(("", "W_U", OPTIONAL["resid_mlp"]["W_U"]))
    return Imported(arch, p, R, lay, renames)


_LAYOUT_TEXT = {"rows": "stored (d_in, d_out), x @ W", "torch": "nn.Linear (d_out, d_in), W @ x"}


def _check_aside(checks: dict, arrays: dict, params: dict, kind: str, renames: list) -> None:
    for name, (rule, a) in checks.items():
        if rule == "tied":
            src = TIED[kind][name]
            W_src = next(s for s, d, _ in renames if d == src)
            W = np.asarray(arrays[W_src])
            if not (a.shape == W.shape and np.array_equal(a, W)) and not (
                    a.shape == np.swapaxes(W, -1, -2).shape and np.array_equal(a, np.swapaxes(W, -1, -2))):
                raise TargetImportError(f"{name!r} differs from {W_src!r}: a TMS target's output layer is the transpose "
                                   f"of its input layer (tied), so they must hold the same matrix")
            renames.append((name, "", f"tied to {W_src}: checked equal, dropped"))
        else:
            if np.any(a != 0):
                raise TargetImportError(f"{name!r} is not zero: apdspec's gated network has no output bias")
            renames.append((name, "", "zero output bias: dropped"))


def import_file(src: str | os.PathLike, kind: str, out: str | os.PathLike, layout: str = "auto",
                ignore: tuple[str, ...] = (), activation: str | None = None,
                input_range: tuple[float, float] | None = None) -> Imported:
    """Import `src` (.npz of a state dict) and write the apdspec target file `out` (atomically)."""
    src = os.fspath(src)
    imported = import_arrays(load_npz(src), kind, layout, ignore, activation, input_range)
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    meta = {"imported": {"source": os.path.abspath(src), "sha256": digest, "layout": imported.layout,
                         "names": {d: s for s, d, _ in imported.renames if d and s}},
            "replicates": imported.replicates}
    save_target(out, imported.arch, imported.params, meta=meta)
    return imported

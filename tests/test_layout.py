"""The code's layering: the runtime's layers import only those below them (lazy imports included),
the target kinds and methods are slices whose modules keep to their layer, the machinery never
names a kind or a method, no module import cycle exists (runtime or language), and the runtime
never imports the language package."""
import ast
import os
import re
import subprocess

import pytest

from paths import ROOT

LAYERS = ["spec", "engine", "store", "analysis", "report", "pipeline"]  # bottom to top
SLICES = ("targets", "methods")  # runtime/targets/<kind>/, runtime/methods/<method>/


def _modules(package: str) -> dict[str, str]:
    """dotted name (without the package) -> file path, for every module of `package`."""
    out = {}
    base = os.path.join(ROOT, package)
    for dirpath, _, files in os.walk(base):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), base)[:-3].replace(os.sep, ".")
                rel = "" if rel == "__init__" else rel.removesuffix(".__init__")
                out[rel] = os.path.join(dirpath, f)  # "" is the package root: the public facade
    return out


def _imports(package: str, name: str, path: str, modules: dict[str, str]) -> set[str]:
    """Modules of `package` that `name` imports anywhere in its body; "<apdspec>" / "<runtime>" for
    the other package."""
    other = "apdspec" if package == "runtime" else "runtime"
    is_pkg = path.endswith("__init__.py")
    pkg = name if is_pkg else name.rpartition(".")[0]  # what a level-1 relative import names
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".") if pkg else []
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == package:
                mod = node.module[len(package) + 1:] if node.module != package else ""
            else:
                if node.module and node.module.split(".")[0] == other:
                    found.add(f"<{other}>")
                continue
            subs = [f"{mod}.{a.name}" if mod else a.name for a in node.names]
            # `from pkg import submodule` needs the submodule; `from pkg import name`, the package
            targets = subs if all(t in modules for t in subs) else subs + [mod]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == other:
                    found.add(f"<{other}>")
                elif a.name.startswith(package + "."):
                    targets.append(a.name[len(package) + 1:])
        for t in targets:
            if t in modules and t != name:
                found.add(t)
    return found


RUNTIME = _modules("runtime")
GRAPH = {name: _imports("runtime", name, path, RUNTIME) for name, path in RUNTIME.items()}
APDSPEC = _modules("apdspec")
APDSPEC_GRAPH = {name: _imports("apdspec", name, path, APDSPEC) for name, path in APDSPEC.items()}


def _slice(name: str) -> tuple[str, str] | None:
    """("targets" / "methods", kind or method) of a slice module, else None."""
    parts = name.split(".")
    return (parts[0], parts[1]) if parts[0] in SLICES and len(parts) > 1 else None


def _layer(name: str) -> int | None:
    """The layer of a module: its subpackage's; a slice module's by its file name (spec parts, the
    papers' values -> spec; analysis* -> analysis; plots* -> report; the rest -> engine); None for
    the package roots that import everything (runtime, runtime.targets, runtime.methods, a slice's
    __init__)."""
    parts = name.split(".")
    if parts[0] in LAYERS:
        return LAYERS.index(parts[0])
    if _slice(name) is None or len(parts) < 3:
        return None
    leaf = parts[2]
    if leaf in ("spec", "paper"):
        return LAYERS.index("spec")
    if leaf.startswith("analysis"):
        return LAYERS.index("analysis")
    if leaf.startswith("plots"):
        return LAYERS.index("report")
    return LAYERS.index("engine")


def test_every_module_lives_in_a_layer_or_a_slice():
    loose = [n for n in RUNTIME if n and n.split(".")[0] not in LAYERS + list(SLICES)]
    assert not loose, f"modules outside the layers {LAYERS} and the slices {SLICES}: {loose}"


@pytest.mark.parametrize("name", sorted(n for n in RUNTIME if n))
def test_imports_point_down(name):
    assert "<apdspec>" not in GRAPH[name], f"runtime.{name} imports apdspec (dependencies point one way)"
    own = _layer(name)
    if own is None:
        return  # a package root: it imports its parts to register them
    up = [t for t in GRAPH[name] if t and _layer(t) is not None and _layer(t) > own]
    assert not up, f"runtime.{name} (layer {LAYERS[own]}) imports {up}, which sit above it ({' < '.join(LAYERS)})"


@pytest.mark.parametrize("name", sorted(n for n in RUNTIME if n and n.split(".")[0] in LAYERS))
def test_the_machinery_never_imports_a_slice(name):
    """The layers look kinds and methods up in their registries; only the package root imports the slices."""
    sliced = [t for t in GRAPH[name] if t.split(".")[0] in SLICES]
    assert not sliced, f"runtime.{name} imports {sliced}: call the registry instead"


@pytest.mark.parametrize("name", sorted(n for n in RUNTIME if _slice(n) and _slice(n)[0] == "methods"))
def test_methods_never_import_a_kind(name):
    """A kind's fast paths for a method live in the kind's folder and register with the method."""
    kinds = [t for t in GRAPH[name] if t.split(".")[0] == "targets"]
    assert not kinds, f"runtime.{name} imports {kinds}"


def _cycles(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for t in sorted(graph[n]):
            if not t or t.startswith("<"):  # the root re-exports; modules take only names from it
                continue
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n and n not in state:
            visit(n)


def test_no_import_cycles_in_the_runtime():
    _cycles(GRAPH)


def test_no_import_cycles_in_the_language():
    _cycles(APDSPEC_GRAPH)


def test_the_layering_check_sees_imports():
    # guards the checker itself: a known downward import, a package re-export, a slice's own part
    assert "engine.models" in GRAPH["engine.train_target"]
    assert "spec.checks" in GRAPH["spec"]
    assert "methods.apd.components" in GRAPH["methods.apd.train"]
    assert _layer("targets.tms.plots") == LAYERS.index("report") and _layer("methods.spd.spec") == 0


# The greps of the plug-in slices issue: outside runtime/targets and runtime/methods no line
# branches on a target kind or a decomposition method.
KIND_BRANCH = (r"isinstance\([^)]*(Tms|ResidMlp|Gated|DeepLinear|Mlp)Target|kind *[!=]= *['\"]"
               r"(tms|resid_mlp|gated|deep_linear|mlp)['\"]")
METHOD_BRANCH = r"method *[!=]= *['\"](apd|spd|vpd)['\"]"


@pytest.mark.parametrize("pattern", [KIND_BRANCH, METHOD_BRANCH])
def test_no_branch_on_a_kind_or_method_outside_the_slices(pattern):
    out = subprocess.run(["grep", "-rnE", pattern, "--include=*.py", "apdspec", "runtime"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    lines = [l for l in out.splitlines() if not re.match(r"runtime/(targets|methods)/", l)]
    assert not lines, "\n".join(lines)

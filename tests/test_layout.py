"""The runtime's layering: each subpackage imports only the ones below it (lazy imports included),
no module import cycle exists, and the runtime never imports the language package."""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime")
LAYERS = ["spec", "engine", "store", "analysis", "report", "pipeline"]  # bottom to top


def _modules() -> dict[str, str]:
    """dotted name (without 'runtime.') -> file path, for every module of the runtime."""
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                rel = "" if rel == "__init__" else rel.removesuffix(".__init__")
                out[rel] = os.path.join(dirpath, f)  # "" is the package root: the public facade
    return out


def _imports(name: str, path: str, modules: dict[str, str]) -> set[str]:
    """runtime modules `name` imports anywhere in its body (resolved to module names)."""
    is_pkg = path.endswith("__init__.py")
    package = name if is_pkg else name.rpartition(".")[0]  # what a level-1 relative import names
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "runtime":
                mod = node.module[len("runtime."):] if node.module != "runtime" else ""
            else:
                if node.module and node.module.split(".")[0] == "apdspec":
                    found.add("<apdspec>")
                continue
            subs = [f"{mod}.{a.name}" if mod else a.name for a in node.names]
            # `from pkg import submodule` needs the submodule; `from pkg import name`, the package
            targets = subs if all(t in modules for t in subs) else subs + [mod]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "apdspec":
                    found.add("<apdspec>")
                elif a.name.startswith("runtime."):
                    targets.append(a.name[len("runtime."):])
        for t in targets:
            if t in modules and t != name:
                found.add(t)
    return found


MODULES = _modules()
GRAPH = {name: _imports(name, path, MODULES) for name, path in MODULES.items()}


def _layer(name: str) -> int | None:
    top = name.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def test_every_module_lives_in_a_layer():
    loose = [n for n in MODULES if n and _layer(n) is None]
    assert not loose, f"modules outside the subpackages {LAYERS}: {loose}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n))
def test_imports_point_down(name):
    assert "<apdspec>" not in GRAPH[name], f"runtime.{name} imports apdspec (dependencies point one way)"
    up = [t for t in GRAPH[name] if t and _layer(t) > _layer(name)]  # the root only for __version__
    assert not up, f"runtime.{name} imports {up}, which sit above it ({' < '.join(LAYERS)})"


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for t in sorted(GRAPH[n]):
            if not t:  # the root re-exports everything; modules take only __version__ from it
                continue
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(GRAPH):
        if n and n not in state:
            visit(n)


def test_the_layering_check_sees_imports():
    # guards the checker itself: a known downward import and a package re-export are found
    assert "engine.models" in GRAPH["engine.apd"]
    assert "spec.checks" in GRAPH["spec"]

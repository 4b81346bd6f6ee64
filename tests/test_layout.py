"""The package's layout stays one a newcomer can learn: no import circles, small modules and classes,
no private helper imported across modules, and a module map that names every module.

Imports are read from the source (``ast``), including those inside functions, so a circle that only a
late import hides still counts.
"""
from __future__ import annotations

import ast
from pathlib import Path

import galmeta

PACKAGE = Path(galmeta.__file__).resolve().parent
MAX_MODULE_LINES = 525  # "about 500"
MAX_CLASS_LINES = 250


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(encoding="utf-8"))


def _imports(tree, module_names):
    """The galmeta modules a module imports (``from galmeta.x import y`` counts galmeta.x.y when it is a module)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in module_names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("galmeta"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in module_names else node.module)
    return found


def import_graph():
    modules = {name: tree for name, _, tree in _modules()}
    return {name: _imports(tree, set(modules)) - {name} for name, tree in modules.items()}


def find_cycle(graph):
    """A list of modules that import each other in a circle, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == "open":
                return stack[stack.index(child):] + [child]
            if child not in state:
                cycle = visit(child)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    # a package imports its submodules and they import their siblings: Python resolves that, so a package's
    # own __init__ is not an edge from its submodules (they name the submodule they need)
    assert "galmeta.evaluate" in graph and "galmeta.data.home" in graph
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_modules_and_classes_stay_small():
    too_long = []
    for name, path, tree in _modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long


def test_no_private_helper_is_imported_across_modules():
    private = []
    for name, _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("galmeta"):
                private += [f"{name} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not private, private


def test_the_module_map_names_every_module():
    documented = galmeta.__doc__
    missing = [name for name, _, _ in _modules()
               if name.count(".") == 1 and f"``{name}``" not in documented and not name.endswith("__main__")]
    assert not missing, f"galmeta/__init__.py's module map lacks {missing}"

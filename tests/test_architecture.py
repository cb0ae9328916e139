"""The import graph of the library: no cycles, and the backends never reach up into the library.

Every ``.py`` file under ``puzzle_rms/`` and ``backends/`` (installed as ``puzzle_rms.backends``) is parsed
with :mod:`ast`, without importing anything. Every import statement counts, at module level or inside a
function, a method or an ``if TYPE_CHECKING:`` block: a deferred import that closes a cycle is still a cycle.

An import of ``a.b.c`` runs the packages ``a`` and ``a.b`` first, so it is an edge to each of them too,
except to the packages that contain the importing module (they are already being imported when it runs).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder -> the package it is installed as (setup: package_dir maps backends/ to puzzle_rms.backends)
SOURCES = {ROOT / "puzzle_rms": "puzzle_rms", ROOT / "backends": "puzzle_rms.backends"}
BACKENDS = "puzzle_rms.backends"

def module_files() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package's ``__init__.py``)."""
    modules = {}
    for folder, package in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            isPackage = parts[-1] == "__init__"
            if isPackage:
                parts.pop()
            modules[".".join([package, *parts])] = (path, isPackage)
    return modules


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _absolute(node: ast.ImportFrom, module: str, isPackage: bool) -> str:
    """The absolute name of the module a ``from ... import`` statement reads from."""
    if not node.level:
        return node.module or ""
    package = module if isPackage else module.rpartition(".")[0]
    base = package.split(".")
    if node.level - 1 >= len(base):
        raise AssertionError(f"{module}: relative import beyond the top-level package (level {node.level})")
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, isPackage: bool) -> list[tuple[str, int, bool]]:
    """(imported absolute name, line, whether it was a relative import) of every import statement in ``path``.

    ``from x import y`` yields ``x.y`` (which may name a module or an attribute of ``x``) and ``x``.
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, isPackage)
            found.append((source, node.lineno, bool(node.level)))
            found += [(f"{source}.{alias.name}", node.lineno, bool(node.level)) for alias in node.names
                      if alias.name != "*"]
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {internal module it imports -> line of the first such import}."""
    modules = module_files()
    graph: dict[str, dict[str, int]] = {}
    for module, (path, isPackage) in modules.items():
        running = {module, *_ancestors(module)}  # already in sys.modules while this module executes
        edges = graph.setdefault(module, {})
        for name, line, _ in imports_of(module, path, isPackage):
            for target in [*_ancestors(name), name]:
                if target in modules and target not in running:
                    edges.setdefault(target, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> Optional[list[str]]:
    """One cycle ``[m0, m1, ..., m0]`` of the graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            target = next(stack[-1], None)
            if target is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(target) == 1:
                return path[path.index(target):] + [target]
            elif not state.get(target):
                state[target] = 1
                path.append(target)
                stack.append(iter(sorted(graph.get(target, {}))))
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return "\n".join(f"  {a} imports {b} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:]))


# --- the checker itself ---------------------------------------------------------------------------
def test_the_checker_finds_deferred_cycles_and_package_edges():
    # a -> b at module level, b -> a inside a function: a cycle
    graph = {"p.a": {"p.b": 3}, "p.b": {"p.a": 9}, "p.c": {}}
    assert find_cycle(graph) == ["p.a", "p.b", "p.a"]
    assert find_cycle({"p.a": {"p.b": 1}, "p.b": {"p.c": 1}, "p.c": {}}) is None
    assert "p.b imports p.a (line 9)" in describe(["p.a", "p.b", "p.a"], graph)
    code = "import os\ndef f():\n    from ..x import y\n    from . import z\n    import q.r.s\n"
    node = ast.parse(code)
    relative = [n for n in ast.walk(node) if isinstance(n, ast.ImportFrom)]
    assert _absolute(relative[0], "p.sub.m", False) == "p.x"
    assert _absolute(relative[1], "p.sub", True) == "p.sub"
    assert _ancestors("q.r.s") == ["q", "q.r"]


def test_the_library_modules_are_all_found():
    modules = module_files()
    for name in ["puzzle_rms", "puzzle_rms.checkpoint", "puzzle_rms.optimizers.optimizer", "puzzle_rms.backends",
                 "puzzle_rms.backends.backend", "puzzle_rms.backends.numpy_backend", "puzzle_rms.modules.module"]:
        assert name in modules, name
    graph = import_graph()
    assert "puzzle_rms.backends.backend" in graph["puzzle_rms.ops"]
    assert "puzzle_rms.backends" in graph["puzzle_rms.ops"]  # importing a submodule runs its package
    assert "puzzle_rms.backends.numba_kernels" in graph["puzzle_rms.backends.numba_backend"]  # a deferred import


# --- the library ----------------------------------------------------------------------------------
def test_there_is_no_import_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle:\n" + describe(cycle, graph)


def test_backends_import_nothing_of_the_library_but_themselves_relatively():
    bad = []
    for module, (path, isPackage) in module_files().items():
        if module != BACKENDS and not module.startswith(BACKENDS + "."):
            continue
        for name, line, relative in imports_of(module, path, isPackage):
            if name == "puzzle_rms" or name.startswith("puzzle_rms."):
                if not (relative and (name == BACKENDS or name.startswith(BACKENDS + "."))):
                    bad.append(f"  {path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "backends/ must import only its own modules, with relative imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("start", ["puzzle_rms.modules", "puzzle_rms.checkpoint", "puzzle_rms.ops"])
def test_modules_checkpoints_and_raw_ops_do_not_load_the_optimizers(start):
    """Module checkpoints and the raw ops need no optimizer: the state dtype is the backends' contract."""
    graph = import_graph()
    reached, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += graph[module]
    assert not sorted(m for m in reached if m.startswith("puzzle_rms.optimizers")), sorted(reached)

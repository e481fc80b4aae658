"""The project's import graph, read from the source (ast), not from what happens to be imported.

``graph(root)`` maps every project module (``entrainment.x``, ``tasks.x``, ``flows.x``, ``cli.x``,
``deployments.x``) to the project modules it imports anywhere in its file, function-level imports included.
Two users: cache keys (a task's code hash covers every module it can reach, ``reachable``) and the layering test
(no cycles, no import from a lower layer to a higher one, ``LAYERS``).
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGES = ("entrainment", "tasks", "flows", "cli", "deployments")
# the dependency rule: a package may import only packages of its own or a lower layer
LAYERS = {"entrainment": 0, "tasks": 1, "flows": 2, "deployments": 3, "cli": 3}


def module_files(root: Path) -> dict[str, Path]:
    """Module name -> file, for every .py file of the project packages under root."""
    out = {}
    for pkg in PACKAGES:
        for p in sorted((Path(root) / pkg).glob("*.py")):
            out[pkg if p.stem == "__init__" else f"{pkg}.{p.stem}"] = p
    return out


def _targets(tree: ast.AST, name: str, known: set[str]) -> set[str]:
    pkg = name if name in PACKAGES else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                found |= {m for m in (a.name, a.name.split(".")[0]) if m in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = f"{pkg}.{base}" if base else pkg
            subs = [f"{base}.{a.name}" for a in node.names]
            found |= {sub for sub in subs if sub in known}
            if base in known and not all(sub in known for sub in subs):  # an attribute of base itself
                found.add(base)
    found.discard(name)
    return found


@lru_cache(maxsize=4)
def _graph(root: str) -> dict[str, frozenset[str]]:
    files = module_files(Path(root))
    known = set(files)
    return {
        name: frozenset(_targets(ast.parse(path.read_text(encoding="utf-8")), name, known))
        for name, path in files.items()
    }


def graph(root: Path) -> dict[str, frozenset[str]]:
    """Module -> the project modules it imports (read once per process and root)."""
    return _graph(str(Path(root).resolve()))


def reachable(root: Path, start: str) -> list[str]:
    """Every project module `start` can reach through imports (itself included), sorted."""
    g = graph(root)
    seen, todo = {start}, [start]
    while todo:
        for m in g.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return sorted(seen)


def cycles(root: Path) -> list[list[str]]:
    """Strongly connected components with more than one module (import cycles), each sorted."""
    g = graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def upward(root: Path) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a lower layer imports a higher one."""
    g = graph(root)
    layer = lambda m: LAYERS[m.split(".")[0]]  # noqa: E731
    return sorted((a, b) for a, bs in g.items() for b in bs if layer(b) > layer(a))

"""The project's import graph, read from the source (ast), not from what happens to be imported.

``graph(root)`` maps every project module (``entrainment.x``, ``tasks.x``, ``flows.x``, ``cli.x``,
``deployments.x``) to the project modules it imports anywhere in its file, function-level imports included.
Two users: cache keys (a task's code hash covers every module it can reach, ``reachable``; the CLI's fast path
hashes every file ``module_files`` lists) and the layering test (no cycles, no import from a lower layer to a higher
one, ``LAYERS``). The walk is recursive, so a module in a subfolder (``entrainment/heads/search.py`` is
``entrainment.model.hooks.search``) is in every cache key; it is bounded (``MAX_DEPTH`` folders, symlinked folders not
followed, so a symlink loop cannot make it run forever) and a tree deeper than the bound is an error, not a silently
shorter key.
"""

from __future__ import annotations

import ast
import os
from functools import lru_cache
from pathlib import Path

PACKAGES = ("entrainment", "tasks", "flows", "cli", "deployments")
# the dependency rule: a package may import only packages of its own or a lower layer
LAYERS = {"entrainment": 0, "tasks": 1, "flows": 2, "deployments": 3, "cli": 3}
# the same rule between the library's folders (a module directly in entrainment/ is `root`, the notebook API `api`):
# the foundations, then where results live, what is asked and the model, the statistics, the head sets, the
# ablation, the figures, one entry module per stage, and on top the planner and the Python API.
FOLDER_LAYERS = {
    "root": 0,
    "store": 1,
    "data": 2,
    "model": 2,
    "statistics": 3,
    "heads": 4,
    "ablation": 5,
    "figures": 6,
    "stages": 7,
    "plan": 8,
    "api": 8,
}
API_MODULES = ("api", "api_checks")


MAX_DEPTH = 6  # package folders below a top-level package; deeper is a layout error (see python_files)


def python_files(folder: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Every .py file under folder, in its subfolders too, sorted.

    Args:
        folder: the top of the walk (a missing folder has no files).
        max_depth: how many folders deep the walk may go below folder.

    Returns:
        The regular .py files (a symlink to a file counts; symlinked folders are not entered, so a link loop
        cannot recurse), skipping ``__pycache__`` and hidden folders.

    Raises:
        RuntimeError: a folder holds subfolders deeper than max_depth (their modules would drop out of the keys).
    """
    folder = Path(folder)
    out: list[Path] = []
    for here, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        if dirs and len(Path(here).relative_to(folder).parts) >= max_depth:
            raise RuntimeError(f"{here}: source folders nested more than {max_depth} deep; raise imports.MAX_DEPTH")
        out += [Path(here) / n for n in names if n.endswith(".py") and (Path(here) / n).is_file()]
    return sorted(out)


def module_name(root: Path, path: Path) -> str:
    """The dotted module name of a project file: ``entrainment/heads/__init__.py`` -> ``entrainment.model.hooks``."""
    parts = list(Path(path).relative_to(Path(root)).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files(root: Path) -> dict[str, Path]:
    """Module name -> file, for every .py file of the project packages under root, subfolders included.

    Raises:
        RuntimeError: two files give one module name (``x.py`` beside a package folder ``x/``): one would shadow
            the other and drop out of the keys.
    """
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for p in python_files(Path(root) / pkg):
            name = module_name(root, p)
            if name in out:
                raise RuntimeError(f"{out[name]} and {p} are both module {name}; remove or rename one")
            out[name] = p
    return out


def _targets(tree: ast.AST, name: str, known: set[str], is_package: bool = False) -> set[str]:
    pkg = name if is_package or name in PACKAGES else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:  # import a.b.c runs a, a.b and a.b.c
                parts = a.name.split(".")
                found |= {m for m in (".".join(parts[: i + 1]) for i in range(len(parts))) if m in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: one dot is this package, each further dot one package up
                up = pkg.split(".")[: max(len(pkg.split(".")) - node.level + 1, 0)]
                base = ".".join(up + ([base] if base else []))
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
        name: frozenset(_targets(ast.parse(path.read_text(encoding="utf-8")), name, known, path.stem == "__init__"))
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


def library_folder(module: str) -> str | None:
    """The FOLDER_LAYERS group of a library module (``entrainment.heads.search`` -> ``heads``), None outside it."""
    parts = module.split(".")
    if parts[0] != "entrainment" or len(parts) < 2:
        return None
    if len(parts) == 2:  # a module directly in entrainment/ (or a folder's __init__)
        return "api" if parts[1] in API_MODULES else (parts[1] if parts[1] in FOLDER_LAYERS else "root")
    return parts[1]


def upward_folders(root: Path) -> list[tuple[str, str]]:
    """(importer, imported) library modules where a lower folder imports a higher one (or an unknown folder)."""
    g = graph(root)
    rank = lambda m: FOLDER_LAYERS.get(library_folder(m) or "", 99)  # noqa: E731
    return sorted(
        (a, b)
        for a, bs in g.items()
        if library_folder(a)
        for b in bs
        if library_folder(b) and library_folder(b) != library_folder(a) and rank(b) > rank(a)
    )

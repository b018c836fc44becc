"""Find import cycles among the modules of a package (default: src/mobilevt).

Every import counts, at module level or inside a function: a function-level import that
closes a circle is still a circle in the design. A package's ``__init__`` is a
re-export: an import of a name from a package is followed to the submodule the
``__init__`` takes it from, and the ``__init__``'s own imports are not edges.

Usage: python tools/check_import_cycles.py [PACKAGE_DIR]; exit status 1 when a cycle is
found, each printed as ``a -> b -> a``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module under package folder ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports(module: str, path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement in ``path``."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, is_package, node.level, node.module)
            found.append((target, [alias.name for alias in node.names]))
    return found


def _reexports(package: str, path: Path, modules: dict[str, Path]) -> dict[str, str]:
    """Name -> the submodule a package's ``__init__`` takes it from."""
    sources = {}
    for target, names in _imports(package, path):
        for name in names:
            submodule = f"{target}.{name}"
            sources[name] = submodule if submodule in modules else target
    return sources


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    reexports = {name: _reexports(name, modules[name], modules) for name in packages}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        if module in packages:
            continue
        for target, names in _imports(module, path):
            for name in names or [None]:
                graph[module].add(_resolve(target, name, modules, packages, reexports))
    return {m: {t for t in targets if t in modules and t not in packages and t != m} for m, targets in graph.items()}


def _resolve(target: str, name, modules, packages, reexports, depth: int = 0) -> str:
    if name is not None and f"{target}.{name}" in modules:
        return f"{target}.{name}"
    if target in packages and name is not None and depth < 8:
        source = reexports[target].get(name)
        if source is not None and source != target:
            return _resolve(source, name, modules, packages, reexports, depth + 1)
    return target


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "src" / "mobilevt"
    graph = import_graph(root)
    found = cycles(graph)
    for component in found:
        print("import cycle: " + " <-> ".join(component))
    print(f"{len(graph)} modules, {sum(len(t) for t in graph.values())} imports, {len(found)} cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

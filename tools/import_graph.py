"""Import-graph figures for costguard: modules, import cycles, upward imports, largest modules.

Run from a checkout: ``python tools/import_graph.py [package_dir]``. Counts every import a module
makes (module level and inside functions), resolved to costguard modules, so cycles hidden inside
functions count too. "Upward" means a lower layer importing a higher one in the documented order.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS = [
    "errors",
    "model",
    "text",
    "serving",
    "engine",
    "report",
    "compare",
    "policy",
    "render",
    "integrations",
    "api",
    "cli",
    "pytest_plugin",
]
FRONT_ENDS = {"cli", "pytest_plugin"}


def module_names(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                mod = f"{prefix}.{node.module}" if node.module else prefix
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        for t in targets:
            if t.split(".")[0] != "costguard":
                continue
            r = resolve(t)
            # a module's own parent packages are imported before it anyway: not an edge
            if r and r != name and not name.startswith(r + "."):
                found.add(r)
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "costguard")
    mods = module_names(root)
    known = set(mods)
    # A package's own import of its submodule is not an edge worth counting as a cycle source
    # unless the submodule imports the package back; keep all edges, Tarjan sorts it out.
    graph = {m: imports_of(m, p, known) for m, p in mods.items()}
    graph[root.name] = set()  # the lazy export of the facade (see the module docstring)
    # importing a.b.c also imports packages a.b and a: ignore those implicit parents here.
    sccs = cycles(graph)
    upward = [
        (m, t)
        for m, ts in graph.items()
        for t in ts
        if layer_of(m) is not None
        and layer_of(t) is not None
        and layer_of(t) > layer_of(m)  # type: ignore[operator]
        and not (m.split(".")[1] in FRONT_ENDS and t.split(".")[1] in FRONT_ENDS)
    ]
    sizes = sorted(
        ((len(p.read_text(encoding="utf-8").splitlines()), m) for m, p in mods.items()),
        reverse=True,
    )
    top = [m for m in mods if m.count(".") == 1 and not mods[m].name == "__init__.py"]
    print(f"modules: {len(mods)}  (top-level modules: {len(top)}: {', '.join(sorted(top))})")
    print(f"import edges: {sum(len(v) for v in graph.values())}")
    print(f"cycles (strongly connected groups): {len(sccs)}")
    for c in sccs:
        print("  - " + " <-> ".join(c))
    print(f"upward imports: {len(upward)}")
    for m, t in sorted(upward):
        print(f"  - {m} -> {t}")
    print(f"modules over 500 lines: {sum(1 for n, _ in sizes if n > 500)}")
    for n, m in sizes[:8]:
        print(f"  {n:5d} {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

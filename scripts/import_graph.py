"""The import graph of ``reprlab/``: cycles, long modules, upward imports, what pulls in torch.

Every ``import reprlab...`` / ``from reprlab... import ...`` counts, at module level *and* inside
functions: a function-level import hides a circle from the interpreter but not from a reader,
and it still loads the module (and torch) when the function runs.

Usage: ``python scripts/import_graph.py`` (prints the report; exit 0). ``tests/test_architecture.py``
imports this file and asserts on the same analysis.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "reprlab"
MAX_LINES = 600  # the design target; the test allows a little slack (650)

#: Layers, lowest first. A module may import its own layer and the layers below it. The order
#: follows the package layout (docs/architecture.md): the plumbing every layer uses; the
#: run-directory readers of ``report/`` (they must stay free of torch, so they sit this low);
#: data, augmentation, losses and models; the typed config (it holds the augmentation sections
#: and checks a model's arguments, and nothing below imports it); evaluation (a method's kNN
#: monitor uses it); methods; the loop; studies; the command line. Names are module prefixes;
#: the longest matching prefix wins.
LAYERS: list[tuple[str, ...]] = [
    ("reprlab", "reprlab.errors", "reprlab.io", "reprlab.registry", "reprlab.result", "reprlab.schedules", "reprlab.runtime", "reprlab.distributed"),
    ("reprlab.report",),
    ("reprlab.data", "reprlab.augment", "reprlab.losses", "reprlab.models"),
    ("reprlab.config", "reprlab.config_keys"),
    ("reprlab.eval",),
    ("reprlab.methods",),
    ("reprlab.train",),
    ("reprlab.studies",),
    ("reprlab.commands", "reprlab.cli", "reprlab.__main__"),
]

#: third-party packages whose import costs seconds; tracked to keep the light paths light
HEAVY = ("torch", "torchvision")


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    lazy: bool  # inside a function (or class body method): runs only when called

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst} (line {self.line}{', in a function' if self.lazy else ''})"


@dataclass
class Graph:
    modules: dict[str, Path]  # module name -> file
    lines: dict[str, int]
    edges: list[Edge]  # reprlab -> reprlab
    external: dict[str, list[Edge]]  # module -> its imports of HEAVY packages (dst = package)

    def successors(self, name: str, lazy: bool = True) -> set[str]:
        return {e.dst for e in self.edges if e.src == name and (lazy or not e.lazy)}


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _functions(tree: ast.AST) -> set[int]:
    """ids of import nodes that sit inside a function body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    inside.add(id(sub))
    return inside


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def build(root: Path = ROOT) -> Graph:
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    modules = {module_name(p, root): p for p in files}
    lines: dict[str, int] = {}
    edges: list[Edge] = []
    external: dict[str, list[Edge]] = {}
    for name, path in modules.items():
        text = path.read_text()
        lines[name] = len(text.splitlines())
        tree = ast.parse(text, filename=str(path))
        lazy_ids = _functions(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from reprlab.x import y` imports reprlab.x.y when y is a module, else reprlab.x
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            lazy = id(node) in lazy_ids
            for t in targets:
                top = t.split(".")[0]
                if top in HEAVY:
                    external.setdefault(name, []).append(Edge(name, top, node.lineno, lazy))
                    continue
                dst = _resolve(t, modules) if top == "reprlab" else None
                # A module importing its own package (``reprlab.models.registry`` reading
                # ``reprlab.models.__path__``) adds nothing: Python imports every package above a
                # module before the module itself, so that edge is always there and no circle.
                if dst is not None and dst != name and not name.startswith(dst + "."):
                    edges.append(Edge(name, dst, node.lineno, lazy))
    # one edge per (src, dst, lazy): the first line is enough to find it
    seen: dict[tuple[str, str, bool], Edge] = {}
    for e in edges:
        seen.setdefault((e.src, e.dst, e.lazy), e)
    return Graph(modules, lines, sorted(seen.values(), key=lambda e: (e.src, e.dst, e.line)), external)


def cycles(g: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), counting lazy imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    succ = {m: sorted(g.successors(m)) for m in g.modules}

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(g.modules):
        if m not in index:
            visit(m)
    return sorted(out)


def layer_of(name: str) -> int:
    best, rank = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    return rank


def upward(g: Graph) -> list[Edge]:
    """Imports of a higher layer than the importer's own."""
    return [e for e in g.edges if layer_of(e.dst) > layer_of(e.src)]


def heavy_reach(g: Graph, start: str, lazy: bool = True) -> list[str]:
    """The import path from ``start`` to a module importing torch (empty: none), following
    module-level imports only, or function-level ones too (``lazy``)."""
    prev: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        m = queue.pop(0)
        if any(lazy or not e.lazy for e in g.external.get(m, [])):
            path = [m]
            while prev[path[-1]] is not None:
                path.append(prev[path[-1]])  # type: ignore[arg-type]
            return [*reversed(path), "torch"]
        for s in sorted(g.successors(m, lazy)):
            if s not in prev:
                prev[s] = m
                queue.append(s)
    return []


def long_modules(g: Graph, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    return sorted(((m, n) for m, n in g.lines.items() if n > limit), key=lambda x: -x[1])


def report(g: Graph) -> str:
    rel = {m: str(p.relative_to(ROOT.parent)) for m, p in g.modules.items()}
    out: list[str] = []
    cyc = cycles(g)
    out.append(f"import cycles (strongly connected components, function-level imports included): {len(cyc)}")
    for comp in cyc:
        out.append(f"  {{{', '.join(comp)}}}")
        for e in g.edges:
            if e.src in comp and e.dst in comp:
                out.append(f"    {e}")
    longs = long_modules(g)
    out.append(f"modules over {MAX_LINES} lines: {len(longs)}")
    out += [f"  {rel[m]}: {n}" for m, n in longs]
    out.append("five largest files:")
    out += [f"  {rel[m]}: {n}" for m, n in sorted(g.lines.items(), key=lambda x: -x[1])[:5]]
    up = upward(g)
    out.append(f"upward imports (against the layer order in this script): {len(up)}")
    out += [f"  {e}  [layer {layer_of(e.src)} -> {layer_of(e.dst)}]" for e in up]
    report_mods = [m for m in g.modules if m == "reprlab.report" or m.startswith("reprlab.report.")]
    reached = [(m, heavy_reach(g, m)) for m in report_mods]
    reached = [(m, p) for m, p in reached if p]
    out.append(f"report modules reaching torch (any import): {len(reached)}")
    out += [f"  {' -> '.join(p)}" for _, p in reached]
    return "\n".join(out)


if __name__ == "__main__":
    print(report(build()))

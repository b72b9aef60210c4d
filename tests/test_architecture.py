"""The layering rule of docs/architecture.md, checked on the source: a module imports only its own
package, or layers below it; no import cycle; imports at the top of modules.

Every ``import`` statement counts: at the top of a module, inside a function, and under
``if TYPE_CHECKING:`` (a type-only import still ties a module to the code it names). Only the
explicit imports are edges; that importing ``volkd.a.b`` first runs ``volkd/a/__init__.py`` is
not (Python handles a package importing its own submodules).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: The layers, lowest first: the one declaration of the order (docs/architecture.md shows it).
#: Names are the parts after ``volkd.``; ``""`` is the package itself (``volkd/__init__.py``).
#: Packages in one tuple share a rank: the base modules may import one another, while
#: ``report`` and ``inference`` stand side by side and neither imports the other.
LAYERS: list[tuple[str, ...]] = [
    ("", "errors", "atomic", "provenance", "paths", "locks"),
    ("data",),
    ("projection",),
    ("models",),
    ("distill",),
    ("train",),
    ("evaluate",),
    ("experiment",),
    ("report", "inference"),
    ("study",),
    ("cli",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line``; ``local`` when the import is inside a function."""

    source: str
    target: str
    line: int
    local: bool


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file of the ``volkd`` package under ``root``."""
    out = {}
    for path in sorted((root / "volkd").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The volkd modules an import statement names (``from p import m`` names ``p.m`` when that is a module)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            pkg = ".".join(base + ([node.module] if node.module else []))
        else:
            pkg = node.module or ""
        names = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in known else pkg for a in node.names]
    out = []
    for name in names:
        if name != "volkd" and not name.startswith("volkd."):
            continue
        while name not in known and "." in name:  # an attribute of a module: the module
            name = name.rsplit(".", 1)[0]
        out.append(name)
    return out


def import_graph(root: Path) -> list[Edge]:
    """Every import of a volkd module by a volkd module under ``root`` (self-imports left out)."""
    known = modules(root)
    edges = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, module, path.name == "__init__.py", known):
                    if target != module:
                        edges.append(Edge(module, target, node.lineno, id(node) in in_function))
    return edges


def layer(module: str) -> str:
    """The layer name of a dotted module: ``volkd.train.api`` → ``train``, ``volkd`` → ``""``."""
    return module.split(".")[1] if "." in module else ""


def upward_imports(edges: list[Edge]) -> list[str]:
    """Imports of a layer above (or beside) the importing module's, and modules of no declared layer."""
    bad = []
    for e in edges:
        src, dst = layer(e.source), layer(e.target)
        for name, m in ((src, e.source), (dst, e.target)):
            if name not in RANK:
                bad.append(f"{m}: layer {name!r} is not declared in tests/test_architecture.py LAYERS")
        if src in RANK and dst in RANK and src != dst and not (RANK[dst] < RANK[src] or RANK[src] == RANK[dst] == 0):
            bad.append(f"{e.source}:{e.line} imports {e.target} ({dst} is not below {src})")
    return sorted(set(bad))


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def uncommented_local_imports(edges: list[Edge], root: Path) -> list[str]:
    """Function-local volkd imports outside the CLI without a comment (on the line or the one above)."""
    known = modules(root)
    bad = []
    for e in edges:
        if not e.local or layer(e.source) == "cli":
            continue
        lines = known[e.source].read_text().splitlines()
        if "#" not in lines[e.line - 1] and not lines[e.line - 2].strip().startswith("#"):
            bad.append(f"{e.source}:{e.line} imports {e.target} inside a function without a comment saying why")
    return sorted(set(bad))


# ------------------------------------------------------------------------------- the rules
@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_graph(SRC)


def test_every_layer_is_declared_once() -> None:
    names = [n for group in LAYERS for n in group]
    assert len(names) == len(set(names))
    present = {layer(m) for m in modules(SRC)}
    assert present == set(names), f"undeclared: {present - set(names)}, gone: {set(names) - present}"


def test_no_module_imports_a_layer_above_it(edges) -> None:
    assert upward_imports(edges) == []


def test_no_import_cycle(edges) -> None:
    assert cycles(edges) == []


def test_local_imports_outside_the_cli_are_few_and_commented(edges) -> None:
    local = [e for e in edges if e.local and layer(e.source) != "cli"]
    assert len(local) <= 5, [f"{e.source}:{e.line}" for e in local]
    assert uncommented_local_imports(edges, SRC) == []


def test_the_graph_is_read_from_every_kind_of_import(edges) -> None:
    by = {(e.source, e.target): e for e in edges}
    assert not by[("volkd.experiment.runner", "volkd.experiment.executors")].local  # top of module
    assert ("volkd.cli.study_cmds", "volkd.study") in by and by[("volkd.cli.study_cmds", "volkd.study")].local
    assert ("volkd.data.importer", "volkd.data.ppmi") in by  # `from volkd.data import ppmi` names the module


def test_the_checks_catch_an_upward_import_a_cycle_and_an_uncommented_local_import(tmp_path) -> None:
    pkg = tmp_path / "volkd"
    for folder in ("data", "train"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from volkd.train import b\n")
    (pkg / "train" / "b.py").write_text("def f():\n    from volkd.data import a\n    return a\n")
    (pkg / "train" / "c.py").write_text("def g():\n    # lazy: the reason\n    from volkd.data import a\n")
    (pkg / "gui").mkdir()
    (pkg / "gui" / "__init__.py").write_text("from .. import train\n")
    edges = import_graph(tmp_path)
    assert upward_imports(edges) == [
        "volkd.data.a:3 imports volkd.train.b (train is not below data)",
        "volkd.gui: layer 'gui' is not declared in tests/test_architecture.py LAYERS",
    ]
    assert cycles(edges) == [["volkd.data.a", "volkd.train.b"]]
    assert uncommented_local_imports(edges, tmp_path) == [
        "volkd.train.b:2 imports volkd.data.a inside a function without a comment saying why"]

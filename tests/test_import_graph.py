"""Imports point one way: no cycle (imports inside functions included) and no layer imports upward.

The graph is read from the source with ``ast``, so a lazy import inside a method counts like a
top-level one. Layers, lowest first (``docs/ARCHITECTURE.md``): foundation → pure computation →
models and data → state → interventions → views → training / verification / report → facade and
CLI; the builders of the shipped artefacts (``prefaudit.build``) sit on top and nothing imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prefaudit"

# Module-name prefix -> layer (the longest matching prefix wins).
LAYERS = {
    "prefaudit.errors": 0,
    "prefaudit.ids": 0,
    "prefaudit.durable": 0,
    "prefaudit.stats": 1,
    "prefaudit.shaping": 1,
    "prefaudit.features.concepts": 1,
    "prefaudit.features.encoded": 1,
    "prefaudit.features.store": 1,
    "prefaudit.features.matrix": 1,
    "prefaudit.pairs": 2,
    "prefaudit.default_model": 2,
    "prefaudit.backbone": 2,
    "prefaudit.pair_layouts": 2,
    "prefaudit.devices": 2,
    "prefaudit.generation": 2,
    "prefaudit.features": 2,
    "prefaudit.features.shard_cache": 2,
    "prefaudit.features.distributed": 2,
    "prefaudit.demo": 2,
    "prefaudit.demo.recovery": 4,  # reads a session's groups: above the state
    "prefaudit.audit": 3,
    "prefaudit.interventions": 4,
    "prefaudit.views": 5,
    "prefaudit.training": 6,
    "prefaudit.verify": 6,
    "prefaudit.report": 6,
    "prefaudit.session": 7,
    "prefaudit.deprecated": 7,
    "prefaudit.cli": 7,
    "prefaudit.app": 7,
    "prefaudit": 7,
    "prefaudit.build": 8,
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def typing_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only: never executed)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and (
            (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        ):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def import_graph(root: Path, *, annotations: bool = True) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source (nearest existing module).

    ``annotations=False`` leaves out the imports under ``if TYPE_CHECKING:``: a part may name the
    core that owns it in its type hints without a runtime cycle, but never a higher layer.
    """
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = set() if annotations else typing_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # ``from pkg import sub`` imports the submodule; the package itself only for names
                # that are not submodules (parent packages are never edges, as for every import).
                subs = [f"{prefix}.{a.name}" for a in node.names]
                names = subs if all(s in files for s in subs) else [prefix, *subs]
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    deps.add(name)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def layer(mod: str) -> int:
    best = max((p for p in LAYERS if mod == p or mod.startswith(p + ".")), key=len)
    return LAYERS[best]


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph(PACKAGE, annotations=False)) == []


def test_type_hint_imports_count_for_layers_not_for_cycles(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text("from .part import Part\n")
    (pkg / "part.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .core import Core\n"
    )
    assert cycles(import_graph(pkg, annotations=False)) == []
    assert cycles(import_graph(pkg)) == [["pkg.core", "pkg.part"]]


def test_no_module_imports_a_higher_layer():
    graph = import_graph(PACKAGE)
    upward = sorted(
        f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
        for src, deps in graph.items()
        for dst in deps
        if layer(dst) > layer(src)
    )
    assert upward == []


def test_every_module_has_a_layer():
    # A new top-level module must be placed in LAYERS: only the package root may fall back on "prefaudit".
    placed = [p for p in LAYERS if p != "prefaudit"]
    unplaced = [
        m
        for m in import_graph(PACKAGE)
        if m != "prefaudit" and not any(m == p or m.startswith(p + ".") for p in placed)
    ]
    assert unplaced == []


def test_a_planted_cycle_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    # The way back hides inside a function, as the old session's facade imports did.
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n    from pkg import c\n")
    (pkg / "c.py").write_text("import os\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.b"] == {"pkg.a", "pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg import c\n")
    assert cycles(import_graph(pkg)) == []


@pytest.mark.parametrize(
    "module", ["prefaudit.session", "prefaudit.views.volcano", "prefaudit.interventions"]
)
def test_layers_cover_real_modules(module):
    assert module in import_graph(PACKAGE)

"""The house rule of docs/architecture.md, checked on the code: imports only run downward, no loops.

Every ``import temacli...`` and ``from temacli... import`` in the package counts, at module level or
inside a function (a lazy import is still a dependency). Layers, bottom to top:

    base (errors, progress, artifacts) -> data -> features | llm -> tags -> model
        -> evaluation -> training -> recommend | plot | recipe -> cli

A module may import its own package and anything in a lower layer; two packages of one layer
(features and llm; recommend, plot and recipe) do not import each other; the base modules may import
each other (without loops). Nothing but ``__main__`` imports ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "temacli"

LAYERS = [
    {"__init__", "errors", "progress", "artifacts"},
    {"data"},
    {"features", "llm"},
    {"tags"},
    {"model"},
    {"evaluation"},
    {"training"},
    {"recommend", "plot", "recipe"},
    {"cli"},
    {"__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("temacli"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("temacli"):
                out.add(mod)
                for a in node.names:  # `from temacli.data import split` imports a module
                    if (PKG.parent / (mod + "." + a.name).replace(".", "/")).with_suffix(".py").exists():
                        out.add(f"{mod}.{a.name}")
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    for name, path in modules.items():
        deps = set()
        for imp in _imports(path, name):
            # resolve to the longest known module name
            while imp not in modules and "." in imp:
                imp = imp.rsplit(".", 1)[0]
            if imp in modules and imp != name:
                deps.add(imp)
        graph[name] = deps
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer():
    tops = {_top(m) for m in _graph()}
    assert tops <= set(RANK), f"packages without a layer in this test and docs/architecture.md: {tops - set(RANK)}"


def test_imports_run_downward_only():
    bad = []
    for mod, deps in _graph().items():
        a = _top(mod)
        for dep in deps:
            b = _top(dep)
            if dep == "temacli" or a == b:
                continue
            if RANK[b] > RANK[a] or (RANK[b] == RANK[a] and RANK[a] > 0):
                bad.append(f"{mod} -> {dep}")
    assert not bad, "upward or sideways imports:\n  " + "\n  ".join(sorted(bad))


def test_no_import_loops():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    loops: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                loops.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not loops, "import loops:\n  " + "\n  ".join(loops)


def test_the_checker_sees_a_loop_and_an_upward_import(tmp_path):
    """The walker itself: a made-up package with a loop and an upward import is caught."""
    pkg = tmp_path / "temacli"
    (pkg / "data").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from temacli.data import b\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from temacli.data.a import x\n    from temacli.cli import main\n")
    (pkg / "cli" / "__init__.py").write_text("")
    globals()["PKG"] = pkg
    try:
        graph = _graph()
        assert graph["temacli.data.a"] == {"temacli.data", "temacli.data.b"}
        assert graph["temacli.data.b"] == {"temacli.data.a", "temacli.cli"}
        for test in (test_imports_run_downward_only, test_no_import_loops):
            try:
                test()
            except AssertionError:
                continue
            raise AssertionError(f"{test.__name__} did not fail on a bad package")
    finally:
        globals()["PKG"] = Path(__file__).resolve().parents[1] / "temacli"

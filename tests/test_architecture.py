"""The folder layout is the architecture: imports point one way (cli / api -> tasks / serving -> engine ->
scorers / adapters -> io), and no module imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hawk_cli"
LAYERS = {
    "cli": 4,
    "api": 4,
    "integrations": 4,
    "tasks": 3,
    "serving": 3,
    "engine": 2,
    "scorers": 1,
    "adapters": 1,
    "synthetic": 0,
    "io": 0,
    "builtin": 0,
}
SHARED = {"errors", "__init__", "__main__"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hawk_cli."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("hawk_cli."))
    return names - SHARED


def test_imports_point_one_way():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        part = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if part not in LAYERS:
            continue
        for imported in _imports(path):
            same_level_siblings = LAYERS[imported] == LAYERS[part] and imported != part and LAYERS[part] > 0
            if LAYERS.get(imported, -1) > LAYERS[part] or same_level_siblings:
                violations.append(f"{path.relative_to(PACKAGE)} imports hawk_cli.{imported}")
    assert violations == []


def test_engine_never_prints():
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in (PACKAGE / "engine").rglob("*.py")
        if any(
            isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print" for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert offenders == []


def test_a_violation_would_be_reported(tmp_path, monkeypatch):
    """Negative control: an io module importing the engine must be caught."""
    fake = tmp_path / "hawk_cli"
    (fake / "io").mkdir(parents=True)
    (fake / "io" / "bad.py").write_text("from hawk_cli.engine.generation import generate\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    try:
        test_imports_point_one_way()
    except AssertionError as failure:
        assert "io/bad.py imports hawk_cli.engine" in str(failure)
    else:
        raise AssertionError("the import-direction check did not fire")


def _module_graph(package: Path) -> dict[str, set[str]]:
    graph = {}
    for path in package.rglob("*.py"):
        name = ".".join(("hawk_cli",) + path.relative_to(package).with_suffix("").parts).removesuffix(".__init__")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hawk_cli"):
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("hawk_cli"))
        graph[name] = targets
    return {name: {t for t in targets if t in graph and t != name} for name, targets in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append(trail[trail.index(target) :] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_module_imports_one_that_imports_it_back():
    """Lazy imports included: a loop hidden inside a function is still a loop in the design."""
    graph = _module_graph(PACKAGE)
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    assert _cycles(graph) == []


def test_a_cycle_would_be_reported(tmp_path):
    """Negative control for the loop check."""
    fake = tmp_path / "hawk_cli"
    (fake / "serving").mkdir(parents=True)
    (fake / "serving" / "a.py").write_text("def f():\n    from hawk_cli.serving.b import g\n")
    (fake / "serving" / "b.py").write_text("from hawk_cli.serving.a import f\n")
    assert _cycles(_module_graph(fake)) == [["hawk_cli.serving.a", "hawk_cli.serving.b", "hawk_cli.serving.a"]]

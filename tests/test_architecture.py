"""The folder layout is the architecture: imports point one way (cli -> engine -> scorers/adapters -> io)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hawk_cli"
LAYERS = {"cli": 3, "engine": 2, "scorers": 1, "adapters": 1, "synthetic": 0, "io": 0, "builtin": 0}
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
        part = path.relative_to(PACKAGE).parts[0]
        if part not in LAYERS:
            continue
        for imported in _imports(path):
            same_level_siblings = LAYERS[imported] == LAYERS[part] and imported != part and LAYERS[part] > 0
            if LAYERS.get(imported, -1) > LAYERS[part] or same_level_siblings:
                violations.append(f"{path.relative_to(PACKAGE)} imports hawk_cli.{imported}")
    assert violations == []


def test_engine_never_prints():
    offenders = [str(p.relative_to(PACKAGE)) for p in (PACKAGE / "engine").rglob("*.py")
                 if any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"
                        for n in ast.walk(ast.parse(p.read_text())))]
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

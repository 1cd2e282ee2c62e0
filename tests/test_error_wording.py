"""Errors below the CLI name the problem in the library's words; the CLI words the same error with its flags."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from hawk_cli.cli.options import flag_for
from hawk_cli.engine.generation import GenerationSettings
from hawk_cli.errors import UsageError

PACKAGE = Path(__file__).resolve().parent.parent / "hawk_cli"
FLAG = re.compile(r"(^|[\s(`'\"])--[a-z]")
COMMAND = re.compile(r"'hawk [^']*('|$)")  # a whole hawk command suggested to run is the tool's own words


def _flag_mentions(package: Path) -> list[str]:
    found = []
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] == "cli" or path.name == "__main__.py":  # command-line faces
            continue
        for node in ast.walk(_with_parents(ast.parse(path.read_text()))):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            # docstrings (the parent is an Expr) may mention the CLI
            if FLAG.search(COMMAND.sub("", text)) and not isinstance(getattr(node, "parent", None), ast.Expr):
                found.append(f"{path.relative_to(package)}:{node.lineno}: {node.value[:60]}")
    return found


def _with_parents(tree: ast.AST) -> ast.AST:
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            child.parent = parent
    return tree


def test_no_message_below_the_cli_names_a_command_line_flag():
    assert _flag_mentions(PACKAGE) == []


def test_a_flag_in_an_engine_message_would_be_reported(tmp_path):
    """Negative control for the check above."""
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "bad.py").write_text('def f():\n    raise ValueError("--ratio must be positive")\n')
    assert _flag_mentions(tmp_path) == ["engine/bad.py:2: --ratio must be positive"]


def test_a_setting_error_reads_in_library_words_and_in_flag_words():
    with pytest.raises(UsageError) as caught:
        GenerationSettings(max_new_tokens=0)
    error = caught.value
    assert error.render() == "max_new_tokens must be at least 1, got 0. Use e.g. max_new_tokens=16."
    assert error.render(flag_for) == "--max-new-tokens must be at least 1, got 0. Use e.g. --max-new-tokens 16."
    assert error.setting == "max_new_tokens" and error.exit_code == 2


def test_settings_named_in_a_fix_are_worded_one_by_one():
    from hawk_cli.errors import from_library_error

    error = from_library_error(RuntimeError("CUDA out of memory"))
    assert error.render() == (
        "the device ran out of memory. Use a smaller batch_size, a higher ratio, or smaller images."
    )
    assert error.render(flag_for).endswith("Use a smaller --batch-size, a higher --ratio, or smaller images.")

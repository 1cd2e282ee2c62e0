"""`hawk --version` / `-V`: the package version on stdout, the same string the wheel's metadata carries."""

import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli
from packaging.version import Version

import hawk_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag_prints_the_package_version_and_exits_zero(capsys, flag):
    code, out, err = run_cli(capsys, flag)
    assert (code, out, err) == (0, f"hawk {hawk_cli.__version__}\n", "")


def test_version_wins_over_a_command_that_would_fail():
    """Eager: `hawk -V run` (no image, no question) still prints the version instead of a usage error."""
    from typer.testing import CliRunner

    from hawk_cli.cli.app import app

    result = CliRunner().invoke(app, ["-V", "run"])
    assert (result.exit_code, result.stdout) == (0, f"hawk {hawk_cli.__version__}\n")


def test_the_wheel_takes_its_version_from_the_same_attribute():
    """pyproject's dynamic version reads hawk_cli.__version__, so `hawk --version` and the wheel's name agree."""
    config = tomllib.loads(PYPROJECT.read_text())
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hawk_cli.__version__"}
    assert str(Version(hawk_cli.__version__)) == hawk_cli.__version__  # a normalised PEP 440 version


def test_a_misspelt_version_flag_is_a_one_line_usage_error(capsys):
    """Negative control: the output check above can fail; a near miss is refused with the right spelling."""
    code, out, err = run_cli(capsys, "--versio")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--version" in err and "Traceback" not in err

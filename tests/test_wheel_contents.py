"""The wheel allow-list (.ci/wheel_contents.py, run by CI on the built wheel) accepts a wheel made of the package and
its data files, and names every file that should not be there or is missing. Checked on small hand-made wheels."""

import importlib.util
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("wheel_contents", REPO / ".ci" / "wheel_contents.py")
wheel_contents = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wheel_contents)

META = "hawk_vlm-0.1.0.dist-info"
GOOD = [
    "hawk_cli/__init__.py",
    "hawk_cli/py.typed",
    "hawk_cli/engine/selection.py",
    "hawk_cli/adapters/qwen2_vl/adapter.py",
    "hawk_cli/builtin/model.safetensors",
    "hawk_cli/builtin/config.json",
    "hawk_cli/builtin/chat_template.jinja",
    "hawk_cli/builtin/MODEL_CARD.md",
    "hawk_cli/data/configs/qwen2.5-vl-7b.json",
    "hawk_cli/synthetic/data/optdigits_8x8.npz",
    "hawk_cli/synthetic/data/README.md",
    f"{META}/METADATA",
    f"{META}/WHEEL",
    f"{META}/RECORD",
    f"{META}/entry_points.txt",
    f"{META}/top_level.txt",
    f"{META}/licenses/LICENSE",
    f"{META}/licenses/NOTICE",
]


def _wheel(tmp_path, names):
    path = tmp_path / "hawk_vlm-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, "x")
    return path


def _tree(tmp_path, names):
    for name in names:
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_text("x")
    return tmp_path / "src" / "hawk_cli"


def test_a_wheel_of_package_and_data_files_passes(tmp_path, capsys):
    tree = _tree(tmp_path, [n for n in GOOD if n.startswith("hawk_cli/")] + ["hawk_cli/engine/__pycache__/s.pyc"])
    assert wheel_contents.main([str(_wheel(tmp_path, GOOD)), "--tree", str(tree)]) == 0
    out = capsys.readouterr().out
    assert f"{len(GOOD)} files" in out and "modules 3" in out and "licence files 2" in out


@pytest.mark.parametrize(
    "intruder",
    [
        "tests/test_cli_run.py",
        "hawk_cli/engine/__pycache__/selection.cpython-311.pyc",
        "docs/release.md",
        "training/train_builtin.py",
        "benchmarks/load_test.py",
        "hawk_cli/builtin/notes.txt",
        "sample_images/scene_1.png",
        "hawk_cli/engine/selection.py.orig",
        "conftest.py",
    ],
)
def test_any_file_outside_the_allow_list_is_named(tmp_path, capsys, intruder):
    assert wheel_contents.main([str(_wheel(tmp_path, [*GOOD, intruder]))]) == 1
    assert capsys.readouterr().err == f"wheel_contents: not allowed in the wheel: {intruder}\n"


@pytest.mark.parametrize("missing", [f"{META}/licenses/LICENSE", f"{META}/licenses/NOTICE", "hawk_cli/py.typed"])
def test_a_missing_licence_file_or_typing_marker_is_named(tmp_path, capsys, missing):
    assert wheel_contents.main([str(_wheel(tmp_path, [n for n in GOOD if n != missing]))]) == 1
    assert missing.split("/", 1)[-1] in capsys.readouterr().err


def test_a_package_file_the_build_left_out_is_named(tmp_path, capsys):
    """E.g. a new sub-package without __init__.py, which setuptools' package finder skips silently."""
    tree = _tree(tmp_path, [n for n in GOOD if n.startswith("hawk_cli/")] + ["hawk_cli/serving/stream.py"])
    assert wheel_contents.main([str(_wheel(tmp_path, GOOD)), "--tree", str(tree)]) == 1
    err = capsys.readouterr().err
    assert err == "wheel_contents: in the source package but not in the wheel: hawk_cli/serving/stream.py\n"


def test_the_source_package_listing_matches_the_wheel_paths():
    """The real package, as the check sees it: caches left out, every module and data file by its wheel path."""
    files = wheel_contents.package_files(REPO / "hawk_cli")
    assert "hawk_cli/__init__.py" in files and "hawk_cli/builtin/model.safetensors" in files
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    assert [f for f in files if wheel_contents.group_of(f) is None] == []

"""Property-based: whatever the request fields, ratios or image sizes, hawk answers or fails cleanly (one line,
exit 0/1/2), never with a traceback or an internal error."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import random_image

from hawk_cli.cli.app import main

PROFILE = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def world(tmp_path_factory, model_dir):
    folder = tmp_path_factory.mktemp("property")
    (folder / "model").symlink_to(model_dir)
    random_image(64, 48).save(folder / "ok.png")
    (folder / "bad.png").write_text("not an image")
    return folder


def _run(argv: list[str], stdin: str | None, capsys, monkeypatch) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exited:
        main(argv)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def _assert_clean(code: int, err: str) -> None:
    assert code in (0, 1, 2), err
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower() and "failed" not in line]
    assert all(line.startswith(("hawk: error: ", "hawk: warning: ")) for line in errors), err


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.sampled_from(["ok.png", "bad.png", "nope.png", ""]), max_size=3),
)
requests = st.dictionaries(
    st.sampled_from(["id", "images", "image", "question", "ratio", "max_new_tokens", "video", "fps", "extra"]),
    values,
    max_size=6,
)
lines = st.lists(st.one_of(requests.map(json.dumps), st.text(max_size=20)), min_size=1, max_size=3)


@PROFILE
@given(lines=lines)
def test_arbitrary_jsonl_requests_fail_cleanly(world, capsys, monkeypatch, lines):
    monkeypatch.chdir(world)
    code, out, err = _run(
        ["run", "-", "--model", str(world / "model"), "--max-new-tokens", "1"],
        "\n".join(lines) + "\n",
        capsys,
        monkeypatch,
    )
    _assert_clean(code, err)
    for line in out.splitlines():
        json.loads(line)  # every stdout line is a JSON record (answer or error)


@PROFILE
@given(
    ratio=st.one_of(st.floats(-2, 2), st.sampled_from(["abc", "", "nan", "1e-3", "0.9999"])),
    width=st.integers(1, 600),
    height=st.integers(1, 600),
)
def test_arbitrary_ratios_and_image_sizes_fail_cleanly(world, capsys, monkeypatch, tmp_path, ratio, width, height):
    path = tmp_path / f"img_{width}x{height}.png"
    random_image(width, height).save(path)
    code, _, err = _run(
        [
            "run",
            str(path),
            "what color is the circle ?",
            "--ratio",
            str(ratio),
            "--model",
            str(world / "model"),
            "--max-new-tokens",
            "1",
        ],
        None,
        capsys,
        monkeypatch,
    )
    _assert_clean(code, err)

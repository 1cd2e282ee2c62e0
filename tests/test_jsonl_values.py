"""JSONL values, checked per record: whatever a line holds, it becomes one request or one error record for that
line, the stream goes on, output is strict JSON, and stdin and --input read the same bytes identically."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from cli_helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import random_image

from hawk_cli.io.requests import BadLine, RequestSpec, decoded_lines, read_requests

FAST = settings(max_examples=300, deadline=None, derandomize=True)
SLOW = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

NUMBERS = st.one_of(
    st.integers(-10, 10),
    st.integers(-(10**40), 10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000]),
)
VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        NUMBERS,
        st.text(max_size=6),
        st.sampled_from(["a.png", "", "\\ud800", "https://x/a.png", "a\\u0000b"]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=6,
)
KEYS = st.sampled_from(["id", "images", "image", "video", "question", "ratio", "max_new_tokens", "fps", "x"])


def _literal(value) -> str:
    """JSON text for `value`, letting the bare literals above (NaN, 1e400, escapes) through unquoted."""
    if isinstance(value, str) and (value in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400") or value.isdigit()):
        return value
    if isinstance(value, str) and value.startswith(("\\u", "a\\u")):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


LINES = st.lists(
    st.one_of(
        st.dictionaries(KEYS, VALUES, max_size=6).map(lambda d: _literal(d).encode()),
        st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),  # any bytes, bad UTF-8
        st.sampled_from([b"", b"   ", b"\r", b"[" * 5000, b'{"question": "q", "images": ["a.png"]}']),
    ),
    min_size=1,
    max_size=6,
)


def _as_bytes(lines: list[bytes], bom: bool = False) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n"


def _strict(text: str):
    return json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))


@FAST
@given(lines=LINES, bom=st.booleans())
def test_every_non_blank_line_gives_exactly_one_item_with_its_number(lines, bom):
    data = _as_bytes(lines, bom)
    physical = data.split(b"\n")[:-1]
    expected = [
        number
        for number, line in enumerate(physical, start=1)
        if line.replace(b"\xef\xbb\xbf", b"", 1 if number == 1 else 0).strip() or not _decodes(line)
    ]
    items = list(read_requests(decoded_lines(io.BytesIO(data)), Path("/base")))
    assert [item.line for item in items] == expected
    for item in items:
        assert isinstance(item, (RequestSpec, BadLine))
        if isinstance(item, RequestSpec):
            _check_spec(item)
        else:
            assert "\n" not in item.error.render()
            json.dumps({"id": item.id}, allow_nan=False)  # the id it echoes is strict JSON


def _decodes(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_spec(spec: RequestSpec) -> None:
    """What a request that passed validation must hold (the ranges stated in docs/run-workloads.md)."""
    assert isinstance(spec.question, str) and spec.question.strip()
    assert spec.images or spec.video
    assert all("\x00" not in str(p) for p in spec.images + spec.video)
    assert spec.ratio is None or (math.isfinite(spec.ratio) and 0 <= spec.ratio < 1)
    assert spec.max_new_tokens is None or (isinstance(spec.max_new_tokens, int) and spec.max_new_tokens >= 1)
    assert spec.fps is None or 0.01 <= spec.fps <= 1000
    json.dumps({"id": spec.id}, allow_nan=False)


@pytest.mark.parametrize(
    "line, fragment",
    [
        ('{"id": NaN, "image": "a.png", "question": "q"}', "NaN is not a JSON value"),
        ('{"id": 1e400, "image": "a.png", "question": "q"}', "1e400 is out of the range of a number"),
        ('{"image": "a.png", "question": "q", "ratio": Infinity}', "Infinity is not a JSON value"),
        ('{"image": "a.png", "question": "q", "max_new_tokens": 1e400}', "out of the range of a number"),
        ('{"image": "a.png", "question": "\\ud800"}', "unpaired surrogate"),
        ("[" * 100000, "nested too deeply"),
        ('{"image": "a.png", "question": "q", "max_new_tokens": ' + "9" * 5000 + "}", "not valid JSON"),
        ('{"image": "a.png", "question": "q", "ratio": "0.5"}', "'ratio' must be a finite number"),
        ('{"image": "a.png", "question": "q", "max_new_tokens": 2.5}', "'max_new_tokens' must be an integer"),
        ('{"video": "c.gif", "question": "q", "fps": 1e9}', "fps must be a number from 0.01 to 1000"),
        ('{"images": [], "question": "q"}', "'images' must be a path or a list of paths"),
        ('{"image": "a\\u0000.png", "question": "q"}', "NUL character"),
        ('{"image": "http://host/a.png", "question": "q"}', "hawk reads local files only"),
    ],
)
def test_each_bad_value_is_an_error_record_naming_it(line, fragment):
    items = list(read_requests(decoded_lines(io.BytesIO(line.encode() + b"\n")), Path("/base")))
    assert len(items) == 1 and isinstance(items[0], BadLine), items
    assert fragment in items[0].error.render()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("jsonl-values")
    random_image(56, 56).save(path / "a.png")
    return path


def _stdin_with(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


@SLOW
@given(lines=LINES)
def test_the_stream_goes_on_and_every_output_line_is_strict_json(capsys, monkeypatch, model_dir, folder, lines):
    monkeypatch.chdir(folder)
    data = _as_bytes(lines)
    _stdin_with(monkeypatch, data)
    code, out, err = run_cli(capsys, "run", "-", "-m", model_dir, "--max-new-tokens", 1)
    assert code in (0, 1) and "Traceback" not in err and "internal error" not in err, err
    records = [_strict(line) for line in out.splitlines()]
    expected = len(list(read_requests(decoded_lines(io.BytesIO(data)), folder)))
    assert len(records) == expected
    assert [r["line"] for r in records] == sorted(r["line"] for r in records)


def test_stdin_and_input_file_decode_the_same_bytes_identically(capsys, monkeypatch, model_dir, folder):
    good = json.dumps({"id": "g", "image": str(folder / "a.png"), "question": "what color ?"}).encode()
    data = (
        b"\xef\xbb\xbf"
        + good
        + b"\r\n"
        + b'{"id": "bad", "question": "caf\xe9"}\n'
        + good.replace(b'"g"', b'"h"')
        + b"\n"
    )
    (folder / "mixed.jsonl").write_bytes(data)
    code_file, out_file, _ = run_cli(
        capsys, "run", "--input", folder / "mixed.jsonl", "-m", model_dir, "--max-new-tokens", 1
    )
    _stdin_with(monkeypatch, data)
    code_stdin, out_stdin, _ = run_cli(capsys, "run", "-", "-m", model_dir, "--max-new-tokens", 1)
    volatile = ("batch_timings",)
    from_file = [{k: v for k, v in _strict(line).items() if k not in volatile} for line in out_file.splitlines()]
    from_stdin = [{k: v for k, v in _strict(line).items() if k not in volatile} for line in out_stdin.splitlines()]
    assert code_file == code_stdin == 1
    assert from_file == from_stdin
    assert [r["id"] for r in from_file] == ["g", None, "h"]  # the BOM did not spoil line 1
    assert from_file[1]["error"] == ("line 2 is not valid UTF-8 (byte 0xe9 at byte 31). Save the requests as UTF-8.")

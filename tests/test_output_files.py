"""Output files: no overwrite without --force even when another writer gets there first, overlay names unique per
request, every output path distinct from the inputs and from each other (checked before the model loads), and a
full disk reported in one line with the old file intact."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli
from tiny_models import random_image

from hawk_cli.errors import InputError, ResourceError
from hawk_cli.io.atomic import atomic_path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("outputs")
    random_image(112, 112, 1).save(folder / "a.png")
    return folder


def test_a_file_appearing_during_the_write_is_not_overwritten(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(InputError, match="appeared while hawk was running"), atomic_path(target) as temporary:
        temporary.write_text("mine")
        target.write_text("theirs")  # another writer, after hawk's start-up check
    assert target.read_text() == "theirs" and os.listdir(tmp_path) == ["out.jsonl"]
    with atomic_path(target, overwrite=True) as temporary:  # negative control: --force replaces it
        temporary.write_text("mine")
    assert target.read_text() == "mine"


def _start_stream(model_dir, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hawk_cli",
            "run",
            "-",
            "-m",
            str(model_dir),
            "--output",
            str(output),
            "--max-new-tokens",
            "1",
        ],
        cwd=ROOT,
        env=ENV,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(process: subprocess.Popen, marker: str, timeout: float = 120) -> str:
    seen, deadline = "", time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline and process.poll() is None:
        seen += process.stderr.readline()
    assert marker in seen, seen
    return seen


def test_two_writers_without_force_never_overwrite_each_other(tmp_path, model_dir, files):
    """Both pass the start-up check (the file does not exist yet); the first to finish writes it, the second is
    refused at its rename and leaves no temp file."""
    output = tmp_path / "answers.jsonl"
    first, second = _start_stream(model_dir, output), _start_stream(model_dir, output)
    request = json.dumps({"id": "q", "image": str(files / "a.png"), "question": "what color ?"}) + "\n"
    for process in (first, second):
        process.stdin.write(request)
        process.stdin.flush()
    for process in (first, second):
        _wait_for(process, "hawk: note")  # loaded, past the existence check, streaming
    first.stdin.close()
    assert first.wait(timeout=120) == 0
    written = output.read_text()
    second.stdin.close()
    err = second.stderr.read()
    assert second.wait(timeout=120) == 2
    assert f"'{output}' appeared while hawk was running (another process wrote it); it was not overwritten" in err
    assert output.read_text() == written and json.loads(written)["id"] == "q"
    assert os.listdir(tmp_path) == ["answers.jsonl"]  # no temp file left by the refused writer


def test_overlay_names_are_unique_per_request(capsys, tmp_path, model_dir, files):
    ids = ["a", "A", "a", "x/y", "x_y", None, None, 7, "7", "out"]
    rows = []
    for request_id in ids:
        row = {"image": str(files / "a.png"), "question": "what color ?"}
        if request_id is not None:
            row["id"] = request_id
        rows.append(json.dumps(row))
    (tmp_path / "r.jsonl").write_text("\n".join(rows) + "\n")
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    code, _, err = run_cli(
        capsys,
        "run",
        "--input",
        tmp_path / "r.jsonl",
        "-m",
        model_dir,
        "--max-new-tokens",
        1,
        "--overlay",
        overlays,
        "--output",
        overlays / "out.png",
    )  # JSONL in a file named out.png
    assert code == 0, err
    records = [json.loads(line) for line in (overlays / "out.png").read_text().splitlines()]
    names = [Path(r["overlay"]).name for r in records]
    assert len({name.casefold() for name in names}) == len(ids)  # unique, even where case is ignored
    assert "out.png" not in names and names[-1] == "out-line10.png"  # the --output file's name was never taken
    assert sorted(p.name for p in overlays.iterdir()) == sorted(names + ["out.png"])
    assert names[0] == "a.png" and names[3] == "x_y.png"  # plain ids keep their own names


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["-o", "IMG", "--force"], "--output 'IMG' is also an input image; writing it would destroy the input"),
        (["--overlay", "IMG", "--force"], "--overlay 'IMG' is also an input image"),
        (["-o", "OUT", "--overlay", "OUT"], "--output and --overlay name the same file"),
        (["-o", "LINK", "--force"], "is also an input image"),
    ],
)
def test_outputs_must_differ_from_inputs_and_each_other_before_the_model_loads(
    capsys, tmp_path, files, extra, fragment
):
    link = tmp_path / "link.png"
    if not link.exists():
        link.symlink_to(files / "a.png")
    names = {"IMG": str(files / "a.png"), "OUT": str(tmp_path / "o.png"), "LINK": str(link)}
    argv = [names.get(a, a) for a in extra]
    # No model exists at that path: an error about the paths proves they were checked before loading.
    code, out, err = run_cli(capsys, "run", files / "a.png", "what color ?", "-m", tmp_path / "no-model", *argv)
    assert code == 2 and out == "" and fragment.replace("IMG", names["IMG"]) in err, err
    assert (files / "a.png").stat().st_size > 0


def test_output_same_as_the_input_jsonl_is_refused(capsys, tmp_path, files):
    requests = tmp_path / "r.jsonl"
    requests.write_text(json.dumps({"image": str(files / "a.png"), "question": "q ?"}) + "\n")
    code, _, err = run_cli(capsys, "run", "--input", requests, "-o", requests, "--force", "-m", tmp_path / "none")
    assert code == 2 and "is also the --input file" in err and requests.read_text().startswith("{")


def test_a_full_disk_in_the_write_is_one_error_and_the_old_file_stays(tmp_path):
    """Per-test wrapper: the writer inside atomic_path fails as a full disk makes it fail (ENOSPC)."""
    target = tmp_path / "w.safetensors"
    target.write_text("old")
    with (
        pytest.raises(ResourceError) as raised,
        atomic_path(target, overwrite=True) as temporary,
        open(temporary, "w") as handle,
    ):
        handle.write("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert raised.value.render() == (
        f"no space left to write '{target}' (No space left on device); the previous "
        "file, if any, is unchanged. Free some space, or write to another disk."
    )
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["w.safetensors"]


def test_stdout_on_a_full_device_is_one_line_and_exit_1(model_dir, files):
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "hawk_cli",
                "run",
                str(files / "a.png"),
                "what color ?",
                "-m",
                str(model_dir),
                "--max-new-tokens",
                "1",
                "--json",
            ],
            cwd=ROOT,
            env=ENV,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower() or "Exception" in line]
    assert done.returncode == 1, done.stderr
    assert errors == [
        "hawk: error: cannot write the output: No space left on device. Free some space, or write to another disk."
    ], done.stderr


def _cap_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_capped_disk_during_output_leaves_the_old_file_and_exits_1(tmp_path, model_dir, files):
    requests = tmp_path / "r.jsonl"
    requests.write_text(json.dumps({"image": str(files / "a.png"), "question": "what color ?"}) + "\n")
    output = tmp_path / "answers.jsonl"
    output.write_text("old answers\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hawk_cli",
            "run",
            "--input",
            str(requests),
            "-m",
            str(model_dir),
            "--output",
            str(output),
            "--force",
            "--max-new-tokens",
            "1",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_cap_file_size(200),
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("hawk: error")]
    assert done.returncode == 1, done.stderr
    assert errors == [
        f"hawk: error: no space left to write '{output}' (File too large); the previous file, if any, "
        "is unchanged. Free some space, or write to another disk."
    ], done.stderr
    assert "Traceback" not in done.stderr
    assert output.read_text() == "old answers\n" and sorted(os.listdir(tmp_path)) == ["answers.jsonl", "r.jsonl"]


def test_a_closed_output_pipe_ends_quietly_with_141(tmp_path, model_dir, files):
    requests = tmp_path / "r.jsonl"
    requests.write_text(
        "".join(
            json.dumps({"id": i, "image": str(files / "a.png"), "question": "what color ?"}) + "\n" for i in range(40)
        )
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hawk_cli",
            "run",
            "--input",
            str(requests),
            "-m",
            str(model_dir),
            "--max-new-tokens",
            "1",
        ],
        cwd=ROOT,
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert json.loads(process.stdout.readline())["id"] == 0
    process.stdout.close()  # the reader stops, as `| head -1` does
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert "hawk: error" not in err and "Traceback" not in err and "Exception ignored" not in err, err

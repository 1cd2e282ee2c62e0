"""Ctrl-C, SIGTERM and SIGHUP during long commands: exit 128 + the signal (130 for Ctrl-C), one line on stderr, no
partial output file, no worker left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _sigint_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_after_start(
    argv: list[str], marker: str, timeout: float = 240.0, extra_env: dict | None = None, signum: int = signal.SIGINT
) -> subprocess.CompletedProcess:
    """Start `python -m hawk_cli ARGV`, wait until stderr shows `marker` (the work has begun), then send `signum`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "hawk_cli", *argv],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # as from a terminal: a test run started in the background by a non-interactive shell has SIGINT ignored,
        # the child would inherit that (and rightly keep it), so Ctrl-C could not be tested
        preexec_fn=_sigint_as_at_a_terminal,
    )
    seen, deadline = "", time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline and process.poll() is None:
        seen += process.stderr.readline()
    assert marker in seen, f"never saw {marker!r}: {seen}"
    time.sleep(0.5)
    process.send_signal(signum)
    out, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, out, seen + err)


def test_ctrl_c_during_calibrate_leaves_no_file_and_exits_130(tmp_path):
    target = tmp_path / "heads.safetensors"
    result = _interrupt_after_start(
        ["calibrate", "builtin:400", "-o", str(target), "--device", "cpu"], marker="calibrating"
    )
    assert result.returncode == 130, result.stderr
    assert "hawk: error: interrupted" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file


def test_ctrl_c_during_bench_exits_130(tmp_path):
    result = _interrupt_after_start(
        ["bench", "--device", "cpu", "--repeats", "200", "--warmup", "0", "--json"], marker="hawk: note"
    )
    assert result.returncode == 130, result.stderr
    assert "hawk: error: interrupted" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_term_or_hup_during_calibrate_is_handled_like_ctrl_c(tmp_path, signum):
    target = tmp_path / "heads.safetensors"
    result = _interrupt_after_start(
        ["calibrate", "builtin:400", "-o", str(target), "--device", "cpu"], marker="calibrating", signum=signum
    )
    assert result.returncode == 128 + signum, result.stderr
    name = signal.Signals(signum).name
    errors = [line for line in result.stderr.splitlines() if line.startswith("hawk: error: ")]
    assert errors == [f"hawk: error: interrupted; no weights file was written ({name})"], result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file


@pytest.mark.parametrize(
    "prepare, signum",
    [
        ("threads", signal.SIGINT),
        ("processes", signal.SIGINT),
        ("threads", signal.SIGTERM),
        ("threads", signal.SIGHUP),
        ("processes", signal.SIGTERM),
    ],
)
def test_a_signal_during_a_jsonl_stream_leaves_no_file_and_no_workers(tmp_path, prepare, signum):
    sample = ROOT / "sample_images"
    lines = [json.loads(line) for line in (sample / "questions.jsonl").read_text().splitlines()]
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "".join(
            json.dumps(
                {
                    "id": i,
                    "image": str(sample / lines[i % len(lines)]["image"]),
                    "question": lines[i % len(lines)]["question"],
                }
            )
            + "\n"
            for i in range(2000)
        )
    )
    target = tmp_path / "answers.jsonl"
    result = _interrupt_after_start(
        ["run", "--input", str(requests), "--batch-size", "8", "--output", str(target), "--device", "cpu"],
        marker="hawk: note",
        extra_env={"HAWK_PREPARE": prepare, "HAWK_PREPARE_WORKERS": "2"},
        signum=signum,
    )
    assert result.returncode == 128 + signum, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("hawk: error: ")]
    assert len(errors) == 1 and errors[0].startswith("hawk: error: interrupted"), result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [requests]  # neither the answers file nor a temp file
    time.sleep(1.0)  # forked workers carry the parent's command line: none may outlive it
    left = subprocess.run(["pgrep", "-f", str(requests)], capture_output=True, text=True).stdout.split()
    assert left == [], left

"""Ctrl-C during long commands: exit 130, one line on stderr, no partial output file."""

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


def _interrupt_after_start(argv: list[str], marker: str, timeout: float = 240.0,
                           extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Start `python -m hawk_cli ARGV`, wait until stderr shows `marker` (the work has begun), then send SIGINT."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    process = subprocess.Popen([sys.executable, "-m", "hawk_cli", *argv], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = "", time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline and process.poll() is None:
        seen += process.stderr.readline()
    assert marker in seen, f"never saw {marker!r}: {seen}"
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, out, seen + err)


def test_ctrl_c_during_calibrate_leaves_no_file_and_exits_130(tmp_path):
    target = tmp_path / "heads.safetensors"
    result = _interrupt_after_start(["calibrate", "builtin:400", "-o", str(target), "--device", "cpu"],
                                    marker="calibrating")
    assert result.returncode == 130, result.stderr
    assert "hawk: error: interrupted" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file


def test_ctrl_c_during_bench_exits_130(tmp_path):
    result = _interrupt_after_start(["bench", "--device", "cpu", "--repeats", "200", "--warmup", "0", "--json"],
                                    marker="hawk: note")
    assert result.returncode == 130, result.stderr
    assert "hawk: error: interrupted" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("prepare", ["threads", "processes"])
def test_ctrl_c_during_a_jsonl_stream_exits_130_with_no_file_and_no_workers_left(tmp_path, prepare):
    sample = ROOT / "sample_images"
    lines = [json.loads(line) for line in (sample / "questions.jsonl").read_text().splitlines()]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"id": i, "image": str(sample / lines[i % len(lines)]["image"]),
                                            "question": lines[i % len(lines)]["question"]}) + "\n"
                                for i in range(2000)))
    target = tmp_path / "answers.jsonl"
    result = _interrupt_after_start(["run", "--input", str(requests), "--batch-size", "8", "--output", str(target),
                                     "--device", "cpu"], marker="hawk: note",
                                    extra_env={"HAWK_PREPARE": prepare, "HAWK_PREPARE_WORKERS": "2"})
    assert result.returncode == 130, result.stderr
    assert "hawk: error: interrupted" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [requests]  # neither the answers file nor a temp file
    time.sleep(1.0)  # forked workers carry the parent's command line: none may outlive it
    left = subprocess.run(["pgrep", "-f", str(requests)], capture_output=True, text=True).stdout.split()
    assert left == [], left

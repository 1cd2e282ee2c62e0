"""A hub id offline: with HF_HUB_OFFLINE=1 or without a network, a model that is not cached fails in one line within
seconds, naming the fix (a local folder); a cached one loads from the cache without touching the network."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli
from tiny_models import random_image

from hawk_cli.errors import ModelError
from hawk_cli.io.hub import resolve_hub_id

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: refused at once, as with no network


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("offline") / "a.png"
    random_image(56, 56).save(path)
    return path


def test_hub_id_with_hub_offline_fails_in_one_line_naming_a_local_folder(capsys, image):
    started = time.monotonic()
    code, out, err = run_cli(capsys, "run", image, "q ?", "-m", "Qwen/Qwen2.5-VL-7B-Instruct")  # conftest: offline
    assert time.monotonic() - started < 10
    errors = [line for line in err.splitlines() if "error" in line.lower() or "Retry" in line]
    assert code == 1 and out == "" and len(errors) == 1
    assert errors[0] == (
        "hawk: error: 'Qwen/Qwen2.5-VL-7B-Instruct' is a hub id, the hub is switched off (HF_HUB_OFFLINE=1), and "
        "the model is not in the local cache. Pass a local folder (--model ./Qwen2.5-VL-7B-Instruct): download it "
        "where there is a network ('hf download Qwen/Qwen2.5-VL-7B-Instruct' prints where it went) and copy that "
        "folder here."
    )


@pytest.fixture
def silent_server():
    """A local port that accepts connections and never answers: what a proxy or firewall swallowing the traffic
    looks like (a connection opens, no reply comes)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_no_network_is_found_within_seconds(monkeypatch, silent_server, kind):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE if kind == "refused" else silent_server)
    started = time.monotonic()
    with pytest.raises(ModelError, match="the hub cannot be reached \\(no network\\)"):
        resolve_hub_id("Qwen/Qwen2.5-VL-7B-Instruct")
    assert time.monotonic() - started < 5


def test_an_answering_hub_is_reachable(monkeypatch):
    """Negative control of the probe: a local HTTP server (answering 404 to everything) counts as a hub."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from hawk_cli.io.hub import hub_reachable

        assert hub_reachable(f"http://127.0.0.1:{server.server_address[1]}")
        assert not hub_reachable(UNREACHABLE)
    finally:
        server.shutdown()


def _env(**changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "PYTHONPATH": str(ROOT), **changes}


def test_no_network_end_to_end_is_one_line_without_retries(image):
    done = subprocess.run(
        [sys.executable, "-m", "hawk_cli", "run", str(image), "q ?", "-m", "Qwen/Qwen2.5-VL-7B-Instruct"],
        cwd=ROOT,
        env=_env(HF_ENDPOINT=UNREACHABLE),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Retrying" not in done.stderr and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("hawk: error: ")]
    assert len(errors) == 1 and "the hub cannot be reached (no network)" in errors[0], done.stderr


def test_a_cached_hub_model_loads_without_a_network(tmp_path, model_dir, image):
    """Negative control of the refusal: the same kind of id, present in the hub cache, answers offline."""
    repo = tmp_path / "hub" / "models--someone--tiny-qwen"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hawk_cli",
            "run",
            str(image),
            "what color ?",
            "-m",
            "someone/tiny-qwen",
            "--max-new-tokens",
            "1",
        ],
        cwd=ROOT,
        env=_env(HF_ENDPOINT=UNREACHABLE, HF_HUB_CACHE=str(tmp_path / "hub")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Retrying" not in done.stderr and "kept" in done.stderr

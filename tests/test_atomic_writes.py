"""Every write is atomic: a process killed mid-write leaves the old file intact."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hawk_cli.errors import InputError
from hawk_cli.io.atomic import atomic_write_text, check_writable

ROOT = Path(__file__).resolve().parent.parent


def test_killed_mid_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "weights.safetensors"
    target.write_text("old contents")
    script = textwrap.dedent(f"""
        import os, signal
        from hawk_cli.io.atomic import atomic_path
        with atomic_path({str(target)!r}) as temporary:
            with open(temporary, "w") as handle:
                handle.write("half of the new contents")
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert result.returncode == -9  # really killed inside the write
    assert target.read_text() == "old contents"


def test_completed_write_replaces_the_file(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old")
    atomic_write_text(target, "new", overwrite=True)
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.png"
    from hawk_cli.io.atomic import atomic_path

    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("partial")
        raise RuntimeError("renderer crashed")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path):
    target = tmp_path / "w.safetensors"
    target.write_text("keep me")
    with pytest.raises(InputError, match="already exists"):
        check_writable(target, force=False)
    assert check_writable(target, force=True) == target
    assert target.read_text() == "keep me"


def test_written_files_get_ordinary_permissions(tmp_path):
    fresh, existing = tmp_path / "fresh.png", tmp_path / "existing.png"
    existing.write_text("old")
    existing.chmod(0o640)
    atomic_write_text(fresh, "new")
    atomic_write_text(existing, "new", overwrite=True)
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask
    assert existing.stat().st_mode & 0o777 == 0o640

"""Every file hawk writes goes through here: a temp file in the same folder, fsync, then rename.

An interrupted or failed write leaves the old file (or nothing) in place, never half a file.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hawk_cli.errors import InputError, ResourceError


def check_writable(path: Path, force: bool) -> Path:
    """Refuse to overwrite without --force, and name an unwritable folder before any work is done."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"'{path}' already exists", "Pass {force} to overwrite it, or choose another path")
    if path.is_dir():
        raise InputError(f"'{path}' is a folder", "Give a file path")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ResourceError(f"folder '{folder}' does not exist", "Create it first or choose another output path")
    if not os.access(folder, os.W_OK):
        raise ResourceError(f"cannot write to folder '{folder}'", "Choose an output path you can write to")
    return path


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or what a plain open() would give (temp files are created 0600)."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically, on failure it vanishes."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except PermissionError as error:
        raise ResourceError(f"cannot write '{path}': {error.strerror}", "Choose an output path you can write to")
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))

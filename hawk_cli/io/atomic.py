"""Every file hawk writes goes through here: a temp file in the same folder, fsync, then rename.

An interrupted or failed write (a signal, a full disk) leaves the old file (or nothing) in place, never half a
file. Without `overwrite`, "no overwrite" holds at the moment the file appears, not only when the command
started: the temp file is hard-linked to the final name, which fails if anything has taken that name since
(another hawk, say); `check_writable` is the early, friendly version of the same rule.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


# Errors of a full or capped disk: the message names the space, not the file's permissions.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_failure(path: Path, error: OSError) -> ResourceError:
    """A failed write as one actionable line (the caller has left the old file in place)."""
    if error.errno in NO_SPACE:
        return ResourceError(
            f"no space left to write '{path}' ({error.strerror}); the previous file, if any, is unchanged",
            "Free some space, or write to another disk",
        )
    return ResourceError(f"cannot write '{path}': {error.strerror}", "Choose an output path you can write to")


def _publish(temporary: Path, path: Path, overwrite: bool) -> None:
    """Give the finished temp file its final name: replace (overwrite), or link-or-fail (no overwrite)."""
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise InputError(
            f"'{path}' appeared while hawk was running (another process wrote it); it was not overwritten",
            "Pass {force} to overwrite it, or choose another path",
        ) from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        # No hard links here (some network and FAT file systems): claim the name exclusively, then replace it.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise InputError(
                f"'{path}' appeared while hawk was running (another process wrote it); it was not overwritten",
                "Pass {force} to overwrite it, or choose another path",
            ) from None
        os.replace(temporary, path)


@contextmanager
def atomic_path(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it becomes `path` atomically, on failure it vanishes.

    `overwrite` False: an existing `path` is never replaced, even one created after the command started."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise write_failure(path, error) from None
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, _mode_for(path))
        _publish(temporary, path, overwrite)
    except OSError as error:
        raise write_failure(path, error) from None
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = False) -> None:
    with atomic_path(path, overwrite) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: Path, text: str, overwrite: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), overwrite)

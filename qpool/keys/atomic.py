"""Crash-safe file writes for secret material.

A reader (or a crash) must see either the old file or the complete new one, never a torn key file, and
the content must never exist on disk under a looser mode than the final one: the temp file is created
0600 next to the target (same filesystem, so the rename is atomic), fsynced, renamed, and the directory
entry fsynced.
"""

import os
import tempfile
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Persist a rename or creation inside *directory* (the file's own fsync doesn't cover its name)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write *data* to *path* via temp + fsync + rename; the final file has exactly *mode*."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode & 0o7777)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp_name)
        raise
    os.close(fd)
    try:
        os.replace(tmp_name, path)
    except BaseException:
        os.unlink(tmp_name)
        raise
    fsync_dir(path.parent)

"""Atomic JSON persistence for the event cursor and counter totals.

A crash at any point must leave either the old or the new file, never a torn one: write a temp
file in the same directory, fsync it, rename over the target, fsync the directory.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"), sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None if the file does not exist. Raises ValueError if it is corrupt."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def set_aside(path: Path, reason: str) -> Path:
    """Move an unusable state file out of the way (kept for inspection) and return its new path."""
    target = path.with_name(f"{path.name}.{reason}")
    os.replace(path, target)
    log.warning("moved %s to %s (%s); starting from the configured start_block", path, target, reason)
    return target

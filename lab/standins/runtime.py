"""Process plumbing shared by the stand-ins: logging, signal-driven shutdown, atomic files, file locks.

Kept separate so every client behaves the same under systemd: logs on stderr (journald), SIGTERM/SIGINT
lead to a clean exit 0 that releases locks, and no state file is ever left half-written (a SIGSTOP or a
power cut between write and rename leaves the old file intact).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

STOP = threading.Event()


class LockBusy(Exception):
    """Another process holds the lock."""


def log(component: str, level: str, msg: str, **fields: Any) -> None:
    """One logfmt-ish line on stderr: timestamp, level, component, message, key=value pairs."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    extra = "".join(f" {k}={json.dumps(v) if isinstance(v, str) and ' ' in v else v}" for k, v in fields.items())
    sys.stderr.write(f'time="{ts}Z" level={level} prefix={component} msg="{msg}"{extra}\n')
    sys.stderr.flush()


class RateLimitedLog:
    """Log the first occurrence and then at most once per interval, so a polling peer cannot flood journald."""

    def __init__(self, interval: float = 30.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, component: str, level: str, msg: str, **fields: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(msg, -1e9) < self._interval:
                return
            self._last[msg] = now
        log(component, level, msg, **fields)


def install_signal_handlers(component: str) -> None:
    """SIGTERM/SIGINT set the STOP event; main loops notice it within a fraction of a second."""

    def _handler(signum: int, _frame: Any) -> None:
        log(component, "info", "Received signal, shutting down", signal=signal.Signals(signum).name)
        STOP.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    """Create a directory (and parents) like the clients do for --datadir."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write via temp file + fsync + rename so readers see either the old or the new content."""
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any:
    """Parse a JSON file, or None when it does not exist (first start)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def flock_exclusive(path: Path, timeout: float) -> int:
    """Take an exclusive flock on ``path`` (created if missing) within ``timeout`` seconds; return the fd.

    bbolt (the real validator DB) and go-zond's datadir LOCK use flock with a timeout; emulating it with
    the same primitive means any other flock user on the host sees the same exclusion.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockBusy(str(path)) from None
            time.sleep(0.05)


def release_lock(fd: int | None) -> None:
    """Drop a lock taken by flock_exclusive (closing the fd releases it)."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def wait_stop(seconds: float) -> bool:
    """Sleep up to ``seconds`` unless shutdown was requested; return True when stopping."""
    return STOP.wait(max(0.0, seconds))


def release() -> str:
    """The stand-in build's release name ("" for the lab's default build): see lab/standins/build.py."""
    try:
        from . import release as build_release  # type: ignore[attr-defined]  # only in non-default builds
    except ImportError:
        return ""
    return str(build_release.RELEASE)


def with_release(version: str) -> str:
    """``version`` with the build's release appended (``v0.1.0+lab2``), unchanged for the default build."""
    tag = release()
    return f"{version}+{tag}" if tag else version

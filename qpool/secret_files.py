"""Private files that live exactly as long as one `qpool` command: the deploy key read from stack outputs.

Why not a plain temporary directory: the deploy key is root-equivalent on every host, and `qpool` used to
leave one copy per run in /tmp. Every directory made here is 0700, registered, and removed when the command
ends: on success, on an error, on Ctrl-C (KeyboardInterrupt unwinds through `finally`), on SIGTERM/SIGHUP
(turned into SystemExit so the same path runs) and, as a last resort, at interpreter exit. Only SIGKILL or a
power cut can leave one behind; the directory name says whose it is (`qpool-<stack>-…`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

_DIRS: list[Path] = []


def private_dir(prefix: str) -> Path:
    """A new 0700 directory that is removed at the end of the current command."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o700)
    _DIRS.append(path)
    return path


def write_private(directory: Path, name: str, content: str) -> Path:
    """Create `name` with mode 0600 before any byte is written (no window where it is world-readable)."""
    path = directory / name
    with open(path, "x", opener=lambda p, flags: os.open(p, flags, 0o600)) as fh:
        fh.write(content)
    return path


def remove_all() -> None:
    while _DIRS:
        shutil.rmtree(_DIRS.pop(), ignore_errors=True)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def command_lifetime() -> Iterator[None]:
    """Wrap one CLI command: whatever ends it, the private files made during it are gone afterwards."""
    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        remove_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


atexit.register(remove_all)

"""Progress reporting for long operations (lab build/boot/bootstrap, failover), for people and machines.

Why: `qpool lab up` and `qpool failover` have steps that take from seconds to minutes (an image build, a
cloud-init run, an epoch gate). A terminal user should see what is happening and how far it is; a log file or
CI output should get a few plain lines, not a redraw per second; a program should get one JSON object per event.

The long-running code keeps its plain `log: Callable[[str], None]` / `report` callbacks. It reports structured
progress through `progress_of(log)`: when `log` is a `Progress` the events reach it in full; when it is any
other callable (a test collecting lines, `print`) only messages and finished steps reach it, as text.

Three renderers, chosen by `make_progress`:
- `tty`: one live status line (redrawn in place, with a bar when the total is known) below the log lines;
- `plain`: messages and finished steps, plus an in-flight update at most every `PLAIN_EVERY` seconds;
- `json`: one JSON object per event (`{"event": "log"|"update"|"done", ...}`), flushed at once.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

MODES = ("auto", "tty", "plain", "json")
#: Non-terminal output: at most one in-flight update per step this often (log files stay short).
PLAIN_EVERY = 30.0
BAR_WIDTH = 24


class Progress:
    """A progress sink that is also a plain `log(str)` callback."""

    def __init__(self, mode: str, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in ("tty", "plain", "json"):
            raise ValueError(f"progress mode must be tty, plain or json, not {mode!r}")
        self.mode = mode
        self.stream = stream
        self.clock = clock
        self._lock = threading.Lock()
        self._live = ""  # the status line currently drawn (tty)
        self._last_plain: dict[str, float] = {}
        self._started: dict[str, float] = {}

    # -- the plain callback ------------------------------------------------------------------------------

    def __call__(self, message: str) -> None:
        self.log(message)

    def log(self, message: str) -> None:
        """A message line (kept in the scrollback)."""
        with self._lock:
            if self.mode == "json":
                self._json({"event": "log", "message": message})
                return
            self._clear_live()
            self.stream.write(message + "\n")
            self._redraw_live()
            self.stream.flush()

    # -- structured events -------------------------------------------------------------------------------

    def update(self, step: str, message: str, *, current: int | None = None, total: int | None = None,
               remaining: float | None = None, text: str | None = None) -> None:
        """An in-flight step: `current` of `total` units done, or `remaining` seconds left.

        `text`: the line a plain callback (not a Progress) receives for this update; by default it gets none."""
        with self._lock:
            now = self.clock()
            self._started.setdefault(step, now)
            if self.mode == "json":
                self._json({"event": "update", "step": step, "message": message, "current": current,
                            "total": total, "remaining": remaining, "elapsed": round(now - self._started[step], 1)})
            elif self.mode == "tty":
                self._clear_live()
                self._live = _status_line(step, message, current, total, remaining, now - self._started[step])
                self._redraw_live()
                self.stream.flush()
            else:
                last = self._last_plain.get(step)
                if last is None or now - last >= PLAIN_EVERY:
                    self._last_plain[step] = now
                    self.stream.write(_status_line(step, message, current, total, remaining,
                                                   now - self._started[step]) + "\n")
                    self.stream.flush()

    def done(self, step: str, message: str) -> None:
        """A finished step: its line stays (JSON events also carry the seconds since its first update)."""
        with self._lock:
            now = self.clock()
            elapsed = now - self._started.pop(step, now)
            self._last_plain.pop(step, None)
            if self.mode == "json":
                self._json({"event": "done", "step": step, "message": message, "elapsed": round(elapsed, 1)})
                return
            self._clear_live()
            self._live = ""
            self.stream.write(message + "\n")
            self.stream.flush()

    @property
    def live(self) -> bool:
        """Whether in-flight updates are drawn in place (worth sending often)."""
        return self.mode == "tty"

    def close(self) -> None:
        """Remove a leftover live line (e.g. on an error) so the next output starts on a clean line."""
        with self._lock:
            self._clear_live()
            self._live = ""
            self.stream.flush()

    # -- rendering ---------------------------------------------------------------------------------------

    def _json(self, doc: dict[str, Any]) -> None:
        doc = {"ts": round(time.time(), 3), **{k: v for k, v in doc.items() if v is not None}}
        self.stream.write(json.dumps(doc, sort_keys=True) + "\n")
        self.stream.flush()

    def _clear_live(self) -> None:
        """Erase the drawn status line (tty) so a log line can take its place."""
        if self.mode == "tty" and self._live:
            self.stream.write("\r\x1b[2K")

    def _redraw_live(self) -> None:
        if self.mode == "tty" and self._live:
            width = _terminal_width(self.stream)
            self.stream.write(self._live[: width - 1])


def _status_line(step: str, message: str, current: int | None, total: int | None, remaining: float | None,
                 elapsed: float) -> str:
    parts = [f"{step}: {message}"]
    if total:
        done = min(max(current or 0, 0), total)
        filled = round(BAR_WIDTH * done / total)
        parts.append(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}")
    elif current is not None:
        parts.append(str(current))
    if remaining is not None:
        parts.append(f"{max(remaining, 0):.0f}s left")
    parts.append(f"{elapsed:.0f}s")
    return "  ".join(parts)


def _terminal_width(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 120
    return columns if columns > 20 else 120  # a pty without a size reports 0


class _TextOnly:
    """`progress_of` for a plain callback: messages and finished steps as text, no in-flight updates."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log

    def __call__(self, message: str) -> None:
        self._log(message)

    def log(self, message: str) -> None:
        self._log(message)

    def update(self, step: str, message: str, *, text: str | None = None, **_: Any) -> None:
        if text is not None:
            self._log(text)

    def done(self, step: str, message: str) -> None:
        self._log(message)

    def close(self) -> None:
        pass

    @property
    def live(self) -> bool:
        return False


def progress_of(log: Callable[[str], None]) -> Progress | _TextOnly:
    """The structured-progress view of a `log` callback (see the module docstring)."""
    return log if isinstance(log, Progress) else _TextOnly(log)


def make_progress(mode: str = "auto", stream: TextIO | None = None) -> Progress:
    """`auto`: live lines on a terminal, plain lines otherwise; `$QPOOL_PROGRESS` overrides `auto`."""
    stream = stream or sys.stdout
    if mode == "auto":
        mode = os.environ.get("QPOOL_PROGRESS", "auto")
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r} (QPOOL_PROGRESS?)")
    if mode == "auto":
        mode = "tty" if _isatty(stream) and os.environ.get("TERM") != "dumb" else "plain"
    return Progress(mode, stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

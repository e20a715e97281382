"""Progress reporting: live lines on a terminal, few plain lines elsewhere, JSON events for programs."""

from __future__ import annotations

import io
import json
import os
import select

import pytest

from qpool.progress import PLAIN_EVERY, Progress, make_progress, progress_of


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TtyStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(progress: Progress, clock: FakeClock) -> None:
    """A short build: a log line, three package-count updates a second apart, the finished step."""
    progress.log("starting")
    for installed in (10, 20, 30):
        progress.update("image", "packages installed", current=installed, total=40)
        clock.now += 1
    progress.done("image", "base image ready")


def test_auto_mode_follows_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QPOOL_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert make_progress("auto", io.StringIO()).mode == "plain"
    assert make_progress("auto", TtyStringIO()).mode == "tty"
    monkeypatch.setenv("QPOOL_PROGRESS", "json")
    assert make_progress("auto", TtyStringIO()).mode == "json"
    monkeypatch.setenv("QPOOL_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="QPOOL_PROGRESS"):
        make_progress("auto", io.StringIO())


def test_auto_mode_on_a_real_pseudo_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QPOOL_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        progress = make_progress("auto", tty)
        assert progress.mode == "tty"
        progress.update("boot", "booting", current=1, total=3)
        progress.done("boot", "3 hosts booting")
    seen = ""
    while select.select([master], [], [], 0.5)[0]:
        try:
            seen += os.read(master, 4096).decode()
        except OSError:  # EIO: the terminal side is closed and everything was read
            break
    os.close(master)
    assert "[########" in seen and "1/3" in seen and "\x1b[2K" in seen and "3 hosts booting" in seen


def test_tty_redraws_one_status_line_and_keeps_log_lines() -> None:
    clock, out = FakeClock(), TtyStringIO()
    drive(Progress("tty", out, clock=clock), clock)
    text = out.getvalue()
    # every update erases the previous status line in place, none of them ends a line
    assert text.count("\r\x1b[2K") >= 3
    assert "30/40" in text and "[" + "#" * 18 + "." * 6 + "]" in text
    lines = text.split("\n")
    assert lines[0] == "starting"
    # the finished step replaces the live line and stays; nothing live is left behind
    assert lines[-2].endswith("base image ready") and lines[-1] == ""


def test_plain_output_is_quiet_and_has_no_control_characters() -> None:
    clock, out = FakeClock(), io.StringIO()
    drive(Progress("plain", out, clock=clock), clock)
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    # one in-flight line for the step (the others came within PLAIN_EVERY), then the finished step
    assert lines[0] == "starting" and lines[-1] == "base image ready"
    assert len(lines) == 3 and "10/40" in lines[1]


def test_plain_output_repeats_a_long_step_every_interval() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress("plain", out, clock=clock)
    for left in range(120, 0, -1):
        progress.update("epoch-gate", "waiting for epoch 7", remaining=left)
        clock.now += 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 120 // int(PLAIN_EVERY)
    assert lines[0].startswith("epoch-gate: waiting for epoch 7  120s left")


def test_json_mode_emits_one_object_per_event() -> None:
    clock, out = FakeClock(), io.StringIO()
    drive(Progress("json", out, clock=clock), clock)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["log", "update", "update", "update", "done"]
    assert events[0]["message"] == "starting"
    assert [(e["current"], e["total"]) for e in events[1:4]] == [(10, 40), (20, 40), (30, 40)]
    assert events[4] == {**events[4], "step": "image", "message": "base image ready", "elapsed": 3.0}
    assert all(isinstance(e["ts"], float) for e in events)


def test_progress_of_a_plain_callback_passes_text_only() -> None:
    lines: list[str] = []
    progress = progress_of(lines.append)
    progress.log("a line")
    progress.update("image", "packages", current=1, total=2)  # in-flight: not for plain callbacks
    progress.update("epoch-gate", "waiting", remaining=5, text="waiting 5s")  # unless it carries text
    progress.done("image", "done")
    assert lines == ["a line", "waiting 5s", "done"] and progress.live is False
    real = Progress("plain", io.StringIO())
    assert progress_of(real) is real



def test_image_build_counts_packages_from_the_rootfs_being_built(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The image build's progress: packages dpkg reports installed, out of the .debs apt has downloaded."""
    from lab.image import _package_counts

    assert _package_counts(tmp_path / "missing") == (0, 0)
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/cache/apt/archives").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(
        "Package: a\nStatus: install ok installed\n\nPackage: b\nStatus: install ok unpacked\n\n"
        "Package: c\nStatus: install ok installed\n")
    for name in ("a_1_amd64.deb", "b_1_amd64.deb", "c_1_amd64.deb", "d_1_amd64.deb", "partial"):
        (tmp_path / "var/cache/apt/archives" / name).write_bytes(b"")
    assert _package_counts(tmp_path) == (2, 4)

"""Run a program whose only password input is a terminal prompt, typing the answer for it.

Why: upstream qrysm ``deposit existing-seed`` has no ``--keystore-password-file``; it reads the
password twice with ``term.ReadPassword(stdin)``, which fails unless stdin is a terminal. Giving it a
pseudo-terminal lets us supply the generated password without it ever being in argv, in the
environment, or typed by a human. Echo is switched off on the pty before the child starts, so the
password is never reflected back into any buffer; the child gets its own session, so it cannot reach
the operator's real terminal.
"""

import contextlib
import os
import subprocess
import termios
from collections.abc import Sequence
from pathlib import Path


def run_with_typed_lines(
    argv: Sequence[str], lines: Sequence[str], *, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """Run *argv* with stdin on a fresh no-echo pty pre-loaded with *lines*; capture stdout/stderr."""
    master, slave = os.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~(termios.ECHO | termios.ECHONL)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        # Canonical mode buffers whole lines in the line discipline, so typing ahead is safe: each
        # ReadPassword call consumes exactly one line.
        os.write(master, "".join(f"{line}\n" for line in lines).encode("utf-8"))
        proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
        )
        os.close(slave)
        slave = -1
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return subprocess.CompletedProcess(list(argv), -9, out, err + b"\ntimed out")
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    finally:
        if slave != -1:
            with contextlib.suppress(OSError):
                os.close(slave)
        with contextlib.suppress(OSError):
            os.close(master)

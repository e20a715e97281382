"""Fixtures and the fault-matrix summary for the failover tests.

The helpers next to this file (detector, faults, matrix) are imported as plain modules, so this directory
is put on sys.path (the suite runs with --import-mode=importlib, which does not do that by itself).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matrix


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault matrix (scenario -> result, double signs, lost history) after the run."""
    if not matrix.ROWS:
        return
    terminalreporter.section("failover fault matrix (exactly one signer)")
    for line in matrix.table():
        terminalreporter.write_line(line)

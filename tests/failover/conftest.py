"""Fixtures and the fault-matrix summary for the failover tests (helpers: detector, faults, matrix)."""

from __future__ import annotations

import pytest

from . import matrix


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault matrix (scenario -> result, double signs, lost history) after the run."""
    if not matrix.ROWS:
        return
    terminalreporter.section("failover fault matrix (exactly one signer)")
    for line in matrix.table():
        terminalreporter.write_line(line)

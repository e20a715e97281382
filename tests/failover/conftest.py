"""Fixtures and the fault-matrix summary for the failover tests (helpers: detector, faults, matrix).

The matrix's rows are recorded where a row runs (matrix.add in matrix_lab.verify). Under pytest-xdist that is a
worker, whose module state the controller never sees, so each row also travels to the controller on its test's
report (`user_properties`), and the controller prints the table of every worker's rows at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import pytest

from . import matrix

_ROW_PROPERTY = "fault_matrix_row"
#: How many of this process's rows have been attached to a report already.
_attached = [0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the rows this test phase added to its report (a worker's report reaches the controller)."""
    outcome = yield
    report = outcome.get_result()
    for row in matrix.ROWS[_attached[0]:]:
        report.user_properties.append((_ROW_PROPERTY, asdict(row)))
    _attached[0] = len(matrix.ROWS)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """On the xdist controller: collect the rows workers sent (in-process runs already hold them)."""
    if getattr(report, "node", None) is None:  # not from an xdist worker
        return
    for name, value in report.user_properties:
        if name == _ROW_PROPERTY:
            matrix.add(matrix.Row(**value))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault matrix (scenario -> result, double signs, lost history) after the run."""
    if not matrix.ROWS:
        return
    terminalreporter.section("failover fault matrix (exactly one signer)")
    for line in matrix.table():
        terminalreporter.write_line(line)

"""The fault matrix: one row per failover scenario, printed at the end of the run by conftest.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    scenario: str
    result: str
    double_signs: int
    lost_history: int
    gate_covered: int = 0


ROWS: list[Row] = []


def add(row: Row) -> None:
    ROWS.append(row)


def table(rows: list[Row] | None = None) -> list[str]:
    rows = ROWS if rows is None else rows
    width = max([len(r.scenario) for r in rows] + [len("scenario")])
    rwidth = max([len(r.result) for r in rows] + [len("result")])
    head = f"{'scenario':<{width}}  {'result':<{rwidth}}  double-signs  lost-history  gate-covered"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.scenario:<{width}}  {r.result:<{rwidth}}  {r.double_signs:>12}  {r.lost_history:>12}  "
                     f"{r.gate_covered:>12}")
    return lines

"""Shared by the issue-12 guard tests: the operation context on test_operations_guards' fake SSH layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from qpool import operations as ops
from qpool.inventory import Inventory

from .test_operations_guards import BACKUP, PRIMARY, FakeClock, FakeSsh, running_status, stopped_status


def make_ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    """Primary signs, backup stopped and locked; Hetzner labels are not written (no API)."""
    monkeypatch.setenv("QPOOL_NO_PULUMI_CLI", "1")
    config = tmp_path / "Pulumi.t.yaml"
    config.write_text("config:\n  quantapool:validatorPairs:\n    - name: p1\n      active: primary\n")
    inv = Inventory(stack="t", hosts={h.name: h for h in (PRIMARY, BACKUP)}, ssh_user="u",
                    ssh_key=tmp_path / "k", known_hosts=tmp_path / "kh", config_file=config)
    clock = FakeClock(1_000_000.0)
    context = ops.Context(inventory=inv, config_file=config, report=lambda _m: None, clock=clock,
                          sleep=clock.sleep, journal_dir=tmp_path / "state")
    context.ssh = FakeSsh({PRIMARY.name: running_status(), BACKUP.name: stopped_status()})  # type: ignore[assignment]
    monkeypatch.setattr(ops, "_label_active", lambda _c, _s, _t: False)
    return context


def fake(ctx: ops.Context) -> FakeSsh:
    return ctx.ssh  # type: ignore[return-value]

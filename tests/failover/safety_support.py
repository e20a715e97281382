"""Shared by the issue-12 guard tests: the operation context on test_operations_guards' fake SSH layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from qpool import operations as ops

from .test_operations_guards import FakeSsh, build_ctx


def make_ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    """test_operations_guards' context (primary signs, backup stopped and locked); Hetzner labels are not
    written (no API)."""
    context = build_ctx(tmp_path, monkeypatch)
    monkeypatch.setattr(ops, "_label_active", lambda _c, _s, _t: False)
    return context


def fake(ctx: ops.Context) -> FakeSsh:
    return ctx.ssh  # type: ignore[return-value]

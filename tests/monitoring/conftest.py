"""Fixtures for the monitoring tests (helpers live in support.py)."""

from __future__ import annotations

import pytest

from core.config import StackConfig

from .support import variant


@pytest.fixture
def full_cfg() -> StackConfig:
    """testnet with every alert rendered (pool watched and not expected paused) and every receiver."""
    return variant(expect_paused=False)

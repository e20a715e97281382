"""Fixtures for the host-file tests (helpers live in support.py)."""

from __future__ import annotations

import pytest

from .support import VARIANTS, Rendered, render_variant


@pytest.fixture(scope="session", params=VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}-{'volume' if v[2] else 'lab'}")
def variant(request: pytest.FixtureRequest) -> Rendered:
    return render_variant(*request.param)


@pytest.fixture(scope="session")
def all_variants() -> list[Rendered]:
    return [render_variant(*v) for v in VARIANTS]

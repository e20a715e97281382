"""Shared fixtures: stack configs from the repo's stack files and an isolated Pulumi mocks runner."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import raw_config_from_stack_file
from qpool.program import ProgramRun, run_in_mocks, run_program

REPO = Path(__file__).resolve().parent.parent


def stack_raw(name: str) -> dict[str, Any]:
    return raw_config_from_stack_file(yaml.safe_load((REPO / f"Pulumi.{name}.yaml").read_text()))


@pytest.fixture
def testnet_raw() -> dict[str, Any]:
    return copy.deepcopy(stack_raw("testnet"))


@pytest.fixture
def mainnet_raw() -> dict[str, Any]:
    return copy.deepcopy(stack_raw("mainnet"))


@pytest.fixture
def pulumi_mocks() -> Callable[..., ProgramRun]:
    """Function-scoped: every call gets a fresh event loop, root resource and config (see qpool.program)."""

    def run(body: Callable[[], Any], raw: dict[str, Any], secrets: dict[str, str] | None = None,
            stack: str = "testnet") -> ProgramRun:
        return run_in_mocks(stack, raw, secrets, body)

    return run


@pytest.fixture
def run_stack() -> Callable[..., ProgramRun]:
    def run(raw: dict[str, Any], secrets: dict[str, str] | None = None, stack: str = "testnet") -> ProgramRun:
        return run_program(stack, raw, secrets)

    return run

"""Shared fixtures: stack configs, an isolated Pulumi mocks runner, and isolation from the machine's state.

Two things every test gets (autouse):
- `QPOOL_STACK_DIR` points at a session directory of stack files: the repo's `Pulumi.testnet.yaml` as is, and
  its `Pulumi.mainnet.yaml` with test-only pins and bootstrap records filled in. The committed mainnet file
  does not validate on purpose (the real checksums are not known yet: `qpool validate --stack mainnet` lists
  what an operator must fill); everything else about it is exercised unchanged.
- `QPOOL_LAB_ROOT` points at the test's own empty directory, so no test reads or writes the machine's lab
  state (/var/lib/quantapool-lab): a lab someone runs on the machine cannot change a test's outcome.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.pulumi_config import STACK_DIR_ENV
from core.config import UNSET_SHA256, raw_config_from_stack_file
from qpool.inventory import LAB_ROOT_ENV
from qpool.program import ProgramRun, run_in_mocks, run_program

REPO = Path(__file__).resolve().parent.parent
#: Test-only values that make the committed mainnet file deployable in tests; never real pins or records.
TEST_BOOTSTRAP_NODE = "qnr:test-only-bootstrap-record"


def pin_for_tests(label: str) -> str:
    """A well-formed, obviously test-only sha256 (of the label), never the all-zero marker."""
    return hashlib.sha256(f"quantapool test-only pin: {label}".encode()).hexdigest()


def filled_mainnet_doc() -> dict[str, Any]:
    """The repo's mainnet stack file with the values an operator fills before the first `up` (test-only)."""
    doc = yaml.safe_load((REPO / "Pulumi.mainnet.yaml").read_text())
    clients = doc["config"]["quantapool:clients"]
    for role in ("execution", "beacon", "validator"):
        if clients[role]["sha256"] == UNSET_SHA256:
            clients[role]["sha256"] = pin_for_tests(role)
    for nf in clients.get("networkFiles", []):
        if nf["sha256"] == UNSET_SHA256:
            nf["sha256"] = pin_for_tests(nf["name"])
    clients["beaconBootstrapNodes"] = clients.get("beaconBootstrapNodes") or [TEST_BOOTSTRAP_NODE]
    return doc


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stacks")
    (root / "Pulumi.testnet.yaml").write_bytes((REPO / "Pulumi.testnet.yaml").read_bytes())
    (root / "Pulumi.mainnet.yaml").write_text(yaml.safe_dump(filled_mainnet_doc(), sort_keys=False))
    return root


@pytest.fixture(scope="session", autouse=True)
def _test_stack_dir(stack_dir: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STACK_DIR_ENV, str(stack_dir))
        yield


@pytest.fixture(autouse=True)
def _own_lab_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path_factory.mktemp("lab-root")
    monkeypatch.setenv(LAB_ROOT_ENV, str(root))
    return root


def stack_raw(name: str) -> dict[str, Any]:
    """Raw config of a stack as the tests see it (mainnet: with the test-only fills, see the module doc)."""
    if name == "mainnet":
        return raw_config_from_stack_file(filled_mainnet_doc())
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

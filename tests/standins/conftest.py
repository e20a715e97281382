"""Fixtures for the stand-in client tests: built executables, a process runner, a running stack, keys.

The reusable process/port/HTTP helpers live in ``lab.standins.harness``; this file only wires them into
pytest so every test gets fresh directories and all its processes are stopped at teardown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.standins.build import build
from lab.standins.harness import SLOT_SECONDS, SLOTS_PER_EPOCH, Runner, Stack, start_stack
from lab.standins.keystore_fixture import make_keystore


@pytest.fixture(scope="session")
def bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The built single-file executables."""
    return build(tmp_path_factory.mktemp("standin-bins"))


@pytest.fixture(scope="session")
def base_env() -> dict[str, str]:
    """Environment for the stand-ins: short slots, loopback-only P2P, no sync delay."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QP_STANDIN_")}
    env.update({
        "QP_STANDIN_SLOT_SECONDS": SLOT_SECONDS,
        "QP_STANDIN_SLOTS_PER_EPOCH": SLOTS_PER_EPOCH,
        "QP_STANDIN_SYNC_SECONDS": "0",
        "QP_STANDIN_P2P_BIND": "127.0.0.1",
        "HOME": "/nonexistent-standin-home",
    })
    return env


@pytest.fixture
def runner(bins: dict[str, Path], base_env: dict[str, str], tmp_path: Path) -> Iterator[Runner]:
    """A per-test process runner that stops everything it started."""
    r = Runner(bins, tmp_path, base_env)
    yield r
    r.cleanup()


@pytest.fixture
def stack(runner: Runner, tmp_path: Path) -> Stack:
    """Execution + beacon sharing one JWT secret, synced."""
    return start_stack(runner, tmp_path)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    """Two keystores (derivation indices 0 and 1) and the account/wallet password files."""
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    pubkeys = []
    for index in range(2):
        ks = make_keystore("account-pass", index=index)
        (keys_dir / f"keystore-m_12381_3600_{index}_0_0-{index}.json").write_text(json.dumps(ks))
        pubkeys.append("0x" + ks["pubkey"])
    (tmp_path / "account.pass").write_text("account-pass\n")
    (tmp_path / "wallet.pass").write_text("wallet-pass\n")
    return {"dir": keys_dir, "pubkeys": pubkeys, "account_pw": tmp_path / "account.pass",
            "wallet_pw": tmp_path / "wallet.pass"}

"""Fixtures for the key tests: the deposit-CLI stand-in, a leak guard, a small key directory.

The support helpers live in the tests.support package (shared with other suites).
"""

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from qpool.keys import seal as seal_mod
from tests.support import leakguard

SUPPORT = Path(__file__).resolve().parents[1] / "support"
STANDIN = SUPPORT / "standin_deposit_cli.py"
# Tests seal with a cheap KDF through the parameter; the production default stays 2**17.
FAST_N = 2**10


@pytest.fixture(scope="session")
def leakguard_mod() -> ModuleType:
    return leakguard


@pytest.fixture
def guard(leakguard_mod: ModuleType):
    return leakguard_mod.LeakGuard()


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The stand-in CLI, runnable: this interpreter (which has `cryptography`) first on PATH."""
    assert os.access(STANDIN, os.X_OK), "tests/support/standin_deposit_cli.py must be executable"
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("STANDIN_DEPOSIT_ARGV_LOG", str(tmp_path / "standin-argv.jsonl"))
    for knob in ("STANDIN_DEPOSIT_MODE", "STANDIN_DEPOSIT_FAIL", "QPOOL_DEPOSIT_CLI"):
        monkeypatch.delenv(knob, raising=False)
    yield STANDIN


@pytest.fixture
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> int:
    """Make the CLI (which always uses the module defaults) seal and accept a cheap KDF."""
    monkeypatch.setattr(seal_mod, "DEFAULT_KDF_N", FAST_N)
    monkeypatch.setattr(seal_mod, "MIN_KDF_N", FAST_N)
    return FAST_N


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """A small directory shaped like generated keys, with distinct modes and a subdirectory."""
    src = tmp_path / "keys"
    (src / "sub").mkdir(parents=True)
    files = {
        "keystore-m_12381_238_0_0_0-1.json": (0o600, b'{"crypto": {"cipher": {"message": "00ff"}}}'),
        "password.txt": (0o400, b"correct horse battery staple"),
        "sub/deposit_data-1.json": (0o644, b"[]"),
        "empty": (0o640, b""),
    }
    for name, (mode, content) in files.items():
        path = src / name
        path.write_bytes(content)
        path.chmod(mode)
    return src

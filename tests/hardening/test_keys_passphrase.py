"""The key bundle's passphrase may stay out of the stack (issue 13): CI previews then cannot read it.

`pulumi up` takes it from $QPOOL_KEYS_PASSPHRASE; a preview without it shows the key imports with unknown
input (never as deleted); a real run without it stops before any resource; validation accepts a bundle
without a stack passphrase (with a warning) and refuses a passphrase without a bundle.
"""

from __future__ import annotations

import base64

import pulumi
import pytest
from pulumi.runtime import rpc

from core.config import KEYS_PASSPHRASE_ENV, ConfigError, load_stack_config, warnings_for
from qpool.keys.seal import seal_files
from qpool.program import run_program
from tests.conftest import stack_raw

PASSPHRASE = "passphrase kept out of the stack 42"
CANARY = b"keystore-canary-out-of-stack"


def _bundle_only() -> dict[str, str]:
    members = {"keystore-m_12381_238_0_0_0-1.json": (0o600, b'{"pubkey": "ab", "c": "keystore-canary-out-of-stack"}'),
               "password.txt": (0o600, b"pw-canary")}
    return {"validatorKeys": base64.b64encode(seal_files(members, PASSPHRASE, kdf_n=2**17)).decode()}


def _imports(run) -> list:  # type: ignore[no-untyped-def]
    return [c for c in run.of_type("command:remote:Command") if c.name.endswith("-import-keys")]


def test_up_reads_the_passphrase_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYS_PASSPHRASE_ENV, PASSPHRASE)
    run = run_program("testnet", stack_raw("testnet"), _bundle_only())
    imports = _imports(run)
    assert len(imports) == 2
    for cmd in imports:
        assert cmd.input_is_secret("stdin")
        assert CANARY in base64.b64decode(cmd.plain_inputs()["stdin"])


def test_up_without_any_passphrase_stops_before_any_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_PASSPHRASE_ENV, raising=False)
    with pytest.raises(Exception, match=f"not in the stack and {KEYS_PASSPHRASE_ENV} is not set"):
        run_program("testnet", stack_raw("testnet"), _bundle_only())


def test_preview_without_the_passphrase_shows_imports_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr(pulumi.runtime, "is_dry_run", lambda: True)
    run = run_program("testnet", stack_raw("testnet"), _bundle_only())
    imports = _imports(run)
    assert len(imports) == 2  # registered, so a preview never shows them as deleted
    for cmd in imports:
        assert cmd.plain_inputs().get("stdin") in (None, rpc.UNKNOWN)


def test_validation_bundle_without_stack_passphrase_is_a_warning(testnet_raw) -> None:  # type: ignore[no-untyped-def]
    cfg = load_stack_config(testnet_raw, secrets_present={"validatorKeys"})
    assert any(KEYS_PASSPHRASE_ENV in w and "CI previews cannot read it" in w for w in warnings_for(cfg))
    with pytest.raises(ConfigError, match="validatorKeysPassphrase: is set but validatorKeys is not"):
        load_stack_config(testnet_raw, secrets_present={"validatorKeysPassphrase"})

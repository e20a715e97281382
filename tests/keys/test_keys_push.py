"""`qpool keys push` on a fake SSH layer: every host checked before any key leaves, each pair's own keys only.

The fake answers like qp-validator-ctl (tests/failover/test_operations_guards.FakeSsh) and records what was
streamed to `qp-import-keys`. The leak guard checks that with this delivery no key material reaches plan,
render or qpool's own output.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cloud_init.key_host import IMPORT_KEYS
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.keys.push import push_keys
from qpool.keys.seal import seal_files
from qpool.remote import RemoteResult
from tests.failover.test_operations_guards import BACKUP, PRIMARY, FakeSsh, build_ctx, running_status, stopped_status
from tests.support.leakguard import LeakGuard

PASSPHRASE = "push passphrase for tests 9"
KEYSTORE = json.dumps({"pubkey": "ab" * 24, "crypto": {"canary": "push-keystore-canary-1f2e"}}).encode()
PASSWORD = b"push-password-canary-77"
SEED = b"push-seed-canary-0c0c"


def _bundle() -> bytes:
    return seal_files({"keystore-m_12381_238_0_0_0-1.json": (0o600, KEYSTORE), "password.txt": (0o600, PASSWORD),
                       "seed.txt": (0o600, SEED)}, PASSPHRASE, kdf_n=2**17)


class PushSsh(FakeSsh):
    """FakeSsh plus `run` for qp-import-keys; `fail_on` makes one host's import fail."""

    def __init__(self, statuses: dict[str, dict[str, Any] | None]) -> None:
        super().__init__(statuses)
        self.imported: dict[str, bytes] = {}
        self.fail_on: str | None = None

    def run(self, host: HostRecord, command: str, *, input: bytes | None = None, timeout: float = 120) -> RemoteResult:
        assert command == f"sudo {IMPORT_KEYS}", command
        assert input is not None
        self.calls.append((host.name, "import-keys"))
        if host.name == self.fail_on:
            return RemoteResult(1, b"", b"qp-import-keys: refusing: validator unit is active\n")
        self.imported[host.name] = input
        return RemoteResult(0, b"qp-import-keys: imported 1 keystore(s)\n", b"")


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    context = build_ctx(tmp_path, monkeypatch)
    context.ssh = PushSsh({PRIMARY.name: stopped_status(), BACKUP.name: stopped_status()})
    context.messages = []
    context.report = context.messages.append
    return context


def _members(tar: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_both_locked_hosts_get_exactly_the_pairs_keys(ctx: Any) -> None:
    result = push_keys(ctx, _bundle(), PASSPHRASE, ["p1"])
    assert result["hosts"] == [PRIMARY.name, BACKUP.name]
    for name in (PRIMARY.name, BACKUP.name):
        members = _members(ctx.ssh.imported[name])
        assert members == {"keystore-m_12381_238_0_0_0-1.json": KEYSTORE, "keystore-password.txt": PASSWORD}
    assert ctx.ssh.oplock == {}, "operation locks left behind"
    assert "validators still LOCKED" in ctx.messages[-1]


def test_an_unlocked_host_stops_the_push_before_any_key_is_sent(ctx: Any) -> None:
    ctx.ssh.statuses[BACKUP.name] = running_status()
    with pytest.raises(QpoolError, match=f"refusing: {BACKUP.name}'s validator is not stopped and LOCKED"):
        push_keys(ctx, _bundle(), PASSPHRASE, ["p1"])
    assert ctx.ssh.imported == {} and not [c for c in ctx.ssh.calls if c[1] == "import-keys"]
    assert ctx.ssh.oplock == {}


def test_a_wrong_passphrase_contacts_no_host(ctx: Any) -> None:
    with pytest.raises(QpoolError, match=r"cannot open the key bundle: .*nothing was sent"):
        push_keys(ctx, _bundle(), "not the passphrase", ["p1"])
    assert ctx.ssh.calls == []


def test_an_unknown_pair_contacts_no_host(ctx: Any) -> None:
    with pytest.raises(QpoolError, match="has no pair p9"):
        push_keys(ctx, _bundle(), PASSPHRASE, ["p9"])
    assert ctx.ssh.calls == []


def test_a_failed_import_names_what_was_done_and_releases_the_locks(ctx: Any) -> None:
    ctx.ssh.fail_on = BACKUP.name
    with pytest.raises(QpoolError) as raised:
        push_keys(ctx, _bundle(), PASSPHRASE, ["p1"])
    message = str(raised.value)
    assert message.startswith(f"{BACKUP.name}: key import refused or failed (qp-import-keys: refusing")
    assert f"imported so far: {PRIMARY.name}" in message and "re-run `qpool keys push`" in message
    assert ctx.ssh.oplock == {}


def test_no_key_material_in_plan_render_or_output_with_push_delivery(ctx: Any, tmp_path: Path) -> None:
    from qpool.program import run_program
    from qpool.review import render_files
    from tests.conftest import stack_raw

    guard = LeakGuard()
    for name, secret in (("keystore", KEYSTORE), ("password", PASSWORD), ("seed", SEED),
                         ("passphrase", PASSPHRASE.encode())):
        guard.add(secret, name)
    push_keys(ctx, _bundle(), PASSPHRASE, ["p1"])
    guard.scan_text("\n".join(ctx.messages), "qpool keys push output")
    run = run_program("testnet", stack_raw("testnet"), {})  # the stack holds no validatorKeys
    assert not [c for c in run.of_type("command:remote:Command") if c.name.endswith("-import-keys")]
    guard.scan_text(json.dumps(run.plan_json()), "plan.json")
    render_files(run, tmp_path / "review")
    guard.scan_tree(tmp_path / "review")
    guard.assert_clean()

"""Issue 12 item 2: a key moved from pair p1 to pair p2 must not start on p2 while p1's signer still holds it.

Two pairs on the failover fakes (test_operations_guards' FakeSsh): each host's status carries the public
keys its wallet holds (`wallet.pubkeys`, as qp-validator-ctl lists them with the validator client).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from qpool import key_ownership
from qpool import operations as ops
from qpool.errors import QpoolError
from qpool.inventory import HostRecord
from qpool.status import format_status, pair_status

from .safety_support import fake, make_ctx
from .test_operations_guards import BACKUP, KEY, PRIMARY, running_status, stopped_status

P2_PRIMARY = HostRecord("h2-primary", "primary", "p2", "192.0.2.21", "10.0.0.21", server_id=21)
P2_BACKUP = HostRecord("h2-backup", "backup", "p2", "192.0.2.22", "10.0.0.22", server_id=22)
MOVED = "0x" + "ef" * 16


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ops.Context:
    """p1: primary signs KEY and MOVED (MOVED was moved to p2 in the bundle); p2: both hosts stopped and locked,
    p2's primary already holds MOVED (the import added it); stack config names p2's primary active."""
    context = make_ctx(tmp_path, monkeypatch)
    hosts = {**context.inventory.hosts, P2_PRIMARY.name: P2_PRIMARY, P2_BACKUP.name: P2_BACKUP}
    context.inventory = dataclasses.replace(context.inventory, hosts=hosts)
    context.ssh.inv = context.inventory  # type: ignore[attr-defined]
    context.config_file.write_text("config:\n  quantapool:validatorPairs:\n    - name: p1\n      active: primary\n"
                                   "    - name: p2\n      active: primary\n")
    ssh = fake(context)
    ssh.statuses.update({
        PRIMARY.name: running_status(wallet={"pubkeys": [KEY, MOVED]}),
        P2_PRIMARY.name: stopped_status(wallet={"pubkeys": [MOVED]}),
        P2_BACKUP.name: stopped_status(wallet={"pubkeys": [MOVED]}),
    })
    ssh.history[P2_PRIMARY.name] = ssh.history[P2_BACKUP.name] = ssh.history[BACKUP.name]
    ssh.private_ips.update({P2_PRIMARY.name: P2_PRIMARY.private_ip, P2_BACKUP.name: P2_BACKUP.private_ip})
    return context


def _started(ctx: ops.Context, host: HostRecord) -> bool:
    return (host.name, "activate", "--run-id") in fake(ctx).calls


def test_activate_refused_while_another_pairs_signer_holds_the_key(ctx: ops.Context) -> None:
    with pytest.raises(QpoolError, match=r"h-primary \(pair p1\) holds 1 of h2-primary's key\(s\) \(0xefefefefefef"
                                         r"\.\.\.\) and may sign .*pulumi up"):
        ops.activate(ctx, "p2")
    assert not _started(ctx, P2_PRIMARY) and fake(ctx).oplock == {}


def test_activate_allowed_once_the_old_holder_is_stopped_and_locked(ctx: ops.Context) -> None:
    """A stopped and locked host cannot sign, whatever its wallet holds (pulumi up then removes the key)."""
    fake(ctx).statuses[PRIMARY.name] = stopped_status(wallet={"pubkeys": [KEY, MOVED]})
    assert ops.activate(ctx, "p2")["changed"]
    assert _started(ctx, P2_PRIMARY)


def test_activate_allowed_once_the_key_is_gone_from_the_other_pair(ctx: ops.Context) -> None:
    fake(ctx).statuses[PRIMARY.name] = running_status(wallet={"pubkeys": [KEY]})
    assert ops.activate(ctx, "p2")["changed"]


@pytest.mark.parametrize("wallet", [{"pubkeys": None, "error": "wrong password for wallet entered"}, {}])
def test_unreadable_wallet_on_a_possible_signer_refuses(ctx: ops.Context, wallet: dict[str, Any]) -> None:
    fake(ctx).statuses[PRIMARY.name] = running_status(wallet=wallet)
    with pytest.raises(QpoolError, match=r"h-primary \(pair p1\) may sign .* wallet cannot be listed"):
        ops.activate(ctx, "p2")
    assert not _started(ctx, P2_PRIMARY)


def test_unreachable_unfenced_host_of_another_pair_refuses(ctx: ops.Context,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("qpool.status.hetzner_fenced", lambda _c, _h: False)
    fake(ctx).statuses[PRIMARY.name] = None
    with pytest.raises(QpoolError, match=r"cannot check that h-primary \(pair p1\) .* unreachable and not fenced"):
        key_ownership.check_before_start(ctx, P2_PRIMARY, fake(ctx).status(P2_PRIMARY))


def test_target_wallet_unreadable_refuses(ctx: ops.Context) -> None:
    fake(ctx).statuses[P2_PRIMARY.name]["wallet"] = {"pubkeys": None, "error": "no wallet configured"}  # type: ignore[index]
    with pytest.raises(QpoolError, match="h2-primary cannot list the keys in its wallet"):
        ops.activate(ctx, "p2")


def test_failover_start_refused_too(ctx: ops.Context) -> None:
    """p2 fails over to its backup (clean): the start is refused while p1's signer holds the moved key."""
    fake(ctx).statuses[P2_PRIMARY.name] = running_status(wallet={"pubkeys": [MOVED]})
    fake(ctx).statuses[PRIMARY.name] = running_status(wallet={"pubkeys": [KEY, MOVED]})
    with pytest.raises(QpoolError, match=r"h-primary \(pair p1\) holds 1 of h2-backup's key"):
        ops.failover(ctx, "p2")
    assert not _started(ctx, P2_BACKUP)


def test_status_lists_the_loaded_keys(ctx: ops.Context) -> None:
    doc = pair_status(ctx, "p1")
    primary = next(h for h in doc["hosts"] if h["host"] == PRIMARY.name)
    assert primary["wallet_pubkeys"] == [KEY, MOVED]
    text = format_status({"stack": "t", "pairs": [doc]})
    assert "keys=2 (0xcdcdcdcdcdcd...,0xefefefefefef...)" in text
